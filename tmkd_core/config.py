"""Configurations as data: one dataclass per part, every switch of docs/method.md by name.

`make_config(profile, overrides)` is the one entry point. Overrides use dotted keys
(`"fusion.tau_w": 0.5`); an unknown key or an invalid switch value raises an error that
lists what is valid. `config_hash` keys checkpoints and caches, so a changed setting
never reuses a stale artefact.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

# Every switch of the method and its valid values; the first value is the default.
SWITCHES: dict[str, tuple[str, ...]] = {
    "edge_operator": ("sobel", "scharr", "laplacian", "canny"),
    "hf_filter": ("fft", "gaussian"),
    "edge_mode": ("map", "enhance"),
    "hf_mode": ("map", "enhance"),
    "view_bn": ("per_view", "shared"),
    "teacher_init": ("rgb", "scratch"),
    "prompts": ("prior_aware", "generic"),
    "condition": ("label", "pred"),
    "weights": ("text", "uniform", "learned", "clip_image"),
    "granularity": ("sample", "class"),
    "vlc": ("class_text", "teacher_text", "both", "off"),
    "kd_term": ("kd", "dkd"),
    "teacher": ("single", "multi"),
    "teacher_outputs": ("cached", "online"),
    "backend": ("sentence_transformers", "open_clip"),
}
VIEW_NAMES = ("rgb", "edge", "hf")
TEACHER_PRECISIONS = ("auto", "fp32", "bf16")  # autocast of the frozen teacher's forward


def _check_switch(name: str, value: Any) -> None:
    if value not in SWITCHES[name]:
        raise ValueError(
            f"invalid value {value!r} for switch {name!r}; valid values: {', '.join(SWITCHES[name])}"
        )


@dataclass
class DataConfig:
    name: str = "cifar10"  # cifar10 | imagenette64 | fashion_mnist | cifar100 | imagefolder
    root: str = "data"  # extracted datasets, caches, checkpoints
    mirror: str = "../shared/data"  # offline archives (see its README)
    folder: str | None = None  # ImageFolder root (train/ and val/ inside) for name=imagefolder
    image_size: int | None = None  # None keeps the dataset's own size
    train_size: int | None = None  # cap on training images (stratified, fixed by seed); None: all
    val_size: int = 5000  # validation images carved from the training set, fixed by split_seed
    test_size: int | None = None  # cap on test images (stratified); None: all
    split_seed: int = 0
    batch_size: int = 128
    augment: bool = True  # random crop (pad 4) + horizontal flip
    download: bool = False  # allow torchvision downloads when the offline copy is missing
    num_workers: int = 0  # decoding workers for folder datasets


@dataclass
class ViewConfig:
    views: tuple[str, ...] = VIEW_NAMES
    edge_operator: str = "sobel"
    hf_filter: str = "fft"
    hf_radius: float = 0.25  # disc radius as a fraction of the Nyquist radius
    hf_sigma: float = 1.0  # Gaussian high-pass: x - G_sigma * x
    edge_mode: str = "map"
    hf_mode: str = "map"
    enhance_lambda: float = 0.5  # enhance mode: clip(x + lambda * prior, 0, 1)

    def __post_init__(self):
        self.views = tuple(self.views)
        for v in self.views:
            if v not in VIEW_NAMES:
                raise ValueError(f"unknown view {v!r}; available: {', '.join(VIEW_NAMES)}")
        if not self.views or self.views[0] != "rgb":
            raise ValueError(f"views must start with 'rgb', got {self.views}")
        for s in ("edge_operator", "hf_filter", "edge_mode", "hf_mode"):
            _check_switch(s, getattr(self, s))


@dataclass
class OptimConfig:
    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    schedule: str = "cosine"  # cosine | step (x0.1 at 50%, 75%)

    def __post_init__(self):
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"invalid schedule {self.schedule!r}; valid values: cosine, step")


@dataclass
class TeacherConfig:
    arch: str = "resnet20"
    optim: OptimConfig = field(default_factory=OptimConfig)  # single-view (RGB) teacher
    multiview_optim: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=4, lr=0.02))
    view_bn: str = "per_view"
    teacher_init: str = "rgb"
    lambda_a: float = 0.5  # weight of the text-alignment NCE term
    tau_a: float = 0.1  # temperature of the text-alignment NCE term

    def __post_init__(self):
        _check_switch("view_bn", self.view_bn)
        _check_switch("teacher_init", self.teacher_init)


@dataclass
class TextConfig:
    backend: str = "sentence_transformers"
    model: str | None = None  # open_clip architecture, e.g. "ViT-B-32"; None for sentence-transformers
    pretrained: str | None = None  # open_clip tag ("openai") or a local weights file
    sha256: str | None = None  # expected checksum of a local weights file
    prompts: str = "prior_aware"
    cache_dir: str | None = None  # open_clip download cache; None: its default

    def __post_init__(self):
        _check_switch("backend", self.backend)
        _check_switch("prompts", self.prompts)


@dataclass
class FusionConfig:
    weights: str = "text"
    granularity: str = "sample"
    condition: str = "label"
    tau_w: float = 0.1

    def __post_init__(self):
        for s in ("weights", "granularity", "condition"):
            _check_switch(s, getattr(self, s))
        if self.tau_w <= 0:
            raise ValueError(f"tau_w must be > 0, got {self.tau_w}")


@dataclass
class StudentConfig:
    arch: str = "resnet8"
    optim: OptimConfig = field(default_factory=OptimConfig)
    distiller: str = "tmkd"  # ce | kd | dkd | tmkd
    teacher: str = "multi"  # which teacher the distiller reads: single | multi
    kd_term: str = "kd"  # the KD term of TMKD: kd | dkd ("TMKD + DKD")
    vlc: str = "class_text"
    tau: float = 4.0  # KD temperature
    alpha: float = 1.0  # KD weight
    beta: float = 1.0  # feature (connector MSE) weight
    gamma: float = 0.5  # vision-language contrastive weight
    tau_c: float = 0.1  # VLC temperature
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0
    dkd_warmup_epochs: float = 1.0  # DKD ramps its weight in linearly, as in its paper
    teacher_outputs: str = "cached"
    cache_replicas: int = 4  # augmented replicas of the training set in the teacher cache

    def __post_init__(self):
        for s in ("vlc", "kd_term", "teacher", "teacher_outputs"):
            _check_switch(s, getattr(self, s))


@dataclass
class ExperimentConfig:
    profile: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = False
    # frozen teacher's forward (cache and online): auto | fp32 | bf16 (utils.teacher_dtype)
    teacher_precision: str = "auto"
    progress: bool = True  # tqdm bars

    def __post_init__(self):
        if self.teacher_precision not in TEACHER_PRECISIONS:
            raise ValueError(f"invalid teacher_precision {self.teacher_precision!r}; "
                             f"valid values: {', '.join(TEACHER_PRECISIONS)}")


def _from_dict(cls, data: Mapping[str, Any]):
    kwargs = {}
    names = {f.name: f for f in fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise KeyError(f"{cls.__name__} has no field {key!r}; fields: {', '.join(names)}")
        f = names[key]
        sub = _dataclass_type(f)
        kwargs[key] = _from_dict(sub, value) if sub is not None and isinstance(value, Mapping) else value
    return cls(**kwargs)


def _dataclass_type(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        default = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(default):
            return type(default)
    return None


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    return _from_dict(ExperimentConfig, data)


def config_to_dict(cfg) -> dict:
    return asdict(cfg)


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any] | None) -> ExperimentConfig:
    """A copy of `cfg` with dotted-key overrides applied and every switch re-validated."""
    data = config_to_dict(cfg)
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                here = ".".join(parts[:i]) or "the configuration"
                valid = ", ".join(node) if isinstance(node, dict) else "(none: not a section)"
                raise KeyError(f"unknown setting {key!r}: {here} has no {part!r}; valid: {valid}")
            if i == len(parts) - 1:
                node[part] = copy.deepcopy(value)
            else:
                node = node[part]
    return config_from_dict(data)


def config_hash(*parts: Any, length: int = 12) -> str:
    """Stable hash of configuration sections (dataclasses, dicts, strings)."""
    payload = [asdict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# --- profiles -----------------------------------------------------------------------
# Sizes were chosen by measured throughput on a 2-core CPU (see README, "Speed").

def _smoke() -> dict:
    return {
        "profile": "smoke",
        "data": {"name": "cifar10", "train_size": 1000, "val_size": 500, "test_size": 1000,
                 "batch_size": 100},
        "teacher": {"arch": "resnet8", "optim": {"epochs": 2, "lr": 0.1},
                    "multiview_optim": {"epochs": 1, "lr": 0.05}},
        "student": {"arch": "resnet8", "optim": {"epochs": 2, "lr": 0.1}, "cache_replicas": 2},
        "progress": False,
    }


def _cpu() -> dict:
    # Chosen on CIFAR-10 validation (docs/exploration/): 30 RGB-teacher epochs (64.4% vs
    # 53.5% after 12; two more epochs on RGB alone add nothing), and the `enhance` mode
    # for both prior views, which lifts the fused multi-view teacher from 60.0% (`map`)
    # to 62.7%: 1.7 points below the RGB teacher instead of 4.4.
    return {
        "profile": "cpu",
        "data": {"train_size": 4000, "val_size": 2000, "batch_size": 128},
        "views": {"edge_mode": "enhance", "hf_mode": "enhance"},
        "teacher": {"arch": "resnet14", "optim": {"epochs": 30, "lr": 0.1},
                    "multiview_optim": {"epochs": 2, "lr": 0.02}},
        "student": {"arch": "resnet8", "optim": {"epochs": 5, "lr": 0.1}, "cache_replicas": 5},
    }


def _paper() -> dict:
    return {
        "profile": "paper",
        "data": {"name": "cifar100", "val_size": 5000, "batch_size": 64, "download": True,
                 "num_workers": 8},
        "teacher": {"arch": "resnet32x4",
                    "optim": {"epochs": 240, "lr": 0.05, "schedule": "step"},
                    "multiview_optim": {"epochs": 30, "lr": 0.005, "schedule": "cosine"}},
        "text": {"backend": "open_clip", "model": "ViT-B-32", "pretrained": "openai"},
        "student": {"arch": "resnet8x4", "optim": {"epochs": 240, "lr": 0.05, "schedule": "step"},
                    "teacher_outputs": "online"},
        "device": "cuda",
        "channels_last": True,
    }


PROFILES = {"smoke": _smoke, "cpu": _cpu, "paper": _paper}


def make_config(profile: str = "cpu", overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """The configuration of a named profile with dotted-key overrides applied."""
    if profile not in PROFILES:
        raise KeyError(f"unknown profile {profile!r}; available: {', '.join(PROFILES)}")
    base = config_from_dict(PROFILES[profile]())
    return with_overrides(base, overrides)


# Baselines and TMKD of docs/method.md §6 as overrides of one configuration.
METHODS: dict[str, dict[str, Any]] = {
    "CE": {"student.distiller": "ce"},
    "KD": {"student.distiller": "kd", "student.teacher": "single"},
    "KD (multi-view, uniform)": {"student.distiller": "kd", "student.teacher": "multi",
                                 "fusion.weights": "uniform"},
    "DKD": {"student.distiller": "dkd", "student.teacher": "single"},
    "TMKD": {"student.distiller": "tmkd", "student.teacher": "multi", "student.kd_term": "kd"},
    "TMKD + DKD": {"student.distiller": "tmkd", "student.teacher": "multi", "student.kd_term": "dkd"},
}


def method_config(cfg: ExperimentConfig, method: str, overrides: Mapping[str, Any] | None = None):
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    return with_overrides(cfg, {**METHODS[method], **(overrides or {})})


# Per-dataset settings of a profile. On a 2-core CPU, 64 px Imagenette costs 4x the
# compute of 32 px, which would not fit the cpu profile's hour: it is read at 32 px there.
DATASET_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {},
    "cpu": {"imagenette64": {"data.image_size": 32}},
    "paper": {},
}


def dataset_config(profile: str, dataset: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """A profile's configuration for one dataset, with its per-dataset settings applied."""
    per_dataset = DATASET_OVERRIDES.get(profile, {}).get(dataset, {})
    return make_config(profile, {"data.name": dataset, **per_dataset, **(overrides or {})})


# What the notebooks run per profile when their `datasets` / `seeds` parameters are None.
PROFILE_PLANS: dict[str, dict[str, list]] = {
    "smoke": {"datasets": ["cifar10"], "seeds": [0, 1], "ablation_seeds": [0, 1]},
    # cpu: the ablations use 2 seeds so that `make reproduce` fits an hour on 2 cores
    "cpu": {"datasets": ["cifar10", "imagenette64", "fashion_mnist"], "seeds": [0, 1, 2], "ablation_seeds": [0, 1]},
    "paper": {"datasets": ["cifar100"], "seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2]},
}


def profile_plan(profile: str, key: str, value=None) -> list:
    """`value` if given, else the profile's plan for `key` (datasets, seeds, ablation_seeds)."""
    if value is not None:
        return list(value)
    if profile not in PROFILE_PLANS:
        raise KeyError(f"unknown profile {profile!r}; available: {', '.join(PROFILE_PLANS)}")
    return list(PROFILE_PLANS[profile][key])


# Ablations of docs/method.md §6: each group maps a label to overrides of the TMKD
# configuration; the empty dict is the default setting.
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "view_mode": {"map": {"views.edge_mode": "map", "views.hf_mode": "map"},
                  "enhance": {"views.edge_mode": "enhance", "views.hf_mode": "enhance"}},
    "views": {"{rgb}": {"views.views": ["rgb"]}, "{rgb, edge}": {"views.views": ["rgb", "edge"]},
              "{rgb, hf}": {"views.views": ["rgb", "hf"]}, "{rgb, edge, hf}": {}},
    "weights": {"text": {}, "uniform": {"fusion.weights": "uniform"}, "learned": {"fusion.weights": "learned"}},
    "prompts": {"prior_aware": {}, "generic": {"text.prompts": "generic"}},
    "vlc": {"class_text": {}, "teacher_text": {"student.vlc": "teacher_text"}, "both": {"student.vlc": "both"},
            "off": {"student.vlc": "off"}},
    "tau_w": {"0.03": {"fusion.tau_w": 0.03}, "0.1": {}, "0.3": {"fusion.tau_w": 0.3}, "1.0": {"fusion.tau_w": 1.0}},
    "edge_operator": {"sobel": {}, "scharr": {"views.edge_operator": "scharr"},
                      "laplacian": {"views.edge_operator": "laplacian"}},
    "hf_radius": {"0.1": {"views.hf_radius": 0.1}, "0.25": {}, "0.5": {"views.hf_radius": 0.5}},
}
