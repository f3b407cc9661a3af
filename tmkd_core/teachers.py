"""Teachers: the multi-view teacher's objective, frozen teachers as the distillers see
them (the RGB teacher, an ensemble of RGB teachers, the fused multi-view teacher), and the
teacher-output cache.

A frozen teacher splits into the expensive part, `pooled_views(x)` -> (V, B, d) (the
backbone on every view, one batched call), and the cheap part, `from_pooled(pooled, y, x)`
(classifier, text heads, fusion). The cache stores the expensive part for K augmented
replicas of the training set, so the fusion switches (`weights`, `tau_w`, ...) change
nothing in it.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import AugmentPlan, ImageSet, to_float
from .fusion import ViewFusion
from .losses import text_nce
from .models import MultiViewTeacher
from .priors import ViewConfig, make_views
from .train import Batch, LossFn, prepare_batch
from .utils import atomic_write_text, build_once, damaged, read_json


def multiview_teacher_loss(teacher: MultiViewTeacher, class_text: torch.Tensor, view_cfg: ViewConfig,
                           lambda_a: float, tau_a: float) -> LossFn:
    """sum_v CE(z_v, y) + lambda_a * sum_v NCE(P_v h_v, t_v, y)  (method.md §2)."""

    def loss_fn(batch: Batch):
        out = teacher(make_views(batch.x, view_cfg))
        ce = sum(F.cross_entropy(z, batch.labels) for z in out["logits"])
        losses = {"ce": ce}
        if lambda_a > 0:
            t = class_text.to(batch.x.device)
            losses["align"] = lambda_a * sum(text_nce(q, t[v], batch.labels, tau_a) for v, q in enumerate(out["text"]))
        return out["logits"].mean(0), losses

    return loss_fn


class FrozenTeacher(nn.Module):
    """Base class: parameters frozen, always in eval mode, whatever the caller asks.

    `inference_dtype` (None: float32; or torch.bfloat16) is the autocast dtype of the
    backbone call, which dominates the teacher's cost; its outputs come back as float32.
    """

    view_names: tuple[str, ...]
    inference_dtype: torch.dtype | None = None
    _compiled_backbone = None

    def freeze(self) -> "FrozenTeacher":
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    def precision(self, device: torch.device):
        """The context the backbone runs in: autocast to `inference_dtype`, or nothing."""
        if self.inference_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.inference_dtype)

    def compile_backbone(self) -> "FrozenTeacher":
        """Run `backbone_pooled` through torch.compile with the weights frozen in as
        constants (inductor's `freezing`: convolutions with batch norm folded in and
        pre-packed weights). Compiles at the first call (and once more for another batch
        shape); the outputs equal the eager ones up to float rounding."""
        self._compiled_backbone = torch.compile(self.backbone_pooled, options={"freezing": True}, dynamic=False)
        return self

    @torch.no_grad()
    def pooled_views(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features of every view, (V, B, d), float32."""
        backbone = self._compiled_backbone or self.backbone_pooled
        with self.precision(x.device):
            return backbone(x).float()

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


class EnsembleTeacher(FrozenTeacher):
    """RGB teachers averaged as KD reads them: the mean of their softened distributions

        p_T = (1/M) sum_k softmax(z_k / tau),   given as logits z_T = tau * log p_T,

    so that softmax(z_T / tau) = p_T and KD at temperature tau distils the averaged target
    (docs/protocol.md, "Follow-up: KD from the RGB ensemble"). Its pooled features are the
    members' (M, B, d), one row each: a cache holds every member's, and tau enters no cache key.
    A distillation target, not a classifier: its argmax is the ensemble's at tau, not the
    teacher study's `rgb_ens2` accuracy (softmax averaged at temperature 1, teacher_eval.py)."""

    view_names = ("rgb",)

    def __init__(self, members: list[nn.Module], tau: float):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble teacher averages at least two RGB teachers, got {len(members)}")
        self.members, self.tau = nn.ModuleList(members), tau
        self.freeze()

    def backbone_pooled(self, x):
        return torch.stack([m.features(x)[0] for m in self.members])

    @torch.no_grad()
    def from_pooled(self, pooled, labels, x=None):
        z = torch.stack([m.fc(h.float()) for m, h in zip(self.members, pooled)])  # (M, B, C)
        log_p = torch.logsumexp(F.log_softmax(z / self.tau, dim=-1), dim=0) - np.log(len(self.members))
        return {"logits": self.tau * log_p, "member_logits": z}


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
    a cached entry equals the online teacher's output on that image (up to float16). A
    cache built without augmentation holds one replica, read with replica None. Asking
    for a replica the cache does not hold is an error, never a silent wrap-around.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        meta = read_json(self.path / "meta.json")
        self.replicas, self.augmented = meta["replicas"], meta.get("augmented", True)
        try:
            self.array = np.load(self.path / "pooled.npy", mmap_mode="r")  # (K, N, V, d) float16
        except (OSError, ValueError) as exc:  # a truncated .npy: "mmap length is greater than file size"
            raise damaged(self.path / "pooled.npy", exc) from exc
        if self.array.shape[:2] != (self.replicas, meta["n"]):
            raise damaged(self.path / "pooled.npy", f"shape {self.array.shape}, meta.json says "
                                                    f"{self.replicas} replicas of {meta['n']} images")

    def get(self, idx: torch.Tensor, replica: int | None, device) -> torch.Tensor:
        """Pooled features (V, B, d) of samples `idx` as augmented by `replica`."""
        if (replica is None) == self.augmented or (replica is not None and not 0 <= replica < self.replicas):
            held = f"replicas 0..{self.replicas - 1}" if self.augmented else "unaugmented images only"
            raise ValueError(f"teacher cache {self.path} holds {held}; asked for replica {replica}")
        rows = self.array[replica or 0][np.sort(idx.numpy())]
        order = np.argsort(np.argsort(idx.numpy()))  # memmaps read fastest in sorted order
        return torch.from_numpy(np.ascontiguousarray(rows[order])).to(device).float().transpose(0, 1)

    @classmethod
    def build(cls, path: Path, teacher: FrozenTeacher, train: ImageSet, replicas: int | None, augment_seed: int,
              batch_size: int, device, progress: bool = False) -> "TeacherCache":
        """The cache at `path` (a folder), written first unless complete there already.

        `replicas` None: one replica of the unaugmented images. Built under a file lock:
        a second process asking for the same cache waits, then reads it.
        """
        return build_once(Path(path) / "meta.json",
                          lambda: cls._write(Path(path), teacher, train, replicas, augment_seed, batch_size, device,
                                             progress),
                          lambda meta: cls(meta.parent))

    PROGRESS = "replicas_written.json"  # a build stopped part-way: its finished replicas and shape

    @classmethod
    def replicas_done(cls, path: Path) -> tuple[int, int] | None:
        """(replicas written, replicas in all) of a cache at `path` stopped part-way, None if
        none was (a build resumes after them, `_write`)."""
        try:
            state = json.loads((Path(path) / cls.PROGRESS).read_text())
            return int(state["replicas"]), int(state["shape"][0])
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None

    @staticmethod
    @torch.no_grad()
    def _write(path: Path, teacher: FrozenTeacher, train: ImageSet, replicas: int | None, augment_seed: int,
               batch_size: int, device, progress: bool) -> None:
        from tqdm.auto import tqdm

        path.mkdir(parents=True, exist_ok=True)
        n, count = len(train), replicas or 1
        probe = teacher.pooled_views(to_float(train.load(torch.tensor([0])), device))
        shape = (count, n, probe.shape[0], probe.shape[-1])
        tmp, written = path / "pooled.npy.tmp", path / TeacherCache.PROGRESS
        # a build stopped part-way resumes after its last finished replica, if the partial
        # file is the one that count describes (same shape); anything else starts over
        state = read_json(written) if written.exists() and tmp.exists() else {}
        done = state.get("replicas", 0) if state.get("shape") == list(shape) else 0
        if not 0 <= done <= count:
            done = 0
        if not done:
            written.unlink(missing_ok=True)  # never a count that outlives its file
        array = np.lib.format.open_memmap(tmp, mode="r+" if done else "w+", dtype=np.float16, shape=None if done else shape)
        if array.shape != shape:
            raise damaged(tmp, f"shape {array.shape}, expected {shape}; remove the folder {path}")
        bar = tqdm(total=count * n, initial=done * n, desc="teacher cache", disable=not progress, unit="img")
        for k in range(done, count):
            plan = AugmentPlan.draw(n, augment_seed, k) if replicas is not None else None
            for idx, images, _ in train.batches(batch_size):
                x = prepare_batch(images, idx, plan, device)  # as the student's step prepares it
                array[k, idx.numpy()] = teacher.pooled_views(x).transpose(0, 1).cpu().numpy().astype(np.float16)
                bar.update(len(idx))
            array.flush()
            atomic_write_text(json.dumps({"replicas": k + 1, "shape": list(shape)}), written)
        bar.close()
        array.flush()
        del array
        tmp.rename(path / "pooled.npy")
        written.unlink()
        # meta.json last: its presence marks a complete cache
        atomic_write_text(json.dumps({"replicas": count, "n": n, "augment_seed": augment_seed,
                                      "augmented": replicas is not None}), path / "meta.json")
