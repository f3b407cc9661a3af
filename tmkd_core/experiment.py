"""The experiment pipeline the notebooks call: data, teachers, students, all cached by hash.

Every artefact that takes long to compute lives under `data/` keyed by the hash of the
settings it depends on, so a rerun reuses what is still valid and recomputes what is not:

    data/checkpoints/single_<hash>.pt    single-view (RGB) teacher
    data/checkpoints/multi_<hash>.pt     multi-view teacher (+ text heads)
    data/cache/teacher_<hash>/           teacher-output cache (K augmented replicas)
    data/cache/text_<hash>.pt            class text embeddings t_{v,c}
    data/runs/<hash>.json                one student run: config, history, accuracies
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from .config import ExperimentConfig, config_hash
from .data import Splits, load_splits, to_float
from .distillers import build_distiller
from .fusion import ViewFusion, fit_learned_weights
from .models import MultiViewTeacher, build_model, count_parameters
from .teachers import FusedTeacher, SingleViewTeacher, TeacherCache
from .text import build_text_encoder, class_text_embeddings, text_identity
from .priors import make_views
from .train import accuracy, evaluate, fit, multiview_teacher_loss, predict, supervised_loss
from .utils import (atomic_save, load_checkpoint, resolve_device, run_metadata, seed_everything, teacher_dtype,
                    write_json)

TEACHER_SEED = 0  # teachers are shared by every student seed
# Student augmentation replicas are shared by every seed and method, so one teacher-output
# cache serves them all; a seed changes the student's initialisation and data order.
AUGMENT_SEED = 0
_SPLITS: dict[str, Splits] = {}
_ENCODERS: dict[str, object] = {}


def _dirs(cfg: ExperimentConfig) -> dict[str, Path]:
    root = Path(cfg.data.root)
    return {k: root / k for k in ("checkpoints", "cache", "runs")}


def data_key(cfg: ExperimentConfig) -> str:
    d = cfg.data
    return config_hash({k: getattr(d, k) for k in ("name", "folder", "image_size", "train_size", "val_size",
                                                    "test_size", "split_seed", "augment")})


def load_data(cfg: ExperimentConfig) -> Splits:
    key = data_key(cfg)
    if key not in _SPLITS:
        _SPLITS[key] = load_splits(cfg.data)
    return _SPLITS[key]


def class_text(cfg: ExperimentConfig, splits: Splits) -> torch.Tensor:
    return class_text_embeddings(cfg.text, splits.class_names, cfg.views.views, _dirs(cfg)["cache"],
                                 encoder=_ENCODERS.get(text_identity(cfg.text)))


def text_encoder(cfg: ExperimentConfig):
    key = text_identity(cfg.text)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_text_encoder(cfg.text)
    return _ENCODERS[key]


# --- teachers ------------------------------------------------------------------------------

def single_teacher_key(cfg: ExperimentConfig) -> str:
    return config_hash(data_key(cfg), cfg.teacher.arch, cfg.teacher.optim, cfg.data.batch_size, TEACHER_SEED)


def multi_teacher_key(cfg: ExperimentConfig) -> str:
    t = cfg.teacher
    init = single_teacher_key(cfg) if t.teacher_init == "rgb" else "scratch"
    return config_hash(init, data_key(cfg), cfg.views, t.arch, t.view_bn, t.lambda_a, t.tau_a,
                       t.multiview_optim, text_identity(cfg.text), cfg.text.prompts, TEACHER_SEED)


def _train_or_load(path: Path, model: torch.nn.Module, train_fn) -> dict:
    """Load a finished checkpoint, or train (resuming a partial one) and mark it finished."""
    final = path.with_suffix(".final.pt")
    if final.exists():
        state = load_checkpoint(final)
        model.load_state_dict(state["model"])
        return state["info"]
    info = train_fn(path)
    atomic_save({"model": model.state_dict(), "info": info}, final)
    path.unlink(missing_ok=True)
    return info


def single_view_teacher(cfg: ExperimentConfig, splits: Splits | None = None) -> tuple[torch.nn.Module, dict]:
    """The RGB teacher: trained once per (data, arch, optim) and reused."""
    splits = splits or load_data(cfg)
    device = resolve_device(cfg.device)
    seed_everything(TEACHER_SEED)
    model = build_model(cfg.teacher.arch, splits.num_classes, splits.in_channels)

    def train_fn(ckpt):
        t0 = time.perf_counter()
        history = fit(model, supervised_loss(model), splits.train, cfg.teacher.optim, batch_size=cfg.data.batch_size,
                      seed=TEACHER_SEED, augment_seed=TEACHER_SEED, augment=cfg.data.augment, device=device,
                      checkpoint=ckpt, progress=cfg.progress, desc="RGB teacher", amp=cfg.amp,
                      channels_last=_channels_last(cfg, device))
        return {"history": history, "train_time_s": time.perf_counter() - t0}

    info = _train_or_load(_dirs(cfg)["checkpoints"] / f"single_{single_teacher_key(cfg)}.pt", model, train_fn)
    return model.to(device).eval(), info


def multiview_teacher(cfg: ExperimentConfig, splits: Splits | None = None) -> tuple[MultiViewTeacher, dict]:
    """Backbone shared over views, per-view BN, text heads; fine-tuned from the RGB teacher."""
    splits = splits or load_data(cfg)
    device = resolve_device(cfg.device)
    t_text = class_text(cfg, splits)
    seed_everything(TEACHER_SEED)
    backbone = build_model(cfg.teacher.arch, splits.num_classes, splits.in_channels)
    if cfg.teacher.teacher_init == "rgb":
        rgb, _ = single_view_teacher(cfg, splits)
        backbone.load_state_dict(rgb.state_dict())
    teacher = MultiViewTeacher(backbone, cfg.views.views, t_text.shape[-1], cfg.teacher.view_bn)

    def train_fn(ckpt):
        t0 = time.perf_counter()
        loss = multiview_teacher_loss(teacher, t_text, cfg.views, cfg.teacher.lambda_a, cfg.teacher.tau_a)
        history = fit(teacher, loss, splits.train, cfg.teacher.multiview_optim, batch_size=cfg.data.batch_size,
                      seed=TEACHER_SEED, augment_seed=TEACHER_SEED + 1, augment=cfg.data.augment, device=device,
                      checkpoint=ckpt, progress=cfg.progress, desc="multi-view teacher", amp=cfg.amp,
                      channels_last=_channels_last(cfg, device))
        return {"history": history, "train_time_s": time.perf_counter() - t0}

    info = _train_or_load(_dirs(cfg)["checkpoints"] / f"multi_{multi_teacher_key(cfg)}.pt", teacher, train_fn)
    return teacher.to(device).eval(), info


def _channels_last(cfg: ExperimentConfig, device: torch.device) -> bool:
    """Channels-last trained resnet8 1.4x faster on a 2-core CPU (1083 vs 750 img/s)."""
    return cfg.channels_last or device.type == "cpu"


def fused_teacher(cfg: ExperimentConfig, splits: Splits | None = None) -> FusedTeacher:
    splits = splits or load_data(cfg)
    device = resolve_device(cfg.device)
    mv, _ = multiview_teacher(cfg, splits)
    image_encoder = text_encoder(cfg).encode_image if cfg.fusion.weights == "clip_image" else None
    fusion = ViewFusion(cfg.fusion, class_text(cfg, splits), image_encoder).to(device)
    if cfg.fusion.weights == "learned":
        per_view = predict(lambda x: mv(make_views(x, cfg.views))["logits"].transpose(0, 1), splits.train,
                           device=device).transpose(0, 1)
        fit_learned_weights(fusion, per_view, splits.train.labels)
    return FusedTeacher(mv, fusion, cfg.views).to(device)


def frozen_teacher(cfg: ExperimentConfig, splits: Splits | None = None):
    """The teacher a distiller reads, frozen, in the memory format and precision that are
    fastest on the device (`teacher_precision`, `channels_last`)."""
    if cfg.student.teacher == "single":
        teacher = SingleViewTeacher(single_view_teacher(cfg, splits)[0])
    else:
        teacher = fused_teacher(cfg, splits)
    device = resolve_device(cfg.device)
    teacher.inference_dtype = teacher_dtype(cfg.teacher_precision, device)
    if _channels_last(cfg, device):
        teacher.to(memory_format=torch.channels_last)
    return teacher


def teacher_report(cfg: ExperimentConfig, split: str = "test") -> dict:
    """Accuracy of the RGB teacher, of each view of the multi-view teacher, of the fused
    teacher, and of the RGB teacher fine-tuned as long on RGB alone (`rgb_finetuned`).
    Fusion at test time conditions on the teacher's own prediction (no labels)."""
    splits = load_data(cfg)
    device = resolve_device(cfg.device)
    data = getattr(splits, split)
    rgb, rgb_info = single_view_teacher(cfg, splits)
    teacher = fused_teacher(replace(cfg, fusion=replace(cfg.fusion, condition="pred")), splits)
    outs = {"logits": [], "view_logits": [], "weights": []}
    for _, images, labels in data.batches(256):
        out = teacher(to_float(images, device), labels.to(device))
        for k in outs:
            outs[k].append(out[k].float().cpu())
    fused, per_view = torch.cat(outs["logits"]), torch.cat(outs["view_logits"], dim=1)
    weights = torch.cat(outs["weights"], dim=1)
    report = {"split": split, "rgb_teacher": evaluate(rgb, data, device=device), "fused": accuracy(fused, data.labels),
              "uniform": accuracy(per_view.mean(0), data.labels),
              "mean_weights": dict(zip(cfg.views.views, weights.mean(1).tolist())),
              "teacher_params": count_parameters(rgb), "arch": cfg.teacher.arch,
              "rgb_train_time_s": rgb_info["train_time_s"]}
    for v, name in enumerate(cfg.views.views):
        report[f"view_{name}"] = accuracy(per_view[v], data.labels)
    if len(cfg.views.views) > 1:
        # Control for the multi-view teacher's extra epochs: the same fine-tuning on RGB alone.
        report["rgb_finetuned"] = teacher_report(replace(cfg, views=replace(cfg.views, views=("rgb",))), split)["fused"]
    return report


# --- students ------------------------------------------------------------------------------

def run_key(cfg: ExperimentConfig) -> str:
    d = asdict(cfg)
    for k in ("progress", "device"):
        d.pop(k)
    return config_hash(d, length=16)


def teacher_cache(cfg: ExperimentConfig, teacher, splits: Splits, device) -> TeacherCache | None:
    if cfg.student.teacher_outputs == "online" or teacher is None:
        return None
    tkey = single_teacher_key(cfg) if cfg.student.teacher == "single" else multi_teacher_key(cfg)
    key = config_hash(tkey, cfg.student.teacher, data_key(cfg), cfg.student.cache_replicas, cfg.data.augment,
                      str(teacher.inference_dtype))
    return TeacherCache.build(_dirs(cfg)["cache"] / f"teacher_{key}", teacher, splits.train,
                              cfg.student.cache_replicas, augment_seed=AUGMENT_SEED,
                              augment=cfg.data.augment, batch_size=256, device=device, progress=cfg.progress)


def run_student(cfg: ExperimentConfig, force: bool = False) -> dict:
    """Train one student (any distiller) and return its results; reuse a finished run."""
    path = _dirs(cfg)["runs"] / f"{run_key(cfg)}.json"
    if path.exists() and not force:
        return json.loads(path.read_text())
    splits = load_data(cfg)
    device = resolve_device(cfg.device)
    teacher = None if cfg.student.distiller == "ce" else frozen_teacher(cfg, splits)
    t_cache0 = time.perf_counter()
    cache = teacher_cache(cfg, teacher, splits, device)
    cache_time = time.perf_counter() - t_cache0
    seed_everything(cfg.seed)
    student = build_model(cfg.student.arch, splits.num_classes, splits.in_channels)
    distiller = build_distiller(student, teacher, cfg.student, cache).to(device)
    t0 = time.perf_counter()
    history = fit(distiller, distiller.forward_train, splits.train, cfg.student.optim,
                  batch_size=cfg.data.batch_size, seed=cfg.seed, augment_seed=AUGMENT_SEED,
                  augment=cfg.data.augment, device=device, params=distiller.trainable_parameters(),
                  val=splits.val, eval_fn=lambda m, d: evaluate(m.student, d, device=device),
                  progress=cfg.progress, desc=f"{cfg.student.distiller} seed {cfg.seed}", amp=cfg.amp,
                  channels_last=_channels_last(cfg, device))
    result = {"config": asdict(cfg), "run_key": run_key(cfg), "seed": cfg.seed,
              "val_acc": evaluate(student, splits.val, device=device),
              "test_acc": evaluate(student, splits.test, device=device),
              "history": history, "train_time_s": time.perf_counter() - t0, "cache_time_s": cache_time,
              "student_params": count_parameters(student), **run_metadata()}
    write_json(result, path)
    return result
