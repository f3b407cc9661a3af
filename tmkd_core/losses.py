"""Loss terms (docs/method.md §2 and §5). Each is a plain function of tensors."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Hinton KD: tau^2 * KL(softmax(z_T / tau) || softmax(z_S / tau)), mean over the batch."""
    log_p_s = F.log_softmax(student_logits / tau, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / tau, dim=-1)
    return tau**2 * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


def dkd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
             alpha: float, beta: float, tau: float) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): alpha * TCKD + beta * NCKD, each scaled by tau^2.

    TCKD = KL(b_T || b_S) over the binary (target, non-target) split;
    NCKD = KL(p~_T || p~_S) over the non-target classes alone.
    """
    gt = F.one_hot(labels, student_logits.shape[-1]).bool()
    p_s = F.softmax(student_logits / tau, dim=-1)
    p_t = F.softmax(teacher_logits / tau, dim=-1)
    b_s = torch.stack([(p_s * gt).sum(-1), (p_s * ~gt).sum(-1)], dim=-1).clamp_min(1e-12)
    b_t = torch.stack([(p_t * gt).sum(-1), (p_t * ~gt).sum(-1)], dim=-1).clamp_min(1e-12)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(-1).mean() * tau**2
    # Mask the target class with a large negative logit (1000 as in the DKD code).
    log_q_s = F.log_softmax(student_logits / tau - 1000.0 * gt, dim=-1)
    log_q_t = F.log_softmax(teacher_logits / tau - 1000.0 * gt, dim=-1)
    nckd = F.kl_div(log_q_s, log_q_t, reduction="batchmean", log_target=True) * tau**2
    return alpha * tckd + beta * nckd


def feature_loss(projected_student: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """FitNet-style hint: MSE(C h_S, h_T)."""
    return F.mse_loss(projected_student, teacher_feature)


def text_nce(query: torch.Tensor, class_text: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """CE over classes of cos(q, t_c) / tau: q (B, D), t (K, D), labels (B,)."""
    logits = F.normalize(query, dim=-1) @ F.normalize(class_text, dim=-1).T / tau
    return F.cross_entropy(logits, labels)


def batch_infonce(query: torch.Tensor, keys: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE across the batch: sample i's query must pick key i among the batch's keys."""
    logits = F.normalize(query, dim=-1) @ F.normalize(keys, dim=-1).T / tau
    return F.cross_entropy(logits, torch.arange(len(query), device=query.device))
