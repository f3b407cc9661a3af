"""Semantic weights and adaptive fusion of the teacher's views (docs/method.md §4).

    s_v(x) = cos(P_v h_v(x), t_{v,c})              c: the label, or the teacher's prediction
             (score = cosine), or the view's probability of c over all class texts,
    s_v(x) = softmax_k(cos(P_v h_v(x), t_{v,k}) / tau_s)[c]       (score = class_prob)
    w(x)   = softmax_v(s(x) / tau_w)               per sample

Raw cosines are not comparable across views (each view's text head lives at its own
scale); a view's probability of the class is, and it is what the alignment term trained
the heads for (tau_s defaults to that term's temperature).
    z_T    = sum_v w_v z_v,   h_T = sum_v w_v h_v,   q_T = sum_v w_v P_v h_v
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import Registry

if TYPE_CHECKING:
    from .config import FusionConfig

WEIGHTINGS: Registry[Callable] = Registry("weighting")
CONDITIONS = ("label", "pred")  # the class c of s_v: the label, or the teacher's own prediction
GRANULARITIES = ("sample", "class")  # weights per sample, or averaged over the batch's samples of a class
SCORES = ("cosine", "class_prob")  # s_v: raw cosine to t_{v,c}, or the view's softmax probability of c


def semantic_scores(text_q: torch.Tensor, class_text: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """s_v = cos(q_v, t_{v,c}) for q (V, B, D), t (V, K, D), c (B,) -> (V, B)."""
    t = class_text[:, classes]  # (V, B, D)
    return F.cosine_similarity(text_q, t.to(text_q.dtype), dim=-1)


def class_prob_scores(text_q: torch.Tensor, class_text: torch.Tensor, classes: torch.Tensor,
                      tau_s: float) -> torch.Tensor:
    """s_v = softmax_k(cos(q_v, t_{v,k}) / tau_s)[c] for q (V, B, D), t (V, K, D), c (B,) -> (V, B)."""
    cos = torch.einsum("vbd,vkd->vbk", F.normalize(text_q.float(), dim=-1), F.normalize(class_text.float(), dim=-1))
    prob = torch.softmax(cos / tau_s, dim=-1)
    return prob.gather(-1, classes.view(1, -1, 1).expand(prob.shape[0], -1, 1)).squeeze(-1).to(text_q.dtype)


def view_scores(text_q: torch.Tensor, class_text: torch.Tensor, classes: torch.Tensor, cfg: FusionConfig):
    """The semantic scores s (V, B) of the configured `score`."""
    if cfg.score == "class_prob":
        return class_prob_scores(text_q, class_text, classes, cfg.tau_s)
    return semantic_scores(text_q, class_text, classes)


def semantic_weights(scores: torch.Tensor, tau_w: float) -> torch.Tensor:
    """w = softmax over views of s / tau_w: (V, B), each column sums to 1."""
    return torch.softmax(scores / tau_w, dim=0)


def average_per_class(weights: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Replace each sample's weights by the mean over the batch's samples of its class."""
    v = weights.shape[0]
    sums = torch.zeros(v, num_classes, dtype=weights.dtype, device=weights.device)
    sums.index_add_(1, classes, weights)
    counts = torch.bincount(classes, minlength=num_classes).clamp(min=1).to(weights.dtype)
    return (sums / counts)[:, classes]


class ViewFusion(nn.Module):
    """Computes fusion weights (V, B) with the configured weighting and fuses the views.

    `class_text` (V, K, D) are the text teacher's t_{v,c}. `image_encoder` (CLIP's image
    tower) is needed by `weights = clip_image` alone.
    """

    def __init__(self, cfg: FusionConfig, class_text: torch.Tensor, image_encoder: Callable | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("class_text", class_text.float())
        self.view_logits = nn.Parameter(torch.zeros(class_text.shape[0]), requires_grad=cfg.weights == "learned")
        self.image_encoder = image_encoder
        if cfg.weights == "clip_image" and image_encoder is None:
            raise ValueError("fusion.weights='clip_image' needs CLIP's image tower: set text.backend='open_clip' "
                             "with real CLIP weights (text.model, text.pretrained)")

    def classes(self, out: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The class c the scores s_v read: the label, or the teacher's mean prediction."""
        return labels if self.cfg.condition == "label" else out["logits"].mean(0).argmax(-1)

    def weights(self, out: dict[str, torch.Tensor], labels: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        logits = out["logits"]  # (V, B, K)
        classes = self.classes(out, labels)
        w = WEIGHTINGS.get(self.cfg.weights)(self, out, classes, views)
        if self.cfg.granularity == "class":
            w = average_per_class(w, classes, logits.shape[-1])
        return w

    def forward(self, out: dict[str, torch.Tensor], labels: torch.Tensor, views: torch.Tensor | None = None) -> dict:
        w = self.weights(out, labels, views)
        fused = {k: (w[..., None] * out[k]).sum(0) for k in ("logits", "pooled", "text") if k in out}
        return {**fused, "weights": w, "view_logits": out["logits"]}


@WEIGHTINGS.register("text")
def _text_weights(fusion: ViewFusion, out, classes, views):
    return semantic_weights(view_scores(out["text"], fusion.class_text, classes, fusion.cfg), fusion.cfg.tau_w)


@WEIGHTINGS.register("uniform")
def _uniform_weights(fusion: ViewFusion, out, classes, views):
    v, b = out["logits"].shape[:2]
    return torch.full((v, b), 1.0 / v, device=out["logits"].device)


@WEIGHTINGS.register("learned")
def _learned_weights(fusion: ViewFusion, out, classes, views):
    b = out["logits"].shape[1]
    return torch.softmax(fusion.view_logits, dim=0)[:, None].expand(-1, b)


@WEIGHTINGS.register("clip_image")
def _clip_image_weights(fusion: ViewFusion, out, classes, views):
    if views is None:
        raise ValueError("weights='clip_image' needs the view images: use student.teacher_outputs='online'")
    img = torch.stack([fusion.image_encoder(x) for x in views])  # (V, B, D)
    return semantic_weights(view_scores(img, fusion.class_text, classes, fusion.cfg), fusion.cfg.tau_w)


def fit_learned_weights(fusion: ViewFusion, view_logits: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> None:
    """Fit the free per-view weights of `weights = learned` by CE of the fused logits.

    view_logits (V, N, K) are the frozen teacher's per-view logits on training images.
    """
    opt = torch.optim.Adam([fusion.view_logits], lr=0.05)
    for _ in range(steps):
        fused = (torch.softmax(fusion.view_logits, 0)[:, None, None] * view_logits).sum(0)
        loss = F.cross_entropy(fused, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    fusion.view_logits.requires_grad_(False)
