"""Configurations as data: one dataclass per part, every switch of docs/method.md by name.

`make_config(profile, overrides)` is the one entry point. Overrides use dotted keys
(`"fusion.tau_w": 0.5`); an unknown key or an invalid switch value raises an error that
lists what is valid, when the configuration is built. Cache keys are derived from these
sections by `experiment.Pipeline.key`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from .priors import ViewConfig
from .settings import ConfigError, Section, default_of, leaf_paths, resolve_choices, section_type, setting

__all__ = ["ConfigError", "DataConfig", "ViewConfig", "OptimConfig", "TeacherConfig", "TextConfig", "FusionConfig",
           "StudentConfig", "ExperimentConfig", "TEACHER_VARIANTS", "make_config", "with_overrides", "switches", "config_hash"]


@dataclass
class DataConfig(Section):
    name: str = setting("cifar10", choices="tmkd_core.data:SOURCES")
    root: str = setting("data", neutral=True, doc="extracted datasets, caches, checkpoints, runs")
    mirror: str = setting("../shared/data", neutral=True, doc="offline archives (see its README)")
    folder: str | None = setting(None, doc="ImageFolder root (train/ and val/ inside) for name=imagefolder")
    image_size: int | None = setting(None, ge=8, doc="None keeps the dataset's own size")
    train_size: int | None = setting(None, ge=1, doc="cap on training images (stratified); None: all")
    val_size: int = setting(5000, ge=1, doc="validation images carved from the training set")
    test_size: int | None = setting(None, ge=1, doc="cap on test images (stratified); None: all")
    split_seed: int = setting(0, ge=0)
    download: bool = setting(False, neutral=True, doc="allow torchvision downloads when the offline copy is missing")
    num_workers: int = setting(0, ge=0, neutral=True, doc="decoding workers for folder datasets")


@dataclass
class OptimConfig(Section):
    """One training run's optimiser, schedule, batch and augmentation."""

    epochs: int = setting(10, ge=1)
    batch_size: int = setting(128, ge=1)
    lr: float = setting(0.1, gt=0.0)
    momentum: float = setting(0.9, ge=0.0, lt=1.0)
    weight_decay: float = setting(5e-4, ge=0.0)
    warmup_epochs: float = setting(0.0, ge=0.0)
    schedule: str = setting("cosine", choices=("cosine", "step"), doc="step: x0.1 at each milestone")
    milestones: tuple[int, ...] | None = setting(None, added=True, doc="schedule=step: the epochs at which the lr "
                                                                       "drops x0.1; None: 50% and 75% of the run")
    augment: bool = setting(True, doc="random crop (pad 4) + horizontal flip")

    def check(self):
        if self.milestones is not None and self.schedule != "step":
            raise ConfigError(f"OptimConfig.milestones is for schedule='step', not {self.schedule!r}: "
                              "set schedule='step' or milestones=None")


@dataclass
class TeacherConfig(Section):
    arch: str = setting("resnet20", choices="tmkd_core.models:MODELS")
    seed: int = setting(0, ge=0, added=True, doc="the teachers' initialisation and data order (both teachers; "
                                                "every student seed reads the teachers of this seed)")
    optim: OptimConfig = setting(default_factory=OptimConfig, doc="the single-view (RGB) teacher")
    multiview_optim: OptimConfig = setting(default_factory=lambda: OptimConfig(epochs=4, lr=0.02))
    view_bn: str = setting("per_view", choices="tmkd_core.models:VIEW_BN")
    teacher_init: str = setting("rgb", choices=("rgb", "scratch"))
    lambda_a: float = setting(0.5, ge=0.0, doc="weight of the text-alignment NCE term")
    tau_a: float = setting(0.1, gt=0.0, doc="temperature of the text-alignment NCE term")
    input_norm: str = setting("fixed", choices="tmkd_core.models:INPUT_NORMS", added=True,
                              doc="the teachers' input normalisation: this project's fixed map, or a dataset's "
                                  "channel statistics (cifar100: what RepDistiller/mdistiller teachers expect)")
    checkpoint: str | None = setting(None, neutral=True,
                                     doc="a local RepDistiller/mdistiller CIFAR checkpoint, imported as the RGB "
                                         "teacher instead of training one (tmkd_core/checkpoints.py)")
    checkpoint_sha256: str | None = setting(None, added=True, doc="sha256 of teacher.checkpoint, verified before it is read")
    ensemble: tuple[int, ...] = setting((0, 500), added=True,
                                        doc="student.teacher='ensemble': the teacher-seed offsets of the RGB teachers "
                                            "averaged (teacher.seed + k for each k)")

    def check(self):
        if len(set(self.ensemble)) < 2 or len(set(self.ensemble)) != len(self.ensemble) or min(self.ensemble) < 0:
            raise ConfigError(f"TeacherConfig.ensemble={list(self.ensemble)}: an ensemble averages at least two "
                              "distinct RGB teachers; give two or more distinct non-negative teacher-seed offsets, "
                              "e.g. [0, 500]")
        if self.checkpoint is not None and not self.checkpoint_sha256:
            raise ConfigError("TeacherConfig.checkpoint needs TeacherConfig.checkpoint_sha256 (`sha256sum FILE` "
                              "prints it)")
        if self.checkpoint is not None and self.input_norm == "fixed":
            raise ConfigError("TeacherConfig.checkpoint: a RepDistiller/mdistiller teacher expects the "
                              "normalisation it was trained with, not this project's fixed one: set "
                              "TeacherConfig.input_norm='cifar100' (or the statistics of its dataset)")


@dataclass
class TextConfig(Section):
    backend: str = setting("sentence_transformers", choices="tmkd_core.text:BACKENDS")
    model: str | None = setting(None, doc='open_clip architecture, e.g. "ViT-B-32"')
    pretrained: str | None = setting(None, doc="open_clip tag or a local weights file")
    sha256: str | None = setting(None, neutral=True, doc="expected checksum of a local weights file (any case); "
                                                        "checked, and the actual checksum enters the keys")
    prompts: str = setting("prior_aware", choices="tmkd_core.text:PROMPT_SETS")
    cache_dir: str | None = setting(None, neutral=True, doc="open_clip download cache")

    def check(self):
        if self.sha256 is not None and (len(self.sha256) != 64
                                        or any(c not in "0123456789abcdefABCDEF" for c in self.sha256)):
            raise ConfigError(f"TextConfig.sha256: expected 64 hex digits, got {self.sha256!r}")


@dataclass
class FusionConfig(Section):
    weights: str = setting("text", choices="tmkd_core.fusion:WEIGHTINGS")
    granularity: str = setting("sample", choices="tmkd_core.fusion:GRANULARITIES")
    condition: str = setting("label", choices="tmkd_core.fusion:CONDITIONS")
    score: str = setting("cosine", choices="tmkd_core.fusion:SCORES", added=True,
                         doc="s_v: raw cosine to the class text, or the view's probability of the class over all "
                             "class texts (comparable across views)")
    tau_s: float = setting(0.1, gt=0.0, added=True, doc="score=class_prob: temperature of the softmax over class texts")
    tau_w: float = setting(0.1, gt=0.0)


@dataclass
class StudentConfig(Section):
    arch: str = setting("resnet8", choices="tmkd_core.models:MODELS")
    optim: OptimConfig = setting(default_factory=OptimConfig)
    distiller: str = setting("tmkd", choices="tmkd_core.distillers:DISTILLERS")
    teacher: str = setting("multi", choices=("single", "multi", "ensemble"),
                           doc="which teacher the distiller reads: the RGB one, the fused multi-view one, or the RGB "
                               "teachers of teacher.ensemble averaged (for KD and DKD; TMKD refuses it)")
    kd_term: str = setting("kd", choices=("kd", "dkd"), doc='the KD term of TMKD ("TMKD + DKD")')
    vlc: str = setting("class_text", choices="tmkd_core.distillers:VLC_MODES")
    ce_weight: float = setting(1.0, ge=0.0, added=True, doc="weight of the student's cross-entropy term in the "
                                                               "distillers (0.1 for KD in the CIFAR-100 protocol)")
    tau: float = setting(4.0, gt=0.0, doc="KD temperature")
    alpha: float = setting(1.0, ge=0.0, doc="KD weight")
    beta: float = setting(1.0, ge=0.0, doc="feature (connector MSE) weight")
    gamma: float = setting(0.5, ge=0.0, doc="vision-language contrastive weight")
    tau_c: float = setting(0.1, gt=0.0, doc="VLC temperature")
    dkd_alpha: float = setting(1.0, ge=0.0)
    dkd_beta: float = setting(8.0, ge=0.0)
    dkd_warmup_epochs: float = setting(1.0, ge=0.0, doc="DKD ramps its weight in linearly, as in its paper")
    teacher_outputs: str = setting("cached", choices=("cached", "online"))
    cache_replicas: int | None = setting(None, ge=1, doc="augmented replicas the student cycles through "
                                                         "(epoch e sees replica e mod K); None: one per epoch")

    def check(self):
        if self.teacher == "ensemble" and self.distiller == "tmkd":
            raise ConfigError("StudentConfig.teacher='ensemble' needs student.distiller='kd' or 'dkd' (the methods KD, "
                              "DKD): it gives logits only (the averaged softened target), and TMKD's feature and text "
                              "terms read one teacher's features; with TMKD use student.teacher='single' or 'multi'")
        if self.distiller == "tmkd" and self.teacher == "single" and self.vlc in ("teacher_text", "both"):
            raise ConfigError(f"StudentConfig.vlc={self.vlc!r} needs the fused teacher's text embedding: with "
                              "student.teacher='single' (TMKD's terms on the RGB teacher) use vlc='class_text' or 'off'")


@dataclass
class ExperimentConfig(Section):
    profile: str = setting("cpu", neutral=True)
    data: DataConfig = setting(default_factory=DataConfig)
    views: ViewConfig = setting(default_factory=ViewConfig)
    teacher: TeacherConfig = setting(default_factory=TeacherConfig)
    text: TextConfig = setting(default_factory=TextConfig)
    fusion: FusionConfig = setting(default_factory=FusionConfig)
    student: StudentConfig = setting(default_factory=StudentConfig)
    seed: int = setting(0, ge=0, doc="the student's initialisation and data order")
    device: str = setting("auto", neutral=True, doc="auto | cpu | cuda | cuda:N (the device used enters every key)")
    amp: bool = setting(True, doc="bf16 autocast of training on CUDA; ignored on CPU (see cpu_amp)")
    cpu_amp: bool = setting(False, added=True, doc="bf16 autocast of training on a CPU with native bf16 (AVX512-BF16 or AMX; "
                                       "refused elsewhere); off until its parity check has run")
    channels_last: bool = setting(False, doc="always on for CPU training (faster there)")
    teacher_precision: str = setting("auto", choices="tmkd_core.utils:TEACHER_PRECISIONS",
                                     doc="frozen teacher's forward; the precision used enters the keys")
    compile: bool = setting(False, added=True, doc="torch.compile the training step's forward and backward "
                                                  "(inductor); compiles once per run (`make bench`: 'CE, "
                                                  "torch.compile')")
    sync_batchnorm: bool = setting(False, added=True, doc="under torchrun: BatchNorm statistics over the global "
                                                         "batch (SyncBatchNorm, CUDA only) instead of each shard")
    teacher_compile: bool = setting(False, added=True, doc="torch.compile the frozen teacher's backbone (inductor, weights "
                                               "frozen in): a faster online teacher after ~10 s of compiling")
    progress: bool = setting(True, neutral=True, doc="tqdm bars")
    score_test: bool = setting(True, neutral=True, doc="score a student run on the test split too; False for "
                                                       "validation-only runs (the pilot of docs/protocol.md)")

    def check(self):
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except RuntimeError as exc:
                raise ConfigError(f"ExperimentConfig.device: {exc}; use auto, cpu, cuda or cuda:N") from exc
        if self.student.teacher == "ensemble" and self.teacher.checkpoint is not None:
            raise ConfigError("student.teacher='ensemble' averages RGB teachers trained at several teacher seeds, but "
                              "teacher.checkpoint imports one teacher for every seed: set teacher.checkpoint=None, or "
                              "student.teacher='single' to distil from the imported teacher")
        if self.fusion.weights == "clip_image":
            if self.text.backend != "open_clip":
                raise ConfigError("fusion.weights='clip_image' needs CLIP's image tower: text.backend='open_clip'")
            if self.student.teacher_outputs != "online":
                raise ConfigError("fusion.weights='clip_image' needs the view images: student.teacher_outputs='online'")


def switches() -> dict[str, tuple[str, ...]]:
    """Every switch (dotted path) and its valid values, read from the sections and registries."""
    return {path: resolve_choices(f.metadata["choices"]) for path, f in leaf_paths(ExperimentConfig)
            if f.metadata.get("choices") is not None}


def neutral_paths() -> set[str]:
    """Settings that change no number (file locations, progress bars, worker counts)."""
    return {path for path, f in leaf_paths(ExperimentConfig) if f.metadata.get("neutral")}


def unkeyed_paths(cfg: ExperimentConfig) -> set[str]:
    """The settings that enter no key in `cfg`: the neutral ones, and those added later
    (`setting(added=True)`) while at their default."""
    out = neutral_paths()
    for path, f in leaf_paths(ExperimentConfig):
        if f.metadata.get("added"):
            node = cfg
            for part in path.split("."):
                node = getattr(node, part)
            if node == default_of(f):
                out.add(path)
    return out


def _from_dict(cls, data: Mapping[str, Any], prefix: str = ""):
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'the configuration'} is a section ({cls.__name__}), "
                          f"got {data!r}; set its fields instead")
    kwargs = {}
    names = {f.name for f in fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise KeyError(f"{cls.__name__} has no field {key!r}; fields: {', '.join(names)}")
        sub = section_type(cls, key)
        kwargs[key] = _from_dict(sub, value, f"{prefix}{key}.") if sub is not None else value
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # name the setting by its dotted path
        raise ConfigError(str(exc).replace(f"{cls.__name__}.", prefix)) from None


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    return _from_dict(ExperimentConfig, data)


def config_to_dict(cfg) -> dict:
    return asdict(cfg)


def with_overrides(cfg: ExperimentConfig, overrides: Mapping[str, Any] | None) -> ExperimentConfig:
    """A copy of `cfg` with dotted-key overrides applied and every setting re-validated."""
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
                if isinstance(node[part], dict):
                    if not isinstance(value, Mapping):
                        raise ConfigError(f"{key} is a section, got {value!r}; set its fields instead "
                                          f"(e.g. {key}.{next(iter(node[part]))}=...)")
                    # a dict for a section sets those fields and keeps the others
                    node[part] = _merge(node[part], value)
                else:
                    node[part] = copy.deepcopy(value)
            else:
                node = node[part]
    return config_from_dict(data)


def _merge(base: dict, update: Mapping[str, Any]) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, Mapping) else copy.deepcopy(v)
    return out


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
        "data": {"name": "cifar10", "train_size": 1000, "val_size": 500, "test_size": 1000},
        "teacher": {"arch": "resnet8", "optim": {"epochs": 2, "lr": 0.1, "batch_size": 100},
                    "multiview_optim": {"epochs": 1, "lr": 0.05, "batch_size": 100}},
        "student": {"arch": "resnet8", "optim": {"epochs": 2, "lr": 0.1, "batch_size": 100}},
        "progress": False,
    }


def _quick() -> dict:
    # Every notebook and figure on small data, for a first look, not evidence (students stop
    # in early training). 10 min 37 s on 2 cores (make reproduce PROFILE=quick, data extracted).
    return {
        "profile": "quick",
        "data": {"train_size": 4000, "val_size": 1000, "test_size": 2000},
        "views": {"edge_mode": "enhance", "hf_mode": "enhance"},
        "teacher": {"arch": "resnet14", "optim": {"epochs": 8, "lr": 0.1},
                    "multiview_optim": {"epochs": 1, "lr": 0.02}},
        "student": {"arch": "resnet8", "optim": {"epochs": 4, "lr": 0.1}},
    }


def _cpu() -> dict:
    # The full CIFAR-10 training set (45,000 train / 5,000 validation), sized for a 2-core
    # CPU: see docs/protocol.md for the comparison it answers. The teachers train 30 epochs:
    # at 15 they were only about 3.6 points above the KD student (docs/protocol.md). The frozen
    # teacher runs in float32 on every CPU: `auto` would pick bf16 where the CPU has it natively,
    # and change the students' numbers with the machine (docs/protocol.md, "Amendments").
    return {
        "profile": "cpu",
        "teacher_precision": "fp32",
        "data": {"val_size": 5000},
        "views": {"edge_mode": "enhance", "hf_mode": "enhance"},
        "teacher": {"arch": "resnet14", "optim": {"epochs": 30, "lr": 0.1},
                    "multiview_optim": {"epochs": 1, "lr": 0.02}},
        "student": {"arch": "resnet8", "optim": {"epochs": 10, "lr": 0.1}},
    }


def _paper() -> dict:
    # The CIFAR-100 protocol of RepDistiller / mdistiller: SGD (momentum 0.9, weight decay
    # 5e-4), lr 0.05 decayed x0.1 at epochs 150, 180 and 210 of 240, batch 64; DKD warms up
    # over 20 epochs with beta 8 for resnet32x4 -> resnet8x4 (loss weights: PROFILE_METHODS).
    protocol = {"epochs": 240, "lr": 0.05, "schedule": "step", "milestones": [150, 180, 210], "batch_size": 64,
                "momentum": 0.9, "weight_decay": 5e-4}
    return {
        "profile": "paper",
        "data": {"name": "cifar100", "val_size": 5000, "download": True, "num_workers": 8},
        "teacher": {"arch": "resnet32x4", "optim": protocol,
                    "multiview_optim": {"epochs": 30, "lr": 0.005, "schedule": "cosine", "batch_size": 64}},
        "text": {"backend": "open_clip", "model": "ViT-B-32", "pretrained": "openai"},
        "student": {"arch": "resnet8x4", "optim": protocol, "teacher_outputs": "online", "tau": 4.0,
                    "dkd_alpha": 1.0, "dkd_beta": 8.0, "dkd_warmup_epochs": 20.0},
        "device": "cuda",
        "channels_last": True,
    }


PROFILES = {"smoke": _smoke, "quick": _quick, "cpu": _cpu, "paper": _paper}


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
    # the control: TMKD's feature and vision-language terms on the single-view teacher, which
    # separates what the multi-view teacher brings from what the extra terms bring
    "TMKD terms, RGB teacher": {"student.distiller": "tmkd", "student.teacher": "single", "student.kd_term": "kd"},
}


# A profile's loss weights per method, on top of METHODS. The CIFAR-100 protocol weighs KD
# as 0.1 CE + 0.9 KD (tau 4) and DKD as CE + DKD; TMKD keeps KD's weights for its KD term,
# so that TMKD vs KD differs only in the teacher and TMKD's own terms.
_KD_WEIGHTS = {"student.ce_weight": 0.1, "student.alpha": 0.9}
PROFILE_METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"KD": _KD_WEIGHTS, "KD (multi-view, uniform)": _KD_WEIGHTS, "TMKD": _KD_WEIGHTS,
              "TMKD terms, RGB teacher": _KD_WEIGHTS},
}


def method_config(cfg: ExperimentConfig, method: str, overrides: Mapping[str, Any] | None = None):
    """`cfg` with a method of METHODS (and its profile's loss weights) applied, then `overrides`."""
    if method not in METHODS:
        raise KeyError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    per_profile = PROFILE_METHODS.get(cfg.profile, {}).get(method, {})
    return with_overrides(cfg, {**METHODS[method], **per_profile, **(overrides or {})})


# Per-dataset settings of a profile. On a 2-core CPU, 64 px Imagenette costs 4x the
# compute of 32 px, which would not fit the cpu profile's hour: it is read at 32 px there.
DATASET_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "smoke": {},
    "quick": {},
    "cpu": {"imagenette64": {"data.image_size": 32}},
    "paper": {},
}


def dataset_config(profile: str, dataset: str, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """A profile's configuration for one dataset, with its per-dataset settings applied."""
    per_dataset = DATASET_OVERRIDES.get(profile, {}).get(dataset, {})
    return make_config(profile, {"data.name": dataset, **per_dataset, **(overrides or {})})


# The built-in studies, one per configuration profile, as data: read only by
# tmkd_core.study.Study (whose docstring lists the keys), which the plan, the reports and the
# notebooks ask. A new study can also be declared in a JSON file of the same keys (Study.load).
# Per study: the datasets; the teacher seeds (student seed i reads teacher seed i mod len);
# the student seeds of every method of a dataset; the primary comparison of docs/protocol.md
# (its methods at more seeds); the validation pilot; the ablations; and per-dataset changes.
PROFILE_PLANS: dict[str, dict[str, Any]] = {
    # smoke: one ablation group keeps nbval within the test budget
    "smoke": {"datasets": ["cifar10"], "teacher_seeds": [0], "seeds": [0, 1], "ablation_seeds": [0, 1],
              "ablation_groups": ["weights"],
              # every kind of teacher variant, at the cost of a few epochs of 1,000 images
              "teacher_study": {"teacher_seeds": {"cifar10": [0]}, "variants": ["rgb", "rgb_ft1", "mv_ft1", "rgb_ens2"],
                                "reference": "rgb_ft1", "candidates": ["mv_ft1"]}},
    # quick: every notebook and figure on small data, for a first look
    "quick": {"datasets": ["cifar10"], "teacher_seeds": [0], "seeds": [0, 1], "ablation_seeds": [0, 1],
              "ablation_groups": ["weights"]},
    # cpu: the evidence of docs/protocol.md. Final runs use seeds from 100 on; tuning and the
    # pilot use seeds below 10.
    "cpu": {"datasets": ["cifar10", "cifar100"], "teacher_seeds": [0, 1], "seeds": [100, 101, 102, 103],
            # finished teachers and run records, kept in git (tmkd_core.plan)
            "store": "artefacts/cpu",
            # 14 pairs: the seed rule at the pilot's sd of TMKD - KD, 0.86 point (docs/protocol.md)
            "primary": {"dataset": "cifar10", "methods": ["KD", "TMKD"], "seeds": list(range(100, 114))},
            # the pilot (docs/protocol.md): KD and TMKD, and an equal number of variants of each,
            # on validation only. `baseline` pins what the variants are compared with, so that
            # adopting a variant into the profile leaves the pilot as it was run. Until
            # `settled` is True (set in the commit that applies its decisions), the plan runs
            # the pilot alone: no final run starts before the pilot has decided.
            # `adopted` lists what the rule adopted ("TMKD [views=detail]"); the plan checks it, and
            # the profile's settings, against the pilot's records once `settled` is True.
            "pilot": {"dataset": "cifar10", "teacher_seed": 0, "seeds": [0, 1], "methods": ["KD", "TMKD"],
                      # settled on figures/tables/pilot.md: KD 79.93% validation, no variant adopted
                      "settled": True, "adopted": [],
                      "baseline": {"views.edge_mode": "enhance", "views.hf_mode": "enhance", "fusion.score": "cosine",
                                   "student.tau": 4.0, "student.ce_weight": 1.0, "student.alpha": 1.0},
                      "variants": {"TMKD": {"views=detail": {"views.edge_mode": "detail", "views.hf_mode": "detail"},
                                            "score=class_prob": {"fusion.score": "class_prob"}},
                                   "KD": {"tau=2": {"student.tau": 2.0},
                                          "0.1 CE + 0.9 KD": {"student.ce_weight": 0.1, "student.alpha": 0.9}}}},
            "per_dataset": {"cifar100": {"teacher_seeds": [0], "seeds": [100, 101, 102],
                                         "methods": ["CE", "KD", "TMKD"]}},
            "ablation_seeds": [100, 101, 102], "ablation_groups": ["weights", "terms", "score"],
            # docs/protocol.md, "Amendment: powerful teachers" (tmkd_core.teacher_study): every variant
            # of TEACHER_VARIANTS at each teacher seed; `candidates` are the multi-view variants the
            # confirmatory comparison chooses from on validation, `reference` the compute-matched RGB one
            "teacher_study": {"teacher_seeds": {"cifar100": [0, 1, 2], "cifar10": [0, 1]},
                              "variants": ["rgb", "rgb_ft1", "mv_ft1", "mv_ft10", "mv_scratch20", "rgb_ft30",
                                           "rgb_ens2"],
                              "reference": "rgb_ft30", "candidates": ["mv_ft10", "mv_scratch20"]},
            # KD from the compute-matched RGB teacher vs TMKD from the chosen multi-view teacher, the
            # teacher seed as the unit: student seeds seed_base + 10 t + i under teacher seed t.
            # `tmkd_variant` stays None until the teacher study's validation choice is committed: the
            # plan runs KD's side only until then. `fusion_candidate` is the fusion screen's candidate
            # ({"fusion.score": ..., "fusion.tau_w": ...}, or None), written with the choice; until
            # `fusion_settled`, the plan runs its student check (validation only) instead of TMKD's
            # final runs, which then use `fusion_adopted` (the candidate if the check adopted it, else
            # None). The widening rule adds teachers up to max_teachers.
            # chosen on figures/results/teacher_study.json's `choice`: mv_ft10, mean validation accuracy
            # as deployed 62.55 against mv_scratch20's 59.85 (CIFAR-100 teacher seeds 0-2); its
            # `fusion_screen`: cosine at tau_w 0.03, 64.75 label-conditioned on validation against the
            # default's 63.50 (+1.25 > 0.3), so the student check runs before TMKD's final runs.
            # Settled on teacher_study.json's `fusion_check`: TMKD with the candidate − TMKD with the
            # default, validation, student seeds 900-902 on teacher seeds 0-2: -0.24, -1.46, -1.08,
            # mean -0.93 (not > 0.3): not adopted, TMKD's final runs use the default fusion
            "confirmatory": {"dataset": "cifar100", "kd_variant": "rgb_ft30", "tmkd_variant": "mv_ft10",
                             "fusion_candidate": {"fusion.score": "cosine", "fusion.tau_w": 0.03},
                             "fusion_settled": True, "fusion_adopted": None,
                             "teacher_seeds": [0, 1, 2, 3], "students_per_teacher": 3, "seed_base": 200,
                             "max_teachers": 8},
            # docs/protocol.md, "Secondary confirmatory comparison (CIFAR-10)", fixed before its runs:
            # the confirmatory comparison's teacher (mv_ft10, no new choice) and default fusion (no new
            # screen) on CIFAR-10; 4 teachers and no widening rule (max_teachers = 4); its tasks start
            # after the rest of the plan (`Task.later`)
            "secondary_confirmatory": {"dataset": "cifar10", "kd_variant": "rgb_ft30", "tmkd_variant": "mv_ft10",
                                       "fusion_candidate": None, "fusion_settled": True, "fusion_adopted": None,
                                       "teacher_seeds": [0, 1, 2, 3], "students_per_teacher": 3, "seed_base": 300,
                                       "max_teachers": 4},
            # docs/protocol.md, "Follow-up: KD from the RGB ensemble (CIFAR-100)", fixed before its runs:
            # the confirmatory comparison's TMKD runs (same teacher, fusion, student seeds: reused)
            # against KD from rgb_ens2 (RGB teachers t and 500 + t averaged at KD's tau), and KD from
            # rgb_ens2 against KD from `kd_reference` at the same seeds; no widening; after the secondary
            "ensemble_follow_up": {"dataset": "cifar100", "kd_variant": "rgb_ens2", "kd_reference": "rgb_ft30",
                                   "tmkd_variant": "mv_ft10", "fusion_candidate": None, "fusion_settled": True,
                                   "fusion_adopted": None, "teacher_seeds": [0, 1, 2, 3], "students_per_teacher": 3,
                                   "seed_base": 200, "max_teachers": 4},
            # docs/protocol.md, "Follow-up: what earns TMKD's CIFAR-100 gain, teacher x terms", fixed
            # before its runs: the confirmatory comparison `crossed`, a 2 x 2 of {KD, TMKD} x {rgb_ft30,
            # mv_ft10} at its student seeds (its 24 runs reused, KD from mv_ft10 and TMKD from rgb_ft30
            # new); teacher, terms and interaction over the 4 teachers; no widening; after the ensemble one
            "factorial_follow_up": {"dataset": "cifar100", "kd_variant": "rgb_ft30", "tmkd_variant": "mv_ft10",
                                    "crossed": True, "fusion_candidate": None, "fusion_settled": True,
                                    "fusion_adopted": None, "teacher_seeds": [0, 1, 2, 3], "students_per_teacher": 3,
                                    "seed_base": 200, "max_teachers": 4}},
    "paper": {"datasets": ["cifar100"], "teacher_seeds": [0], "seeds": [0, 1, 2], "ablation_seeds": [0, 1, 2]},
}


# Teacher recipes of the teacher study (docs/protocol.md, "Amendment: powerful teachers"), as
# overrides of a dataset's configuration. `stage`: the teacher stage the recipe trains (a
# multi-view teacher with views ["rgb"] is the RGB teacher fine-tuned on RGB alone, with the
# same loss and recipe as the multi-view fine-tuning); `ensemble`: the teacher-seed offsets of
# the RGB teachers whose softmax outputs are averaged. Compute is derived from the settings
# (tmkd_core.teacher_study.TeacherVariant.compute).
_FINETUNE_ON_RGB = {"views.views": ["rgb"]}
TEACHER_VARIANTS: dict[str, dict[str, Any]] = {
    "rgb": {"kind": "rgb", "stage": "rgb_teacher", "overrides": {},
            "why": "the RGB teacher: KD's teacher in the primary comparison"},
    "rgb_ft1": {"kind": "rgb", "stage": "multiview_teacher", "overrides": _FINETUNE_ON_RGB,
                "why": "the control for mv_ft1's extra epoch: the same fine-tuning on RGB alone"},
    "mv_ft1": {"kind": "multiview", "stage": "multiview_teacher", "overrides": {},
               "why": "the multi-view teacher of the primary comparison: one epoch of fine-tuning"},
    "mv_ft10": {"kind": "multiview", "stage": "multiview_teacher",
                "overrides": {"teacher.multiview_optim.epochs": 10},
                "why": "fine-tuned from the RGB teacher long enough for the views to settle, lr decaying"},
    "mv_scratch20": {"kind": "multiview", "stage": "multiview_teacher",
                     "overrides": {"teacher.teacher_init": "scratch", "teacher.multiview_optim.epochs": 20,
                                   "teacher.multiview_optim.lr": 0.1},
                     "why": "every view learned from the start, the RGB teacher's recipe at equal compute"},
    "rgb_ft30": {"kind": "rgb", "stage": "multiview_teacher",
                 "overrides": {**_FINETUNE_ON_RGB, "teacher.multiview_optim.epochs": 30},
                 "why": "the compute-matched RGB teacher: mv_ft10's fine-tuning on RGB alone, as many view-epochs"},
    "rgb_ens2": {"kind": "ensemble", "stage": "rgb_teacher", "overrides": {}, "ensemble": [0, 500],
                 "why": "two RGB teachers averaged: is a multi-view teacher more than an ensemble?"},
}


# Ablations of docs/method.md §6: each group maps a label to overrides of the TMKD
# configuration; the empty dict is the default setting.
ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "view_mode": {"map": {"views.edge_mode": "map", "views.hf_mode": "map"},
                  "enhance": {"views.edge_mode": "enhance", "views.hf_mode": "enhance"},
                  "detail": {"views.edge_mode": "detail", "views.hf_mode": "detail"}},
    "score": {"cosine": {"fusion.score": "cosine"}, "class_prob": {"fusion.score": "class_prob"}},
    "terms": {"all": {}, "no feature term": {"student.beta": 0.0}, "no VLC term": {"student.vlc": "off"}},
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
