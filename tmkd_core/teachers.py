"""Frozen teachers as the distillers see them, and the teacher-output cache.

A frozen teacher splits into the expensive part, `pooled_views(x)` -> (V, B, d) (the
backbone on every view, one batched call), and the cheap part, `from_pooled(pooled, y, x)`
(classifier, text heads, fusion). The cache stores the expensive part for K augmented
replicas of the training set, so the fusion switches (`weights`, `tau_w`, ...) change
nothing in it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .config import ViewConfig
from .data import AugmentPlan, ImageSet, to_float
from .fusion import ViewFusion
from .models import MultiViewTeacher
from .priors import make_views


class FrozenTeacher(nn.Module):
    """Base class: parameters frozen, always in eval mode, whatever the caller asks.

    `inference_dtype` (None: float32; or torch.bfloat16) is the autocast dtype of the
    backbone call, which dominates the teacher's cost; its outputs come back as float32.
    """

    view_names: tuple[str, ...]
    inference_dtype: torch.dtype | None = None

    def freeze(self) -> "FrozenTeacher":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def pooled_views(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of every view, (V, B, d), float32."""
        if self.inference_dtype is None:
            return self.backbone_pooled(x).float()
        with torch.autocast(x.device.type, dtype=self.inference_dtype):
            return self.backbone_pooled(x).float()

    def backbone_pooled(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def from_pooled(self, pooled: torch.Tensor, labels: torch.Tensor, x: torch.Tensor | None = None) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        return self.from_pooled(self.pooled_views(x), labels, x)


class SingleViewTeacher(FrozenTeacher):
    """The usual KD teacher: a backbone trained on RGB."""

    view_names = ("rgb",)

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.freeze()

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    def backbone_pooled(self, x):
        return self.model.features(x)[0][None]

    @torch.no_grad()
    def from_pooled(self, pooled, labels, x=None):
        h = pooled[0].float()
        return {"logits": self.model.fc(h), "pooled": h}


class FusedTeacher(FrozenTeacher):
    """Multi-view teacher + semantic-weight fusion: z_T = sum_v w_v z_v (method.md §4)."""

    def __init__(self, teacher: MultiViewTeacher, fusion: ViewFusion, view_cfg: ViewConfig):
        super().__init__()
        self.teacher, self.fusion, self.view_cfg = teacher, fusion, view_cfg
        self.view_names = teacher.view_names
        self.freeze()

    @property
    def feature_dim(self) -> int:
        return self.teacher.feature_dim

    @property
    def class_text(self) -> torch.Tensor:
        return self.fusion.class_text

    def backbone_pooled(self, x):
        return self.teacher.pooled(make_views(x, self.view_cfg))

    @torch.no_grad()
    def from_pooled(self, pooled, labels, x=None):
        out = self.teacher.heads(pooled.float())
        views = make_views(x, self.view_cfg) if self.fusion.cfg.weights == "clip_image" else None
        return self.fusion(out, labels, views)


class TeacherCache:
    """Pooled teacher features of K augmented replicas of the training set, memory-mapped.

    Replica k of sample i is the image that `AugmentPlan.draw(n, seed, k)` makes of it, so
    a cached entry equals the online teacher's output on that image (up to float16).
    """

    def __init__(self, path: Path):
        meta = json.loads((path / "meta.json").read_text())
        self.replicas = meta["replicas"]
        self.array = np.load(path / "pooled.npy", mmap_mode="r")  # (K, N, V, d) float16

    def get(self, idx: torch.Tensor, replica: int, device) -> torch.Tensor:
        rows = self.array[replica % self.replicas][np.sort(idx.numpy())]
        order = np.argsort(np.argsort(idx.numpy()))  # memmaps read fastest in sorted order
        return torch.from_numpy(np.ascontiguousarray(rows[order])).to(device).float().transpose(0, 1)

    @classmethod
    @torch.no_grad()
    def build(cls, path: Path, teacher: FrozenTeacher, train: ImageSet, replicas: int, augment_seed: int,
              augment: bool, batch_size: int, device, progress: bool = False) -> "TeacherCache":
        """Write the cache to `path` (a folder) unless it is complete there already."""
        from tqdm.auto import tqdm

        if (path / "meta.json").exists():
            return cls(path)
        path.mkdir(parents=True, exist_ok=True)
        n = len(train)
        probe = teacher.pooled_views(to_float(train.load(torch.tensor([0])), device))
        tmp = path / "pooled.npy.tmp"
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16,
                                          shape=(replicas, n, probe.shape[0], probe.shape[-1]))
        bar = tqdm(total=replicas * n, desc="teacher cache", disable=not progress, unit="img")
        for k in range(replicas):
            plan = AugmentPlan.draw(n, augment_seed, k)
            for idx, images, _ in train.batches(batch_size):
                x = to_float(images, device)
                x = plan.apply(x, idx) if augment else x
                array[k, idx.numpy()] = teacher.pooled_views(x).transpose(0, 1).cpu().numpy().astype(np.float16)
                bar.update(len(idx))
        bar.close()
        array.flush()
        del array
        tmp.rename(path / "pooled.npy")
        (path / "meta.json").write_text(json.dumps({"replicas": replicas, "n": n, "augment_seed": augment_seed}))
        return cls(path)
