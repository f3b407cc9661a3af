"""The experiment pipeline: one object per configuration resolves its data, device,
precision, teachers, caches and stage keys once; notebooks, bench, tune and tests use it.

    pipe = Pipeline(dataset_config("cpu", "cifar10"))
    pipe.run_student()            # trains (or loads) what it needs, returns the run record

Every artefact that takes long to compute is a *stage*, stored under `data/` and keyed by

    key(stage) = hash(the settings it reads (`Pipeline.reads`),
                      the keys of the stages it builds on (`Pipeline.after`),
                      what changes its numbers outside the configuration (`Pipeline.facts`:
                      device, precision used, library versions, text weights))

The thread count is recorded in each run, not keyed: like a change of CPU, it changes the
order of floating-point sums, not what a run computes, and the plan runner
(`tmkd_core.plan`) trains two one-thread runs side by side where a notebook runs one.

so a changed setting never reuses a stale artefact, and a setting that a stage does not
read never rebuilds it. Settings marked neutral (file locations, progress bars, worker
counts) enter no key, nor do settings added later (`setting(added=True)`) while at their
default, so that artefacts keyed before they existed stay valid. Each artefact is built
under a file lock (`utils.build_once`): two processes that need the same one build it
once. Under torchrun, the ranks train a stage together and rank 0 writes it
(`distributed.build_once`).

    stage               artefact
    data                the splits (in memory; the decoded dataset is cached by data.py)
    text                data/cache/text_<hash>.pt             class text embeddings t_{v,c}
    rgb_teacher         data/checkpoints/rgb_teacher_<key>.final.pt
    multiview_teacher   data/checkpoints/multiview_teacher_<key>.final.pt (+ text heads)
    teacher_cache       data/cache/teacher_<key>/             pooled teacher features of K replicas
    student             data/runs/<key>.json                  one student run's record

Each teacher and student run also writes its training curves (TensorBoard event files,
`events.py`) beside its artefact: data/checkpoints/<stage>_<key>.tb/, data/runs/<key>.tb/.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .config import ExperimentConfig, config_from_dict, config_hash, unkeyed_paths, with_overrides
from .settings import leaf_paths
from .data import Splits, load_splits, to_float
from . import distributed
from .checkpoints import load_peer_checkpoint
from .distillers import build_distiller
from .fusion import ViewFusion, fit_learned_weights
from .models import MultiViewTeacher, build_model, count_parameters
from .priors import make_views
from .teachers import EnsembleTeacher, FusedTeacher, SingleViewTeacher, TeacherCache, multiview_teacher_loss
from .text import build_text_encoder, class_text_embeddings, text_identity
from .train import accuracy, evaluate, fit, predict, supervised_loss
from .utils import (atomic_save, damaged, load_checkpoint, read_json, resolve_device, run_metadata,
                    seed_everything, teacher_dtype, train_dtype, write_json)

# Student augmentation replicas are shared by every seed and method, so one teacher-output
# cache serves them all; a seed changes the student's initialisation and data order. The
# augmentation streams are disjoint: the RGB teacher of seed t draws its crops from stream
# t, the multi-view teacher from MULTIVIEW_AUGMENT + t, the students from AUGMENT_SEED, so
# that no teacher has trained on exactly the crops a student is distilled on.
AUGMENT_SEED = 10_000
MULTIVIEW_AUGMENT = 1_000
STAGES = ("data", "text", "rgb_teacher", "multiview_teacher", "teacher_cache", "student")
_SPLITS: dict[str, Splits] = {}  # per process, by data key: a dataset is decoded once
_ENCODERS: dict[str, object] = {}


class TeacherNotTrained(FileNotFoundError):
    """A report asked for a teacher that no run has trained yet."""


def record_config(config: dict | None) -> ExperimentConfig | None:
    """The configuration a record holds, with the settings added since it was written
    (`setting(added=True)`) at their defaults, which is what such a run ran with; None if
    any other setting that can change a number is missing, or one is unknown (renamed or
    removed since)."""
    if not isinstance(config, dict):
        return None
    present = set()

    def walk(node, prefix=""):
        for k, v in node.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else present.add(f"{prefix}{k}")

    walk(config)
    missing = {path for path, f in leaf_paths(ExperimentConfig)
               if path not in present and not (f.metadata.get("added") or f.metadata.get("neutral"))}
    if missing:
        return None
    try:
        return config_from_dict(config)
    except (KeyError, TypeError, ValueError):
        return None


def get_path(cfg: ExperimentConfig, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return asdict(node) if hasattr(node, "__dataclass_fields__") else node


class Pipeline:
    """Everything one experiment configuration needs, resolved once."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.group = distributed.current()  # torchrun's process group (None: one process)
        self.device = resolve_device(cfg.device)
        if self.group is not None and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)  # one device per process
        if cfg.sync_batchnorm and self.device.type != "cuda":
            raise ValueError("sync_batchnorm=True needs CUDA (PyTorch's SyncBatchNorm has no CPU kernel); "
                             "set sync_batchnorm=False")
        self.channels_last = cfg.channels_last or self.device.type == "cpu"  # 1.4x faster resnet8 on CPU
        self.teacher_dtype = teacher_dtype(cfg.teacher_precision, self.device)
        self.train_dtype = train_dtype(cfg.amp, cfg.cpu_amp, self.device)
        # epoch e of the student sees augmentation replica e mod K (train.augment_replica)
        self.replicas = cfg.student.cache_replicas or cfg.student.optim.epochs
        # what changes numbers outside the configuration, read once (a later change of thread
        # count belongs to a new Pipeline)
        self.environment = {"device": self.device.type, "torch": torch.__version__,
                            "channels_last": self.channels_last}
        if self.group is not None:  # shards of each batch: per-shard BatchNorm, in-batch negatives
            self.environment["world_size"] = self.group.world
        root = Path(cfg.data.root)
        self.checkpoints, self.cache_dir, self.runs_dir = root / "checkpoints", root / "cache", root / "runs"
        self._keys: dict[str, str] = {}
        if self.uses("text"):
            self.text_id = text_identity(cfg.text)  # checks a weights file's checksum before anything trains

    def __repr__(self):
        return f"Pipeline({self.cfg.data.name}, {self.cfg.student.distiller}, seed {self.cfg.seed}, {self.device})"

    def with_overrides(self, overrides: Mapping[str, Any]) -> "Pipeline":
        return Pipeline(with_overrides(self.cfg, overrides))

    # --- stage keys ----------------------------------------------------------------------------

    @property
    def teacher_stage(self) -> str | None:
        """The teacher stage the student reads, or None for CE (an ensemble's: its members')."""
        if self.cfg.student.distiller == "ce":
            return None
        return "multiview_teacher" if self.cfg.student.teacher == "multi" else "rgb_teacher"

    @cached_property
    def ensemble_members(self) -> list["Pipeline"]:
        """With student.teacher='ensemble', the RGB teachers it averages: this configuration
        at teacher seed `teacher.seed + k` for each k of `teacher.ensemble`; else none. Their
        RGB-teacher keys enter the keys of what reads them (`facts`)."""
        if self.cfg.student.teacher != "ensemble" or self.teacher_stage is None:
            return []
        return [Pipeline(with_overrides(self.cfg, {"teacher.seed": self.cfg.teacher.seed + k, "student.teacher": "single"}))
                for k in self.cfg.teacher.ensemble]

    def builds_on(self, stage: str) -> list[tuple["Pipeline", str]]:
        """The built stages (`BUILT_STAGES`) that `stage` reads, and whose pipeline: its own
        (`after`), and an ensemble's RGB teachers for the stage that runs them (the cache, or
        the student when it reads the teacher online)."""
        needs = [(self, s) for s in self.after(stage) if s in self.BUILT_STAGES]
        if self._runs_members(stage):
            needs += [(member, "rgb_teacher") for member in self.ensemble_members]
        return needs

    def _runs_members(self, stage: str) -> bool:
        """Whether `stage` runs an ensemble's RGB teachers: the cache, or the student reading them online."""
        return bool(self.ensemble_members) and stage == ("teacher_cache" if self.uses("teacher_cache") else "student")

    def stages(self) -> list[str]:
        """The stages this configuration's student run goes through."""
        return [s for s in STAGES if self.uses(s)]

    def uses(self, stage: str) -> bool:
        s = self.cfg.student
        teacher = self.teacher_stage
        return {"data": True, "student": True,
                "rgb_teacher": (teacher == "rgb_teacher" and not self.ensemble_members)
                or (teacher == "multiview_teacher" and self.cfg.teacher.teacher_init == "rgb"),
                "multiview_teacher": teacher == "multiview_teacher",
                "text": teacher == "multiview_teacher" or s.distiller == "tmkd",
                "teacher_cache": teacher is not None and s.teacher_outputs == "cached"}[stage]

    def reads(self, stage: str) -> list[str]:
        """The settings (dotted paths; a section means all its fields) a stage's artefact depends on."""
        c = self.cfg
        training = ["amp", "channels_last", "cpu_amp", "sync_batchnorm", "compile"]
        frozen_teacher = ["teacher_precision", "teacher_compile"]
        if stage == "data":
            return ["data"]
        if stage == "text":
            return ["text", "views.views"]
        if stage == "rgb_teacher":
            if c.teacher.checkpoint is not None:  # imported, not trained: the file's checksum stands for it
                return ["teacher.arch", "teacher.checkpoint_sha256", "teacher.input_norm"]
            return ["teacher.arch", "teacher.seed", "teacher.optim", "teacher.input_norm", *training]
        if stage == "multiview_teacher":
            return ["teacher.arch", "teacher.seed", "teacher.multiview_optim", "teacher.view_bn", "teacher.teacher_init",
                    "teacher.lambda_a", "teacher.tau_a", "teacher.input_norm", "views", *training]
        if stage == "teacher_cache":
            replicas = ["student.cache_replicas"] + (["student.optim.epochs"] if c.student.cache_replicas is None else [])
            return ["student.teacher", "student.optim.augment", *replicas, *frozen_teacher, *self._member_reads(stage)]
        if stage == "student":
            paths = ["student", "seed", *training, *self._member_reads(stage)]
            if self.teacher_stage is not None:
                paths += frozen_teacher
            if self.teacher_stage == "multiview_teacher":
                paths.append("fusion")
            return paths
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")

    def _member_reads(self, stage: str) -> list[str]:
        """An ensemble's RGB teachers' settings, read by the stage that runs them (`builds_on`)."""
        return ["teacher.ensemble", *self.ensemble_members[0].reads("rgb_teacher")] if self._runs_members(stage) else []

    def after(self, stage: str) -> list[str]:
        """The stages whose keys enter this stage's key (what it is built from)."""
        teacher = None if self.ensemble_members else self.teacher_stage  # an ensemble's: in `facts`
        return {"data": [], "text": ["data"], "rgb_teacher": ["data"],
                "multiview_teacher": ["data", "text"] + (["rgb_teacher"] if self.cfg.teacher.teacher_init == "rgb"
                                                         else []),
                "teacher_cache": [teacher] if teacher else ["data"] if self.ensemble_members else [],
                "student": ["data"] + ([teacher] if teacher else [])
                + (["teacher_cache"] if self.uses("teacher_cache") else [])
                # TMKD on the RGB teacher reads the class texts directly
                + (["text"] if teacher == "rgb_teacher" and self.uses("text") else [])}[stage]

    def facts(self, stage: str) -> dict[str, Any]:
        """What changes a stage's numbers outside the configuration."""
        if stage == "data":
            return {}
        if stage == "text":
            return {"encoder": self.text_id}
        facts = dict(self.environment)
        if stage in ("rgb_teacher", "multiview_teacher"):
            facts["seed"] = self.cfg.teacher.seed  # also read (teacher.seed); kept here as keys always had it
        if stage == "multiview_teacher":
            facts["augment_seed"] = MULTIVIEW_AUGMENT + self.cfg.teacher.seed
        if stage == "teacher_cache" or (stage == "student" and self.teacher_stage is not None):
            facts["teacher_dtype"] = str(self.teacher_dtype or torch.float32)
        if stage in ("teacher_cache", "student"):
            facts.update(augment_seed=AUGMENT_SEED, replicas=self.replicas)
            if self.ensemble_members:
                facts["ensemble"] = [member.key("rgb_teacher") for member in self.ensemble_members]
        return facts

    def read_values(self, stage: str, cfg: ExperimentConfig | None = None) -> dict[str, Any]:
        """The values of what `stage` reads (`reads`), less unkeyed settings, taken from `cfg`
        (default: this pipeline's): what its key hashes of the configuration."""
        cfg = cfg or self.cfg
        unkeyed = unkeyed_paths(cfg)

        def keyed(path: str, value):  # a whole section less its unkeyed settings, at any depth
            if not isinstance(value, dict):
                return value
            return {k: keyed(f"{path}.{k}", v) for k, v in value.items() if f"{path}.{k}" not in unkeyed}

        values = {path: keyed(path, get_path(cfg, path)) for path in self.reads(stage) if path not in unkeyed}
        if "teacher_precision" in values:
            # the frozen teacher's dtype as resolved on this device enters the key through facts()
            # (teacher_dtype); hashing the setting as well would give one computation two keys
            # ('fp32' and an 'auto' that resolves to float32). One constant stands for it, the
            # value every key before this one hashed.
            values["teacher_precision"] = "auto"
        return values

    def key(self, stage: str) -> str:
        if stage not in self._keys:
            reads = self.read_values(stage)
            self._keys[stage] = config_hash({"stage": stage, "reads": reads, "facts": self.facts(stage),
                                             "after": {s: self.key(s) for s in self.after(stage)}}, length=16)
        return self._keys[stage]

    def keys(self) -> dict[str, str]:
        return {s: self.key(s) for s in self.stages()}

    # --- artefacts, by stage (what tmkd_core.plan schedules) ---------------------------------------

    BUILT_STAGES = ("rgb_teacher", "multiview_teacher", "teacher_cache", "student")

    def artefact(self, stage: str) -> Path:
        """The file whose presence marks `stage` of this configuration as finished."""
        if stage in ("rgb_teacher", "multiview_teacher"):
            return self._checkpoint(stage).with_suffix(".final.pt")
        if stage == "teacher_cache":
            return self.cache_dir / f"teacher_{self.key('teacher_cache')}" / "meta.json"
        if stage == "student":
            return self.run_path
        raise KeyError(f"stage {stage!r} leaves no artefact; stages that do: {', '.join(self.BUILT_STAGES)}")

    def build(self, stage: str) -> None:
        """Train (or load, if finished) `stage` and what it builds on."""
        {"rgb_teacher": self.train_or_load_rgb_teacher, "multiview_teacher": self.train_or_load_multiview_teacher,
         "teacher_cache": self.train_or_load_teacher_cache, "student": self.run_student}[stage]()

    # --- data and text -------------------------------------------------------------------------

    @property
    def splits(self) -> Splits:
        key = self.key("data")
        if key not in _SPLITS:
            _SPLITS[key] = load_splits(self.cfg.data)
        return _SPLITS[key]

    @cached_property
    def class_text(self) -> torch.Tensor:
        """t_{v,c} (V, K, D) of the configured views and the dataset's classes."""
        return class_text_embeddings(self.cfg.text, self.splits.class_names, self.cfg.views.views, self.cache_dir,
                                     load_encoder=self.text_encoder)

    def text_encoder(self):
        if self.text_id not in _ENCODERS:
            _ENCODERS[self.text_id] = build_text_encoder(self.cfg.text)
        return _ENCODERS[self.text_id]

    # --- teachers ------------------------------------------------------------------------------

    def _checkpoint(self, stage: str) -> Path:  # the partial checkpoint; `artefact` is the finished one
        return self.checkpoints / f"{stage}_{self.key(stage)}.pt"

    def events_dir(self, stage: str) -> Path | None:
        """Where `stage`'s TensorBoard event files go while it trains (`events.EpochEvents`),
        next to its artefact and under its key; None for the teacher-output cache."""
        if stage in ("rgb_teacher", "multiview_teacher"):
            return self._checkpoint(stage).with_suffix(".tb")
        return self.runs_dir / f"{self.key('student')}.tb" if stage == "student" else None

    def partial_checkpoint(self, stage: str) -> Path | None:
        """Where `stage` keeps its resumable checkpoint while it trains (each epoch); None for
        the teacher-output cache, which resumes from its finished replicas."""
        return self._checkpoint(stage) if stage in ("rgb_teacher", "multiview_teacher", "student") else None

    def read_checkpoint(self, stage: str, path: Path) -> dict:
        """A finished checkpoint of `stage` (weights_only), refused if it records another
        stage key (a file copied under another name)."""
        state = load_checkpoint(path)
        if state["info"].get("stage_key", self.key(stage)) != self.key(stage):
            raise damaged(path, f"it holds the {stage} of key {state['info']['stage_key']}, not {self.key(stage)}")
        return state

    def _train_or_load(self, stage: str, model: torch.nn.Module, train: Callable[[Path], dict] | None) -> dict:
        """Load the finished checkpoint of `stage` into `model`, or train it (resuming a partial
        checkpoint), save it as finished and return its info. `train` None: never train."""
        partial = self._checkpoint(stage)
        final = partial.with_suffix(".final.pt")

        def load(path: Path) -> dict:
            state = self.read_checkpoint(stage, path)
            model.load_state_dict(state["model"])
            return state["info"]

        if train is not None and not final.exists():
            self.check_batch_sizes()
        if train is None:
            if not final.exists():
                raise TeacherNotTrained(f"the {stage.replace('_', ' ')} of this configuration is not trained yet "
                                        f"(no {final.resolve()}); train it first with "
                                        "Pipeline(cfg).train_or_load_teachers() (notebook 02 does)")
            return load(final)

        def build():
            info = {**train(partial), "stage_key": self.key(stage)}
            if distributed.is_main():  # the other ranks trained alongside; one writes
                atomic_save({"model": model.state_dict(), "info": info}, final)
                partial.unlink(missing_ok=True)

        return distributed.build_once(final, build, load)

    def check_batch_sizes(self) -> None:
        """Every batch size this configuration trains with fits the training set: said at
        once, not after the teachers have trained."""
        n = len(self.splits.train)
        for path in ("teacher.optim", "teacher.multiview_optim", "student.optim"):
            size = get_path(self.cfg, path)["batch_size"]
            if size > n:
                raise ValueError(f"{path}.batch_size={size} exceeds the {n} training images of "
                                 f"{self.cfg.data.name} (data.train_size={self.cfg.data.train_size})")
            if self.group is not None and size % self.group.world:
                raise ValueError(f"{path}.batch_size={size} (the global batch) does not split over "
                                 f"{self.group.world} processes: use a multiple of {self.group.world}")

    def _fit_kwargs(self, desc: str) -> dict:
        return dict(device=self.device, progress=self.cfg.progress, desc=desc, autocast_dtype=self.train_dtype,
                    channels_last=self.channels_last, sync_batchnorm=self.cfg.sync_batchnorm,
                    compile=self.cfg.compile)

    def _rgb_teacher(self, train: bool) -> tuple[torch.nn.Module, dict]:
        splits, t = self.splits, self.cfg.teacher
        seed_everything(t.seed)
        model = build_model(t.arch, splits.num_classes, splits.in_channels, t.input_norm)

        def train_fn(checkpoint: Path) -> dict:
            if t.checkpoint is not None:  # a teacher trained elsewhere: imported once, then kept like ours
                load_peer_checkpoint(model, t.checkpoint, t.checkpoint_sha256)
                return {"history": [], "train_time_s": 0.0, "imported_from": str(t.checkpoint)}
            history = fit(model, supervised_loss(model), splits.train, self.cfg.teacher.optim, seed=t.seed,
                          augment_seed=t.seed, checkpoint=checkpoint, events=self.events_dir("rgb_teacher"),
                          watch=lambda m: {"val": evaluate(m, splits.val, device=self.device)},
                          **self._fit_kwargs("RGB teacher"))
            return {"history": history, "train_time_s": sum(h["time_s"] for h in history)}  # resumed runs too

        info = self._train_or_load("rgb_teacher", model, train_fn if train else None)
        return model.to(self.device).eval(), info

    def _multiview_teacher(self, train: bool) -> tuple[MultiViewTeacher, dict]:
        cfg, splits = self.cfg, self.splits
        t_text = self.class_text  # first: a text encoder that fails to load fails before any training
        rgb = self._rgb_teacher(train)[0] if cfg.teacher.teacher_init == "rgb" else None
        seed_everything(cfg.teacher.seed)
        backbone = build_model(cfg.teacher.arch, splits.num_classes, splits.in_channels, cfg.teacher.input_norm)
        if rgb is not None:
            backbone.load_state_dict(rgb.state_dict())
        teacher = MultiViewTeacher(backbone, cfg.views.views, t_text.shape[-1], cfg.teacher.view_bn)

        def train_fn(checkpoint: Path) -> dict:
            loss = multiview_teacher_loss(teacher, t_text, cfg.views, cfg.teacher.lambda_a, cfg.teacher.tau_a)
            history = fit(teacher, loss, splits.train, cfg.teacher.multiview_optim, seed=cfg.teacher.seed,
                          augment_seed=MULTIVIEW_AUGMENT + cfg.teacher.seed, checkpoint=checkpoint,
                          events=self.events_dir("multiview_teacher"), watch=self._views_val_acc,
                          **self._fit_kwargs("multi-view teacher"))
            return {"history": history, "train_time_s": sum(h["time_s"] for h in history)}  # resumed runs too

        info = self._train_or_load("multiview_teacher", teacher, train_fn if train else None)
        return teacher.to(self.device).eval(), info

    def _views_val_acc(self, teacher: MultiViewTeacher) -> dict[str, float]:
        """A multi-view teacher's validation accuracy for its curves: of the mean of its views'
        logits, as its training accuracy is (eval mode, no_grad; the mode is restored)."""
        was_training = teacher.training
        teacher.eval()
        logits = predict(lambda x: teacher(make_views(x, self.cfg.views))["logits"].mean(0), self.splits.val,
                         device=self.device)
        teacher.train(was_training)
        return {"val": accuracy(logits, self.splits.val.labels)}

    def train_or_load_rgb_teacher(self) -> tuple[torch.nn.Module, dict]:
        """The single-view (RGB) teacher: trained once per key and reused."""
        return self._rgb_teacher(train=True)

    def train_or_load_multiview_teacher(self) -> tuple[MultiViewTeacher, dict]:
        """Backbone shared over views, per-view BN, text heads; fine-tuned from the RGB teacher."""
        return self._multiview_teacher(train=True)

    def train_or_load_teachers(self, control: bool = True) -> dict:
        """Both teachers and, with `control`, the RGB teacher fine-tuned as long on RGB alone
        (the multi-view teacher's extra epochs, without the extra views). Returns their infos.
        The text encoder loads first, so that missing weights fail before any teacher trains."""
        self.class_text  # noqa: B018 (the embeddings are cached; the encoder loads on a cache miss)
        infos = {"rgb": self.train_or_load_rgb_teacher()[1], "multi": self.train_or_load_multiview_teacher()[1]}
        if control and len(self.cfg.views.views) > 1:
            infos["rgb_finetuned"] = self.with_overrides({"views.views": ["rgb"]}).train_or_load_multiview_teacher()[1]
        return infos

    def fused_teacher(self, train: bool = True) -> FusedTeacher:
        """The multi-view teacher with its view fusion (`fusion` settings), frozen."""
        mv, _ = self._multiview_teacher(train)
        image_encoder = self.text_encoder().encode_image if self.cfg.fusion.weights == "clip_image" else None
        fusion = ViewFusion(self.cfg.fusion, self.class_text, image_encoder).to(self.device)
        if self.cfg.fusion.weights == "learned":
            per_view = predict(lambda x: mv(make_views(x, self.cfg.views))["logits"].transpose(0, 1),
                               self.splits.train, device=self.device).transpose(0, 1)
            fit_learned_weights(fusion, per_view, self.splits.train.labels)
        return FusedTeacher(mv, fusion, self.cfg.views).to(self.device)

    def frozen_teacher(self, train: bool = True):
        """The teacher the student's distiller reads, frozen, in the memory format and
        precision that are fastest on the device (`teacher_precision`, `channels_last`),
        compiled with `teacher_compile`."""
        if self.teacher_stage is None:
            return None
        if self.ensemble_members:
            teacher = EnsembleTeacher([m._rgb_teacher(train)[0] for m in self.ensemble_members], self.cfg.student.tau)
        elif self.teacher_stage == "rgb_teacher":
            teacher = SingleViewTeacher(self._rgb_teacher(train)[0])
            if self.cfg.student.distiller == "tmkd":  # TMKD's terms on the RGB teacher: the RGB view's texts
                teacher.class_text = self.class_text[:1].to(self.device)
        else:
            teacher = self.fused_teacher(train)
        teacher.inference_dtype = self.teacher_dtype
        if self.channels_last:
            teacher.to(memory_format=torch.channels_last)
        if self.cfg.teacher_compile:
            teacher.compile_backbone()
        return teacher

    def train_or_load_teacher_cache(self, teacher=None) -> TeacherCache | None:
        """The teacher-output cache of the student's K replicas, or None (CE, online outputs)."""
        if not self.uses("teacher_cache"):
            return None
        teacher = teacher or self.frozen_teacher()
        return TeacherCache.build(self.artefact("teacher_cache").parent, teacher,
                                  self.splits.train, self.replicas if self.cfg.student.optim.augment else None,
                                  augment_seed=AUGMENT_SEED, batch_size=256, device=self.device,
                                  progress=self.cfg.progress)

    # --- reports -------------------------------------------------------------------------------

    def teacher_report(self, split: str = "test") -> dict:
        """Accuracy of the RGB teacher, of each view of the multi-view teacher, of the fused
        teacher (conditioned on its own prediction, as at test time, and on the label, as
        the student sees it), and of the RGB teacher fine-tuned as long on RGB alone
        (`rgb_finetuned`). Reads trained teachers only: TeacherNotTrained if one is missing."""
        data = getattr(self.splits, split)
        rgb, rgb_info = self._rgb_teacher(train=False)
        outs = {"logits": [], "view_logits": [], "weights": [], "label_logits": []}
        by_pred = self.with_overrides({"fusion.condition": "pred"}).fused_teacher(train=False)
        by_label = self.with_overrides({"fusion.condition": "label"}).fused_teacher(train=False)
        for _, images, labels in data.batches(256):
            x, y = to_float(images, self.device), labels.to(self.device)
            out = by_pred(x, y)
            for k in ("logits", "view_logits", "weights"):
                outs[k].append(out[k].float().cpu())
            outs["label_logits"].append(by_label(x, y)["logits"].float().cpu())
        per_view = torch.cat(outs["view_logits"], dim=1)
        weights = torch.cat(outs["weights"], dim=1)
        report = {"split": split, "rgb_teacher": evaluate(rgb, data, device=self.device),
                  "fused": accuracy(torch.cat(outs["logits"]), data.labels),
                  "fused_label_conditioned": accuracy(torch.cat(outs["label_logits"]), data.labels),
                  "uniform": accuracy(per_view.mean(0), data.labels),
                  "mean_weights": dict(zip(self.cfg.views.views, weights.mean(1).tolist())),
                  "teacher_params": count_parameters(rgb), "arch": self.cfg.teacher.arch,
                  "rgb_train_time_s": rgb_info["train_time_s"],
                  "stage_keys": {s: self.key(s) for s in ("rgb_teacher", "multiview_teacher")}}
        for v, name in enumerate(self.cfg.views.views):
            report[f"view_{name}"] = accuracy(per_view[v], data.labels)
        if len(self.cfg.views.views) > 1:
            report["rgb_finetuned"] = self.with_overrides({"views.views": ["rgb"]}).teacher_report(split)["fused"]
        return report

    # --- students ------------------------------------------------------------------------------

    @property
    def run_path(self) -> Path:
        return self.runs_dir / f"{self.key('student')}.json"

    def run_student(self, force: bool = False, on_epoch_end: Callable[[int, dict], None] | None = None) -> dict:
        """Train this configuration's student (any distiller) and return its run record; a
        finished run is read back. The student checkpoints every epoch and a killed run
        resumes from its last epoch. `force` retrains from scratch and overwrites the record."""
        path = self.run_path
        checkpoint = self.partial_checkpoint("student")

        def build():
            self.check_batch_sizes()
            record = self._train_student(checkpoint, on_epoch_end)
            if distributed.is_main():
                write_json(record, path)
                checkpoint.unlink(missing_ok=True)

        if force:
            with distributed.locked(path):
                if distributed.is_main():
                    path.unlink(missing_ok=True)
                    checkpoint.unlink(missing_ok=True)
                    shutil.rmtree(self.events_dir("student"), ignore_errors=True)  # the retrained run's curves only
                distributed.barrier()
                build()
                distributed.barrier()
        return distributed.build_once(path, build, self._read_record)

    def _read_record(self, path: Path) -> dict:
        """A run record, checked to be the run this key stands for: a record written under
        the same name by other code or for other settings of what the run reads is refused,
        never used (settings it does not read may differ: they share its key)."""
        record = read_json(path)
        theirs = record_config(record.get("config"))
        if (record.get("run_key") != self.key("student") or theirs is None
                or self.read_values("student", theirs) != self.read_values("student")):
            raise damaged(path, "it records another configuration than the one its key stands for")
        return record

    def student_distiller(self, teacher=None, cache: TeacherCache | None = None):
        """A freshly initialised student (seeded by `seed`) in the configured distiller, on the
        device: what `run_student` trains, and what notebooks take apart step by step."""
        splits = self.splits
        seed_everything(self.cfg.seed)
        student = build_model(self.cfg.student.arch, splits.num_classes, splits.in_channels)
        return build_distiller(student, teacher, self.cfg.student, cache).to(self.device)

    def _train_student(self, checkpoint: Path, on_epoch_end) -> dict:
        cfg, splits = self.cfg, self.splits
        teacher = self.frozen_teacher()
        t_cache0 = time.perf_counter()
        cache = self.train_or_load_teacher_cache(teacher)
        cache_time = time.perf_counter() - t_cache0
        distiller = self.student_distiller(teacher, cache)
        student = distiller.student
        history = fit(distiller, distiller.forward_train, splits.train, cfg.student.optim, seed=cfg.seed,
                      augment_seed=AUGMENT_SEED, replicas=self.replicas, params=distiller.trainable_parameters(),
                      val=splits.val, eval_fn=lambda m, d: evaluate(m.student, d, device=self.device),
                      checkpoint=checkpoint, on_epoch_end=on_epoch_end, events=self.events_dir("student"),
                      **self._fit_kwargs(f"{cfg.student.distiller} seed {cfg.seed}"))
        # an ensemble's RGB teachers are stages of other configurations: their keys, beside its own
        ensemble = {"ensemble_rgb_teachers": self.facts("student")["ensemble"]} if self.ensemble_members else {}
        return {"config": asdict(cfg), "run_key": self.key("student"), "stage_keys": {**self.keys(), **ensemble},
                "seed": cfg.seed, "val_acc": evaluate(student, splits.val, device=self.device),
                # None when the run must not read the test split (the pilot, docs/protocol.md)
                "test_acc": evaluate(student, splits.test, device=self.device) if cfg.score_test else None,
                "history": history, "train_time_s": sum(h["time_s"] for h in history), "cache_time_s": cache_time,
                "student_params": count_parameters(student), "replicas": self.replicas,
                "world_size": self.group.world if self.group is not None else 1,
                **run_metadata(self.precision())}

    def precision(self) -> dict[str, str]:
        """The precision each part actually ran in, for records."""
        train = "bf16 autocast" if self.train_dtype is not None else "float32"
        return {"training": train, "frozen_teacher": str(self.teacher_dtype or torch.float32).removeprefix("torch.")}


def run_student(cfg: ExperimentConfig, force: bool = False) -> dict:
    """Shorthand for `Pipeline(cfg).run_student(force)`."""
    return Pipeline(cfg).run_student(force)
