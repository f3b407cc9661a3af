"""The teacher study and the confirmatory comparison (docs/protocol.md, "Amendment: powerful
teachers"), each resolved once by its study (tmkd_core.study.Study) into one typed object.

    study = Study.of("cpu").teacher_study    # which teacher recipes, on which teacher seeds
    study.teachers()                          # every (dataset, variant, seed) and its configurations
    conf = Study.of("cpu").confirmatory       # KD from `kd_variant` vs TMKD from `tmkd_variant`
    conf.runs(conf.teacher_seeds)             # the student runs, teacher seed by teacher seed
    Study.of("cpu").secondary_confirmatory    # the same on another dataset, its teacher fixed beforehand
    Study.of("cpu").ensemble_follow_up        # the same with KD given the RGB ensemble (`kd_reference`)
    Study.of("cpu").factorial_follow_up       # the confirmatory comparison crossed: {KD, TMKD} x both teachers

A variant (`config.TEACHER_VARIANTS`) is a teacher's training recipe as overrides of a
dataset's configuration. Its compute is counted in view-epochs, one forward and backward pass
over the training images of one view, including what it starts from:

    compute = [starts from the RGB teacher] * teacher.optim.epochs
              + multiview_optim.epochs * len(views)          (a multi-view-stage recipe)
    compute = len(ensemble) * teacher.optim.epochs           (an ensemble of RGB teachers)

How its teachers are evaluated is teacher_eval.py's; its report, its decision rules and the
confirmatory comparison's report are teacher_report.py's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        recipe; for a multi-view-stage recipe the fused teacher (with views ["rgb"], the one
        view's outputs); for an ensemble its RGB teachers averaged (`teachers.EnsembleTeacher`)."""
        if self.ensemble:
            return {**self.settings(), "student.teacher": "ensemble", "teacher.ensemble": list(self.ensemble)}
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
    `kd_variant`, with the teacher seed as the unit of replication. A study's
    `secondary_confirmatory` is one too (`name` "secondary_confirmatory"): the same comparison
    on another dataset, with the confirmatory comparison's teacher and fusion setting and no
    widening rule (`max_teachers` = its teacher seeds), checked by
    `teacher_report.check_secondary_decisions`. So is its `ensemble_follow_up` ("Follow-up: KD
    from the RGB ensemble"): the confirmatory comparison's TMKD runs against KD from an
    ensemble, and KD from the ensemble against KD from `kd_reference` (the confirmatory
    comparison's KD teacher) at the same student seeds (`teacher_report.check_follow_up_decisions`).
    So is its `factorial_follow_up` ("Follow-up: what earns TMKD's CIFAR-100 gain"): the
    confirmatory comparison `crossed`, each method also distilled from the other's teacher
    (`teacher_report.check_factorial_decisions`, `teacher_report.factorial_statistics`)."""

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
    name: str = "confirmatory"  # its study key, and the stem of its report's files
    kd_reference: TeacherVariant | None = None  # also compared: KD from kd_variant − KD from this teacher
    crossed: bool = False  # also run: KD from tmkd_variant and TMKD from kd_variant (a 2 x 2)

    @classmethod
    def from_plan(cls, profile: str, plan: dict[str, Any], store: str | None = None,
                  where: str | None = None, name: str = "confirmatory") -> "Confirmatory":
        """From a study's `confirmatory` (`secondary_confirmatory`, `ensemble_follow_up`,
        `factorial_follow_up`) entry (tmkd_core.study)."""
        tmkd = plan.get("tmkd_variant")

        def items(d):
            return None if d is None else tuple(sorted(d.items()))

        return cls(profile, plan["dataset"], TeacherVariant.named(plan["kd_variant"]),
                   TeacherVariant.named(tmkd) if tmkd else None, tuple(plan["teacher_seeds"]),
                   plan["students_per_teacher"], plan["seed_base"], plan["max_teachers"],
                   items(plan.get("fusion_candidate")), bool(plan.get("fusion_settled")),
                   items(plan.get("fusion_adopted")), store,
                   f"{where}[{name!r}]" if where else f"the study's {name} entry", name,
                   TeacherVariant.named(plan["kd_reference"]) if plan.get("kd_reference") else None,
                   bool(plan.get("crossed")))

    @property
    def secondary(self) -> bool:
        return self.name == "secondary_confirmatory"

    @property
    def label(self) -> str:
        """How messages and figures name it: "confirmatory", "secondary confirmatory", "ensemble follow-up",
        "factorial follow-up"."""
        return self.name.replace("_", " ").replace("follow up", "follow-up")

    @property
    def chosen(self) -> bool:
        return self.tmkd_variant is not None

    def student_seeds(self, teacher_seed: int) -> list[int]:
        """The student seeds under one teacher: seed_base + 10 t + i, never shared between teachers."""
        return [self.seed_base + 10 * teacher_seed + i for i in range(self.students_per_teacher)]

    def _run(self, method: str, variant: TeacherVariant, teacher_seed: int, seed: int, fusion=()):
        """One student run (study.RunSpec) distilled from `variant`'s teacher at `teacher_seed`."""
        from .study import RunSpec, frozen

        return RunSpec(self.dataset, method, seed, teacher_seed, frozen({**variant.student_overrides(), **dict(fusion)}),
                       f"teacher={variant.name}")

    def runs(self, teacher_seeds) -> list:
        """The student runs (study.RunSpec) at `teacher_seeds`: KD's always; TMKD's once its
        teacher is chosen and the fusion setting settled (with `fusion_adopted`)."""
        sides = [("KD", self.kd_variant, ())]
        if self.chosen and self.fusion_settled:
            sides.append(("TMKD", self.tmkd_variant, self.fusion_adopted or ()))
        return [self._run(method, v, t, s, fusion)
                for t in teacher_seeds for s in self.student_seeds(t) for method, v, fusion in sides]

    def reference_runs(self, teacher_seeds) -> list:
        """KD from `kd_reference` at the student seeds of `runs` (none without one)."""
        if self.kd_reference is None:
            return []
        return [self._run("KD", self.kd_reference, t, s) for t in teacher_seeds for s in self.student_seeds(t)]

    def crossed_runs(self, teacher_seeds) -> list:
        """When `crossed`, at the student seeds of `runs`: KD from TMKD's teacher (fused as TMKD's
        is, `fusion_adopted`) and TMKD from KD's, the two cells that make the comparison a 2 x 2."""
        if not (self.crossed and self.chosen and self.fusion_settled):
            return []
        return [self._run(method, v, t, s, fusion) for t in teacher_seeds for s in self.student_seeds(t)
                for method, v, fusion in (("KD", self.tmkd_variant, self.fusion_adopted or ()),
                                          ("TMKD", self.kd_variant, ()))]

    def all_runs(self, teacher_seeds) -> list:
        """Every run its report reads: `runs`, then `reference_runs` and `crossed_runs`."""
        return self.runs(teacher_seeds) + self.reference_runs(teacher_seeds) + self.crossed_runs(teacher_seeds)

    def tmkd_teacher_runs(self, teacher_seeds) -> list:
        """Once TMKD's teacher is chosen: one TMKD run (default fusion) per teacher seed, never
        run itself, that names the chosen teacher and its teacher-output cache at that seed; the
        fusion setting enters neither key, so the plan builds them while it is being checked."""
        if not self.chosen:
            return []
        return [self._run("TMKD", self.tmkd_variant, t, self.student_seeds(t)[0]) for t in teacher_seeds]

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
        from .protocol import widen_from_records

        if not (self.chosen and self.fusion_settled):
            return list(self.teacher_seeds)

        def teacher_mean(t: int) -> float | None:
            specs = self.runs([t])
            records = [self.finished_record(spec) for spec in specs]
            if None in records:
                return None
            acc = {(spec.method, spec.seed): r["test_acc"] for spec, r in zip(specs, records)}
            students = self.student_seeds(t)
            return 100 * sum(acc["TMKD", s] - acc["KD", s] for s in students) / len(students)

        return widen_from_records(list(self.teacher_seeds), teacher_mean, 2, self.max_teachers)

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
