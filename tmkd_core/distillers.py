"""Distillers: each returns (student logits, {name: weighted loss term}); the trainer sums the dict.

    CE    L = CE(z_S, y)
    KD    L = CE + alpha * tau^2 * KL(softmax(z_T/tau) || softmax(z_S/tau))
    DKD   L = CE + w(t) * DKD(z_S, z_T, y)                      (linear warm-up w(t))
    TMKD  L = CE + alpha * KD (or DKD) + beta * MSE(C h_S, h_T) + gamma * L_VLC

with L_VLC (switch `vlc`): `class_text` CE over classes of cos(G h_S, t_{rgb,c}) / tau_c;
`teacher_text` InfoNCE of G h_S against the fused teacher's q_T across the batch; `both`;
`off`. C and G are linear and dropped after training: the deployed student is g alone.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from typing import TYPE_CHECKING

from .losses import batch_infonce, dkd_loss, feature_loss, kd_loss, text_nce
from .registry import Registry
from .teachers import FrozenTeacher, TeacherCache
from .train import Batch

if TYPE_CHECKING:
    from .config import StudentConfig

DISTILLERS: Registry = Registry("distiller")
VLC_MODES = ("class_text", "teacher_text", "both", "off")


class Distiller(nn.Module):
    """Student + optional frozen teacher (kept in eval mode here, not by callers)."""

    def __init__(self, student: nn.Module, teacher: FrozenTeacher | None, cfg: StudentConfig,
                 cache: TeacherCache | None = None):
        super().__init__()
        self.student, self.teacher, self.cfg, self.cache = student, teacher, cfg, cache

    def train(self, mode: bool = True):
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def trainable_parameters(self):
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("teacher.")]

    def teacher_outputs(self, batch: Batch) -> dict:
        """The frozen teacher on the batch's images: read from the cache at the batch's
        replica (the images the student sees), or computed online."""
        if self.cache is not None:
            pooled = self.cache.get(batch.idx, batch.replica, batch.x.device)
            return self.teacher.from_pooled(pooled, batch.labels, batch.x)
        return self.teacher(batch.x, batch.labels)

    def forward(self, x):
        return self.student(x)[0]

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError


@DISTILLERS.register("ce")
class CrossEntropyOnly(Distiller):
    def forward_train(self, batch):
        logits, _ = self.student(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.labels)}


def _kd_term(cfg: StudentConfig, kind: str, z_s, z_t, labels, epoch: float) -> torch.Tensor:
    if kind == "kd":
        return cfg.alpha * kd_loss(z_s, z_t.to(z_s.dtype), cfg.tau)
    warm = min(epoch / cfg.dkd_warmup_epochs, 1.0) if cfg.dkd_warmup_epochs > 0 else 1.0
    return warm * dkd_loss(z_s, z_t.to(z_s.dtype), labels, cfg.dkd_alpha, cfg.dkd_beta, cfg.tau)


@DISTILLERS.register("kd")
class KD(Distiller):
    kind = "kd"

    def forward_train(self, batch):
        logits, _ = self.student(batch.x)
        z_t = self.teacher_outputs(batch)["logits"]
        return logits, {"ce": self.cfg.ce_weight * F.cross_entropy(logits, batch.labels),
                        self.kind: _kd_term(self.cfg, self.kind, logits, z_t, batch.labels, batch.epoch)}


@DISTILLERS.register("dkd")
class DKD(KD):
    kind = "dkd"


@DISTILLERS.register("tmkd")
class TMKD(Distiller):
    def __init__(self, student, teacher, cfg, cache=None):
        super().__init__(student, teacher, cfg, cache)
        if getattr(teacher, "class_text", None) is None:
            raise ValueError("distiller 'tmkd' needs class text embeddings on its teacher (the multi-view teacher, "
                             "or the RGB teacher given them by Pipeline.frozen_teacher)")
        if cfg.vlc in ("teacher_text", "both") and not hasattr(teacher, "fusion"):
            raise ValueError(f"student.vlc={cfg.vlc!r} needs the fused teacher's text embedding q_T: use "
                             "student.teacher='multi', or student.vlc='class_text' with the RGB teacher")
        d_s, d_t, d_text = student.feature_dim, teacher.feature_dim, teacher.class_text.shape[-1]
        self.connector = nn.Linear(d_s, d_t) if cfg.beta > 0 else None
        self.text_head = nn.Linear(d_s, d_text) if cfg.vlc != "off" and cfg.gamma > 0 else None

    def forward_train(self, batch):
        labels = batch.labels
        logits, feats = self.student(batch.x)
        t = self.teacher_outputs(batch)
        losses = {"ce": self.cfg.ce_weight * F.cross_entropy(logits, labels),
                  self.cfg.kd_term: _kd_term(self.cfg, self.cfg.kd_term, logits, t["logits"], labels, batch.epoch)}
        h_s = feats["pooled"]
        if self.connector is not None:
            losses["feat"] = self.cfg.beta * feature_loss(self.connector(h_s), t["pooled"].to(h_s.dtype))
        if self.text_head is not None:
            q_s = self.text_head(h_s)
            vlc = 0.0
            if self.cfg.vlc in ("class_text", "both"):
                vlc = vlc + text_nce(q_s, self.teacher.class_text[0].to(q_s.dtype), labels, self.cfg.tau_c)
            if self.cfg.vlc in ("teacher_text", "both"):
                vlc = vlc + batch_infonce(q_s, t["text"].to(q_s.dtype), self.cfg.tau_c)
            losses["vlc"] = self.cfg.gamma * vlc
        return logits, losses


def build_distiller(student, teacher, cfg: StudentConfig, cache=None) -> Distiller:
    if cfg.distiller != "ce" and teacher is None:
        raise ValueError(f"distiller {cfg.distiller!r} needs a teacher")
    return DISTILLERS.get(cfg.distiller)(student, teacher, cfg, cache)
