"""The teacher study and the confirmatory comparison (docs/protocol.md, "Amendment: powerful
teachers"), each resolved once by its study (tmkd_core.study.Study) into one typed object.

    study = Study.of("cpu").teacher_study    # which teacher recipes, on which teacher seeds
    study.teachers()                          # every (dataset, variant, seed) and its configurations
    conf = Study.of("cpu").confirmatory       # KD from `kd_variant` vs TMKD from `tmkd_variant`
    conf.runs(conf.teacher_seeds)             # the student runs, teacher seed by teacher seed

A variant (`config.TEACHER_VARIANTS`) is a teacher's training recipe as overrides of a
dataset's configuration. Its compute is counted in view-epochs, one forward and backward pass
over the training images of one view, including what it starts from:

    compute = [starts from the RGB teacher] * teacher.optim.epochs
              + multiview_optim.epochs * len(views)          (a multi-view-stage recipe)
    compute = len(ensemble) * teacher.optim.epochs           (an ensemble of RGB teachers)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

from .config import TEACHER_VARIANTS, ExperimentConfig, dataset_config, method_config, with_overrides

KINDS = ("rgb", "multiview", "ensemble")


@dataclass(frozen=True)
class TeacherVariant:
    """One teacher recipe of `config.TEACHER_VARIANTS`."""

    name: str
    kind: str  # rgb | multiview | ensemble
    stage: str  # the teacher stage it trains: rgb_teacher | multiview_teacher
    overrides: tuple[tuple[str, Any], ...]
    why: str
    ensemble: tuple[int, ...] = ()  # teacher-seed offsets of the averaged RGB teachers

    @classmethod
    def named(cls, name: str) -> "TeacherVariant":
        if name not in TEACHER_VARIANTS:
            raise KeyError(f"unknown teacher variant {name!r}; available: {', '.join(TEACHER_VARIANTS)}")
        spec = TEACHER_VARIANTS[name]
        if spec["kind"] not in KINDS:
            raise ValueError(f"TEACHER_VARIANTS[{name!r}]['kind'] = {spec['kind']!r}; kinds: {', '.join(KINDS)}")
        overrides = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in spec["overrides"].items()))
        return cls(name, spec["kind"], spec["stage"], overrides, spec["why"], tuple(spec.get("ensemble", ())))

    def settings(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.overrides}

    def configs(self, base: ExperimentConfig) -> list[ExperimentConfig]:
        """The configurations whose `stage` this recipe trains, at `base`'s teacher seed (two
        RGB teachers for an ensemble). A multi-view-stage recipe is read through TMKD's
        configuration, as the plan builds every multi-view teacher."""
        if self.ensemble:
            return [with_overrides(base, {"teacher.seed": base.teacher.seed + k}) for k in self.ensemble]
        if self.stage == "multiview_teacher":
            return [method_config(base, "TMKD", self.settings())]
        return [with_overrides(base, self.settings())]

    def student_overrides(self) -> dict[str, Any]:
        """What a student run distilled from this teacher adds to its method's settings: the
        recipe, and for a multi-view-stage recipe the fused teacher (with views ["rgb"], the
        one view's outputs)."""
        if self.ensemble:
            raise ValueError(f"teacher variant {self.name!r} is an ensemble: no student distils from it here")
        if self.stage == "multiview_teacher":
            return {**self.settings(), "student.teacher": "multi"}
        return self.settings()

    def compute(self, cfg: ExperimentConfig) -> int:
        """Training compute in view-epochs, what it starts from included (module docstring)."""
        t = cfg.teacher
        if self.ensemble:
            return len(self.ensemble) * t.optim.epochs
        if self.stage == "rgb_teacher":
            return t.optim.epochs
        mv = self.configs(cfg)[0]
        base = mv.teacher.optim.epochs if mv.teacher.teacher_init == "rgb" else 0
        return base + mv.teacher.multiview_optim.epochs * len(mv.views.views)


@dataclass(frozen=True)
class StudyTeacher:
    """One teacher of the study: a variant at a teacher seed on a dataset."""

    dataset: str
    variant: TeacherVariant
    teacher_seed: int
    configs: tuple[ExperimentConfig, ...]

    @property
    def title(self) -> str:
        return f"teacher {self.variant.name} ({self.dataset} teacher seed {self.teacher_seed})"


@dataclass(frozen=True)
class TeacherStudy:
    """docs/protocol.md's teacher study of a study: its variants at each dataset's teacher seeds."""

    profile: str  # the configuration profile (Study.profile)
    teacher_seeds: tuple[tuple[str, tuple[int, ...]], ...]  # (dataset, seeds), in the profile's order
    variants: tuple[TeacherVariant, ...]
    reference: TeacherVariant  # the compute-matched RGB teacher
    candidates: tuple[TeacherVariant, ...]  # the multi-view variants the confirmatory comparison chooses from

    @classmethod
    def from_plan(cls, profile: str, plan: dict[str, Any]) -> "TeacherStudy":
        """From a study's `teacher_study` entry (tmkd_core.study)."""
        seeds = tuple((name, tuple(s)) for name, s in plan["teacher_seeds"].items())
        return cls(profile, seeds, tuple(TeacherVariant.named(v) for v in plan["variants"]),
                   TeacherVariant.named(plan["reference"]), tuple(TeacherVariant.named(v) for v in plan["candidates"]))

    @property
    def datasets(self) -> list[str]:
        return [name for name, _ in self.teacher_seeds]

    def teachers(self, dataset: str | None = None) -> list[StudyTeacher]:
        """Every variant at every teacher seed (of `dataset`, or of all)."""
        return [StudyTeacher(name, v, t, tuple(v.configs(dataset_config(self.profile, name, {"teacher.seed": t}))))
                for name, seeds in self.teacher_seeds if dataset in (None, name)
                for t in seeds for v in self.variants]


@dataclass(frozen=True)
class Confirmatory:
    """docs/protocol.md's confirmatory comparison: TMKD from `tmkd_variant` against KD from
    `kd_variant`, with the teacher seed as the unit of replication."""

    profile: str  # the configuration profile (Study.profile)
    dataset: str
    kd_variant: TeacherVariant
    tmkd_variant: TeacherVariant | None  # None until the teacher study's choice is committed
    teacher_seeds: tuple[int, ...]  # before the widening rule
    students_per_teacher: int
    seed_base: int
    max_teachers: int
    fusion_candidate: tuple[tuple[str, Any], ...] | None = None  # the fusion screen's candidate
    fusion_settled: bool = False  # the candidate's student check is decided (or there is none)
    fusion_adopted: tuple[tuple[str, Any], ...] | None = None  # what TMKD's final runs add
    declared_store: str | None = None  # the study's artefact store (Study.declared_store): finished runs are read there too
    where: str = "the study's confirmatory entry"  # where it is declared, for the errors that name a setting

    @classmethod
    def from_plan(cls, profile: str, plan: dict[str, Any], store: str | None = None,
                  where: str | None = None) -> "Confirmatory":
        """From a study's `confirmatory` entry (tmkd_core.study)."""
        tmkd = plan.get("tmkd_variant")

        def items(d):
            return None if d is None else tuple(sorted(d.items()))

        return cls(profile, plan["dataset"], TeacherVariant.named(plan["kd_variant"]),
                   TeacherVariant.named(tmkd) if tmkd else None, tuple(plan["teacher_seeds"]),
                   plan["students_per_teacher"], plan["seed_base"], plan["max_teachers"],
                   items(plan.get("fusion_candidate")), bool(plan.get("fusion_settled")),
                   items(plan.get("fusion_adopted")), store,
                   f"{where}['confirmatory']" if where else cls.where)

    @property
    def chosen(self) -> bool:
        return self.tmkd_variant is not None

    def student_seeds(self, teacher_seed: int) -> list[int]:
        """The student seeds under one teacher: seed_base + 10 t + i, never shared between teachers."""
        return [self.seed_base + 10 * teacher_seed + i for i in range(self.students_per_teacher)]

    def runs(self, teacher_seeds) -> list:
        """The student runs (study.RunSpec) at `teacher_seeds`: KD's always; TMKD's once its
        teacher is chosen and the fusion setting settled (with `fusion_adopted`)."""
        from .study import RunSpec, frozen

        sides = [("KD", self.kd_variant.student_overrides(), self.kd_variant)]
        if self.chosen and self.fusion_settled:
            sides.append(("TMKD", {**self.tmkd_variant.student_overrides(), **dict(self.fusion_adopted or ())},
                          self.tmkd_variant))
        return [RunSpec(self.dataset, method, s, t, frozen(overrides), f"teacher={v.name}")
                for t in teacher_seeds for s in self.student_seeds(t) for method, overrides, v in sides]

    def choice_reads(self, study: TeacherStudy) -> list[StudyTeacher]:
        """The study's teachers the choice of TMKD's teacher reads (each candidate at each of
        the dataset's study seeds); none once the choice is committed."""
        return [] if self.chosen else self.candidate_teachers(study)

    def candidate_teachers(self, study: TeacherStudy) -> list[StudyTeacher]:
        """Each candidate variant at each of the confirmatory dataset's study seeds."""
        seeds = dict(study.teacher_seeds)[self.dataset]
        return [t for t in study.teachers(self.dataset) if t.variant in study.candidates and t.teacher_seed in seeds]

    @property
    def store(self) -> Path | None:
        from .study import resolve_store

        return resolve_store(self.declared_store)

    def finished_record(self, spec) -> dict | None:
        from .study import finished_record

        return finished_record(spec, self.profile, self.store)

    def widened_teacher_seeds(self) -> list[int]:
        """The teacher seeds, widened by `protocol.widen_pairs` (two teachers at a time, up to
        `max_teachers`) from the teacher-level mean differences TMKD - KD of the teachers whose
        runs have all finished (docs/protocol.md, "Amendment: powerful teachers"). Until TMKD's
        final runs may start (its teacher chosen and the fusion setting settled), the study's seeds."""
        from .protocol import widen_pairs

        seeds = list(self.teacher_seeds)
        if not (self.chosen and self.fusion_settled):
            return seeds
        means: dict[int, float] = {}
        while True:  # a widening step reads the teachers it added: they may have finished too
            for t in set(seeds) - set(means):
                specs = self.runs([t])
                records = [self.finished_record(spec) for spec in specs]
                if None not in records:
                    acc = {(spec.method, spec.seed): r["test_acc"] for spec, r in zip(specs, records)}
                    students = self.student_seeds(t)
                    means[t] = 100 * sum(acc["TMKD", s] - acc["KD", s] for s in students) / len(students)
            wider = widen_pairs(seeds, means, 2, self.max_teachers)
            if wider == seeds:
                return seeds
            seeds = wider

    FUSION_CHECK_SEED = 900  # student seed 900 + t under teacher t: validation only, never a final seed

    def fusion_check_runs(self, teacher_seeds) -> list:
        """The fusion candidate's student check (docs/protocol.md): TMKD from the chosen teacher
        with the default fusion and with the candidate, one student seed per teacher seed,
        scored on validation only; empty before the choice or without a candidate (the plan
        runs them while the setting is not settled)."""
        from .study import RunSpec, frozen

        if not self.chosen or self.fusion_candidate is None:
            return []
        base = {**self.tmkd_variant.student_overrides(), "score_test": False}
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in self.fusion_candidate)
        return [RunSpec(self.dataset, "TMKD", self.FUSION_CHECK_SEED + t, t, frozen({**base, **extra}),
                        f"fusion check: {name}")
                for t in teacher_seeds for name, extra in (("default", {}), (label, dict(self.fusion_candidate)))]


# --- evaluating the study's teachers -----------------------------------------------------------

# The fusion settings the protocol's rule compares for the chosen variant: (fusion.score, fusion.tau_w)
FUSION_GRID = (("cosine", 0.03), ("cosine", 0.1), ("cosine", 0.3),
               ("class_prob", 0.03), ("class_prob", 0.1), ("class_prob", 0.3))
EVAL_VERSION = 1  # bumped when what an evaluation computes changes: cached evaluations are redone


def _multiview_outputs(cfg: ExperimentConfig, split: str):
    """A trained multi-view-stage teacher's per-view logits (V, N, K) and text projections
    (V, N, D) on a split, its labels and class texts: one backbone pass, every fusion after."""
    import torch

    from .data import to_float
    from .experiment import Pipeline
    from .priors import make_views

    pipe = Pipeline(cfg)
    mv, _ = pipe._multiview_teacher(train=False)
    data = getattr(pipe.splits, split)
    logits, text = [], []
    with torch.no_grad():
        for _, images, _ in data.batches(256):
            out = mv.heads(mv.pooled(make_views(to_float(images, pipe.device), cfg.views)))
            logits.append(out["logits"].float().cpu())
            text.append(out["text"].float().cpu())
    return torch.cat(logits, 1), torch.cat(text, 1), data.labels, pipe.class_text.cpu()


def _fused_accuracy(cfg: ExperimentConfig, logits, text, labels, class_text, **fusion) -> tuple[float, Any]:
    """Accuracy (%) of the views fused by `cfg.fusion` with `fusion` changed, and the weights."""
    from dataclasses import replace

    from .fusion import ViewFusion
    from .train import accuracy

    weights = ViewFusion(replace(cfg.fusion, **fusion), class_text).weights({"logits": logits, "text": text}, labels)
    return 100 * accuracy((weights[..., None] * logits).sum(0), labels), weights


def evaluate_teacher(teacher: StudyTeacher, split: str) -> dict[str, Any]:
    """One study teacher's accuracies (%) on a split. Every kind: `deployed`, the teacher as it
    would be used at test time (a multi-view teacher fused with weights conditioned on its own
    prediction; an ensemble's mean softmax). A multi-view-stage teacher also: `label_conditioned`
    (the fused teacher TMKD's students learn from), `uniform`, `view_<name>` per view, the
    label- and prediction-conditioned accuracy of each `FUSION_GRID` setting (`fusion_grid`),
    and whether the default weights follow which view is right (`selectivity`,
    `analysis.weights_against_views`)."""
    import torch

    from .analysis import weights_against_views
    from .experiment import Pipeline
    from .train import accuracy, predict

    v = teacher.variant
    if v.stage == "rgb_teacher":
        probs = []
        for cfg in teacher.configs:
            pipe = Pipeline(cfg)
            model, _ = pipe._rgb_teacher(train=False)
            data = getattr(pipe.splits, split)
            probs.append(predict(lambda x: model(x)[0], data, device=pipe.device).softmax(-1))
        return {"deployed": 100 * accuracy(torch.stack(probs).mean(0), data.labels)}
    cfg = teacher.configs[0]
    logits, text, labels, class_text = _multiview_outputs(cfg, split)
    views = list(cfg.views.views)
    out: dict[str, Any] = {
        "deployed": _fused_accuracy(cfg, logits, text, labels, class_text, condition="pred")[0],
        "label_conditioned": _fused_accuracy(cfg, logits, text, labels, class_text, condition="label")[0],
        "uniform": 100 * accuracy(logits.mean(0), labels),
        **{f"view_{name}": 100 * accuracy(logits[i], labels) for i, name in enumerate(views)}}
    if len(views) > 1:
        out["fusion_grid"] = [{"score": score, "tau_w": tau_w, **{
            f"{condition}_conditioned": _fused_accuracy(cfg, logits, text, labels, class_text, condition=condition,
                                                        score=score, tau_w=tau_w)[0] for condition in ("label", "pred")}}
            for score, tau_w in FUSION_GRID]
        weights = _fused_accuracy(cfg, logits, text, labels, class_text, condition="label")[1]
        out["selectivity"] = weights_against_views(weights, logits, labels, views)
    return out


def train_time_s(teacher: StudyTeacher) -> float:
    """Seconds of training the teacher recorded, what it starts from included (both of an
    ensemble's teachers; the RGB teacher a fine-tuned one starts from)."""
    from .experiment import Pipeline

    seconds = 0.0
    for cfg in teacher.configs:
        pipe = Pipeline(cfg)
        if pipe.uses("rgb_teacher") or teacher.variant.stage == "rgb_teacher":
            seconds += pipe._rgb_teacher(train=False)[1]["train_time_s"]
        if teacher.variant.stage == "multiview_teacher":
            seconds += pipe._multiview_teacher(train=False)[1]["train_time_s"]
    return seconds


def stage_keys(teacher: StudyTeacher) -> list[str]:
    from .experiment import Pipeline

    return [Pipeline(cfg).key(teacher.variant.stage) for cfg in teacher.configs]


def evaluation_name(teacher: StudyTeacher, keys: list[str] | None = None) -> str:
    """The file a teacher's evaluation is kept in: its stage keys (`keys`, if already
    resolved) and what the evaluation computes."""
    from .config import config_hash

    keys = stage_keys(teacher) if keys is None else keys
    return f"teacher_{config_hash({'keys': keys, 'version': EVAL_VERSION, 'grid': FUSION_GRID}, length=16)}.json"


def teacher_record(teacher: StudyTeacher, cache_dirs=()) -> dict[str, Any]:
    """What `figures/results/teacher_study.json` keeps of one teacher (docs/protocol.md's
    names: dataset, kind, variant, teacher_seed, val_acc, test_acc as deployed, train_time_s),
    with its validation and test evaluations and its compute. An evaluation is kept as JSON
    under its teachers' stage keys (`evals/` of the data root, and of each of `cache_dirs`,
    e.g. the profile's store), and read back from the first that has it; TeacherNotTrained
    if a teacher it needs is not trained."""
    import json

    from .utils import atomic_write_text

    keys = stage_keys(teacher)
    name = evaluation_name(teacher, keys)
    root = Path(teacher.configs[0].data.root) / "evals"
    places = [root / name, *(Path(d) / "evals" / name for d in cache_dirs)]
    found = next((p for p in places if p.exists()), None)
    if found is not None:
        record = json.loads(found.read_text())
    else:
        record = {"dataset": teacher.dataset, "kind": teacher.variant.kind, "variant": teacher.variant.name,
                  "teacher_seed": teacher.teacher_seed, "stage_keys": keys,
                  "compute_view_epochs": teacher.variant.compute(teacher.configs[0]),
                  "train_time_s": train_time_s(teacher),
                  "val": evaluate_teacher(teacher, "val"), "test": evaluate_teacher(teacher, "test"),
                  "eval_version": EVAL_VERSION}
        record["val_acc"], record["test_acc"] = record["val"]["deployed"], record["test"]["deployed"]
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    for place in places:
        if not place.exists():
            place.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(text, place)
    return record


# --- the study's report ------------------------------------------------------------------------

MEASURES = ("deployed", "label_conditioned", "uniform", "view_rgb", "view_edge", "view_hf")
TIE_POINTS = 0.1  # the protocol's tie between candidates, in points of validation accuracy
SCREEN_POINTS = 0.3  # the fusion-setting screen's margin (docs/protocol.md)
DEFAULT_FUSION = ("cosine", 0.1)


def study_records(study: TeacherStudy, cache_dirs=()) -> tuple[list[dict], list[str]]:
    """Every trained teacher's `teacher_record`, and the titles of those not trained yet."""
    from .experiment import TeacherNotTrained

    records, missing = [], []
    for teacher in study.teachers():
        try:
            records.append(teacher_record(teacher, cache_dirs))
        except TeacherNotTrained:
            missing.append(teacher.title)
    return records, missing


def measure(record: dict, split: str, name: str) -> float:
    """A teacher's accuracy (%) by one measure; an RGB-kind teacher or an ensemble has one
    output, which stands for every measure (what its students would learn from, too)."""
    values = record[split]
    return values.get(name, values["deployed"])


def paired_to_reference(records: list[dict], variant: str, reference: str, split: str = "test",
                        name: str = "deployed") -> dict[str, Any] | None:
    """`variant` − `reference` over the teacher seeds both have on one dataset's records, in
    points: mean, sd, 95% t-interval with the teacher seed as the unit; None under 2 seeds."""
    from .report import paired_difference

    a = {r["teacher_seed"]: measure(r, split, name) for r in records if r["variant"] == variant}
    b = {r["teacher_seed"]: measure(r, split, name) for r in records if r["variant"] == reference}
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    d = paired_difference([a[s] for s in seeds], [b[s] for s in seeds])
    return {"teacher_seeds": seeds, "diff": d["diff"], "sd": d["diff_sd"], "ci_low": d["ci_low"],
            "ci_high": d["ci_high"]}


def study_table(records: list[dict], study: TeacherStudy) -> "pd.DataFrame":
    """One row per dataset and variant: compute, measured training time, test accuracy as
    deployed and as TMKD's students see it (label-conditioned), each with its paired difference
    to the compute-matched RGB teacher over teacher seeds (95% CI; as deployed, to the RGB
    teacher `rgb` too), uniform fusion and each view."""
    import numpy as np
    import pandas as pd

    rows = []
    for dataset in study.datasets:
        mine = [r for r in records if r["dataset"] == dataset]
        for v in study.variants:
            rs = [r for r in mine if r["variant"] == v.name]
            if not rs:
                continue
            row = {"dataset": dataset, "variant": v.name, "kind": v.kind, "teacher seeds": len(rs),
                   "compute (view-epochs)": rs[0]["compute_view_epochs"],
                   "train time (h)": float(np.mean([r["train_time_s"] for r in rs])) / 3600}
            for name, label in (("deployed", "deployed"), ("label_conditioned", "label-conditioned")):
                values = [measure(r, "test", name) for r in rs]
                row[f"{label} (%)"] = f"{np.mean(values):.2f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.2f}"
                for ref in [study.reference.name] + (["rgb"] if name == "deployed" else []):
                    d = paired_to_reference(mine, v.name, ref, "test", name)
                    row[f"{label} Δ vs {ref}"] = "" if d is None or v.name == ref else (
                        f"{d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]")
            for name in ("uniform", "view_rgb", "view_edge", "view_hf"):
                row[name.replace("_", " ") + " (%)"] = (f"{np.mean([r['test'][name] for r in rs]):.2f}"
                                                        if v.kind == "multiview" and all(name in r["test"] for r in rs)
                                                        else "")
            rows.append(row)
    return pd.DataFrame(rows)


def choose_variant(records: list[dict], study: TeacherStudy, dataset: str, seeds) -> dict[str, Any]:
    """docs/protocol.md's choice of the confirmatory comparison's multi-view teacher, on
    validation only: the candidate with the highest mean validation accuracy as deployed over
    `seeds`; within TIE_POINTS of the best, the cheapest by measured training time. `chosen`
    None while a candidate lacks a seed."""
    import numpy as np

    seeds = sorted(seeds)
    means, times = {}, {}
    for v in study.candidates:
        rs = {r["teacher_seed"]: r for r in records if r["dataset"] == dataset and r["variant"] == v.name}
        if sorted(set(rs) & set(seeds)) != seeds:
            return {"chosen": None, "waiting_for": v.name, "val_deployed": means}
        means[v.name] = float(np.mean([rs[s]["val"]["deployed"] for s in seeds]))
        times[v.name] = float(np.mean([rs[s]["train_time_s"] for s in seeds]))
    best = max(means.values())
    tied = [name for name, m in means.items() if m >= best - TIE_POINTS]
    return {"chosen": min(tied, key=times.get), "val_deployed": means, "train_time_s": times, "tied": tied,
            "seeds": seeds, "dataset": dataset}


def fusion_screen(records: list[dict], variant: str, dataset: str, seeds) -> dict[str, Any]:
    """Step 1 of the protocol's fusion-setting rule: for `variant`, each FUSION_GRID setting's
    label-conditioned validation accuracy, mean over `seeds`, and the candidate (the best,
    if it beats DEFAULT_FUSION by more than SCREEN_POINTS), else None."""
    import numpy as np

    rs = [r for r in records if r["dataset"] == dataset and r["variant"] == variant and r["teacher_seed"] in seeds]
    grid = {}
    for score, tau_w in FUSION_GRID:
        grid[score, tau_w] = float(np.mean([next(g["label_conditioned"] for g in r["val"]["fusion_grid"]
                                                 if (g["score"], g["tau_w"]) == (score, tau_w)) for r in rs]))
    best = max(grid, key=grid.get)
    candidate = best if grid[best] > grid[DEFAULT_FUSION] + SCREEN_POINTS else None
    return {"grid": [{"score": s, "tau_w": t, "label_conditioned_val": v} for (s, t), v in grid.items()],
            "default": {"score": DEFAULT_FUSION[0], "tau_w": DEFAULT_FUSION[1]},
            "candidate": None if candidate is None else {"score": candidate[0], "tau_w": candidate[1]}}


def write_teacher_report(study: TeacherStudy, out_dir, cache_dirs=(), conf: Confirmatory | None = None) -> dict:
    """The teacher study as far as it has trained: tables/teacher_study.{md,csv,tex},
    teacher_study.{png,pdf} and results/teacher_study.json (every teacher's record, the paired
    differences to the reference, the validation choice of the confirmatory comparison's
    teacher and the fusion-setting screen once their teachers are there). Accuracies in %."""
    from .figures import teacher_study_figure
    from .report import Outputs

    records, missing = study_records(study, cache_dirs)
    out = Outputs(out_dir)
    out.table(study_table(records, study), "teacher_study",
              "Teacher study: test accuracy (%), mean ± sd over teacher seeds; Δ: paired difference to the "
              f"compute-matched RGB teacher ({study.reference.name}), 95% t-interval over teacher seeds")
    references = [study.reference.name, "rgb"]  # the compute-matched RGB teacher, and KD's teacher so far
    diffs = [{"dataset": d, "variant": v.name, "measure": name, "split": split, "reference": ref, **found}
             for ref in references for d in study.datasets for v in study.variants if v.name != ref
             for name in MEASURES for split in ("val", "test")
             if (found := paired_to_reference([r for r in records if r["dataset"] == d], v.name, ref, split,
                                              name)) is not None]
    # the protocol's reading: more powerful when the deployed test accuracy's interval against the
    # compute-matched RGB teacher lies above 0
    more_powerful = {f"{d['dataset']}/{d['variant']}": d["ci_low"] > 0 for d in diffs
                     if d["reference"] == study.reference.name and d["measure"] == "deployed" and d["split"] == "test"}
    payload: dict[str, Any] = {"units": "percent", "teachers": records, "missing": missing, "paired_differences": diffs,
                               "more_powerful_than_reference": more_powerful,
                               "reference": study.reference.name,
                               "variants": {v.name: {"kind": v.kind, "stage": v.stage, "overrides": v.settings(),
                                                     "why": v.why} for v in study.variants}}
    if conf is not None:
        seeds = dict(study.teacher_seeds)[conf.dataset]
        payload["choice"] = choose_variant(records, study, conf.dataset, seeds)
        if payload["choice"]["chosen"] is not None:
            payload["fusion_screen"] = fusion_screen(records, payload["choice"]["chosen"], conf.dataset, seeds)
        payload["fusion_check"] = fusion_check_summary(conf, seeds)
    if records:
        out.figure(teacher_study_figure(records, [v.name for v in study.variants], study.reference.name,
                                        study.datasets), "teacher_study")
    out.results_json("teacher_study", payload)
    return payload


# --- the confirmatory comparison's report ---------------------------------------------------------

CONFIRMATORY_CAPTION = ("Confirmatory comparison (docs/protocol.md, 'Amendment: powerful teachers'): test accuracy "
                        "(%), mean ± sd over pairs; Δ: the mean over teachers of each teacher's mean paired "
                        "difference, 95% t-interval over teachers")


def write_confirmatory_report(conf: Confirmatory, out_dir) -> tuple[Any, dict] | list:
    """The confirmatory comparison, once every pair of its teachers (the widening rule
    applied) has finished: tables/confirmatory.{md,csv,tex} and results/confirmatory.json
    (`runs`: dataset, method, seed, teacher_seed, teacher_variant, val_acc, test_acc, run_key;
    `confirmatory`: `report.teacher_level_comparison`). Returns (table, statistic), or the
    runs still missing (all of TMKD's before its teacher is chosen)."""
    import numpy as np
    import pandas as pd

    from .report import Outputs, run_record, teacher_level_comparison

    teachers = conf.widened_teacher_seeds()
    specs = conf.runs(teachers)
    found = [(spec, conf.finished_record(spec)) for spec in specs]
    missing = [spec for spec, record in found if record is None]
    if not conf.chosen or missing:
        return [s.title for s in missing] + ([] if conf.chosen else ["TMKD's runs: its teacher is not chosen yet"])
    runs = [{**run_record(spec.dataset, spec.method, record, spec.setting),
             "teacher_variant": spec.setting.removeprefix("teacher=")} for spec, record in found]
    statistic = teacher_level_comparison(runs, "TMKD", "KD")
    acc = {m: [100 * r["test_acc"] for r in runs if r["method"] == m] for m in ("KD", "TMKD")}
    table = pd.DataFrame([{
        "dataset": conf.dataset, "teachers": statistic["teachers"], "pairs": statistic["pairs"],
        f"KD from {conf.kd_variant.name} (%)": f"{np.mean(acc['KD']):.2f} ± {np.std(acc['KD'], ddof=1):.2f}",
        f"TMKD from {conf.tmkd_variant.name} (%)": f"{np.mean(acc['TMKD']):.2f} ± {np.std(acc['TMKD'], ddof=1):.2f}",
        "Δ TMKD − KD": f"{statistic['diff']:+.2f}", "95% CI": f"[{statistic['ci_low']:+.2f}, {statistic['ci_high']:+.2f}]",
        "half-width": statistic["half_width"],
        "per teacher": ", ".join(f"{t}: {v:+.2f}" for t, v in statistic["per_teacher_diff"].items()),
        "reading": statistic["verdict"]}])
    out = Outputs(out_dir)
    out.table(table, "confirmatory", CONFIRMATORY_CAPTION)
    out.results_json("confirmatory", {"confirmatory": statistic, "teacher_seeds": teachers, "dataset": conf.dataset,
                                      "kd_variant": conf.kd_variant.name, "tmkd_variant": conf.tmkd_variant.name},
                     runs=runs)
    return table, statistic


def fusion_check_summary(conf: Confirmatory, teacher_seeds) -> dict[str, Any] | None:
    """Step 2 of the fusion-setting rule: TMKD with the candidate − TMKD with the default, in
    points of validation accuracy, per teacher seed and their mean; `adopt` if the mean exceeds
    SCREEN_POINTS. None without a candidate, or while a check run is missing."""
    runs = conf.fusion_check_runs(teacher_seeds)
    if not runs:
        return None
    records = [conf.finished_record(spec) for spec in runs]
    if None in records:
        return None
    val = {(spec.teacher_seed, spec.setting.endswith("default")): r["val_acc"] for spec, r in zip(runs, records)}
    diffs = {t: 100 * (val[t, False] - val[t, True]) for t in sorted(teacher_seeds)}
    mean = sum(diffs.values()) / len(diffs)
    return {"candidate": dict(conf.fusion_candidate), "val_diff_per_teacher": diffs, "val_diff": mean,
            "adopt": mean > SCREEN_POINTS}


class DecisionMismatch(RuntimeError):
    """The profile's confirmatory settings are not what the protocol's rules decide."""


def check_confirmatory_decisions(conf: Confirmatory, study: TeacherStudy, cache_dirs=()) -> None:
    """Once `tmkd_variant` is written into the profile: that it is a candidate and what
    `choose_variant` decides from the stored validation evaluations; that `fusion_candidate`
    is `fusion_screen`'s; and once `fusion_settled`, that `fusion_adopted` is the candidate
    exactly when `fusion_check_summary` adopts it (None without a candidate).
    DecisionMismatch otherwise, naming the setting to change: TMKD's final runs never start
    from a choice the rules did not make."""
    if not conf.chosen:
        if conf.fusion_settled or conf.fusion_candidate is not None or conf.fusion_adopted is not None:
            raise DecisionMismatch("the confirmatory comparison's fusion settings are set before its teacher is "
                                   "chosen: reset fusion_candidate, fusion_settled and fusion_adopted in "
                                   f"{conf.where}")
        return
    where = conf.where
    if conf.tmkd_variant not in study.candidates:
        raise DecisionMismatch(f"{where}['tmkd_variant'] = {conf.tmkd_variant.name!r} is not a candidate "
                               f"({', '.join(v.name for v in study.candidates)})")
    seeds = dict(study.teacher_seeds)[conf.dataset]
    records = [teacher_record(t, cache_dirs) for t in conf.candidate_teachers(study)]
    choice = choose_variant(records, study, conf.dataset, seeds)
    if choice["chosen"] != conf.tmkd_variant.name:
        raise DecisionMismatch(f"{where}['tmkd_variant'] = {conf.tmkd_variant.name!r}, but the validation rule "
                               f"chooses {choice['chosen']!r} ({choice})")
    screen = fusion_screen(records, conf.tmkd_variant.name, conf.dataset, seeds)["candidate"]
    want = None if screen is None else {"fusion.score": screen["score"], "fusion.tau_w": screen["tau_w"]}
    have = None if conf.fusion_candidate is None else dict(conf.fusion_candidate)
    if have != want:
        raise DecisionMismatch(f"{where}['fusion_candidate'] = {have}, but the fusion screen gives {want}")
    if conf.fusion_settled:
        check = fusion_check_summary(conf, seeds)
        if want is not None and check is None:
            raise DecisionMismatch(f"{where}['fusion_settled'] is True, but the fusion check's runs have not all "
                                   "finished")
        adopted = None if conf.fusion_adopted is None else dict(conf.fusion_adopted)
        if adopted != (want if check is not None and check["adopt"] else None):
            raise DecisionMismatch(f"{where}['fusion_adopted'] = {adopted}, but the fusion check "
                                   f"{'adopts' if check and check['adopt'] else 'does not adopt'} {want} ({check})")
    elif conf.fusion_adopted is not None:
        raise DecisionMismatch(f"{where}['fusion_adopted'] is set before the fusion check has settled")
