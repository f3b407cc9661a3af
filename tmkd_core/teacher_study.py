"""The teacher study and the confirmatory comparison (docs/protocol.md, "Amendment: powerful
teachers"), each resolved once from its profile into one typed object.

    study = TeacherStudy.of("cpu")           # which teacher recipes, on which teacher seeds
    study.teachers()                          # every (dataset, variant, seed) and its configurations
    conf = Confirmatory.of("cpu")             # KD from `kd_variant` vs TMKD from `tmkd_variant`
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
from typing import Any

from .config import PROFILE_PLANS, TEACHER_VARIANTS, ExperimentConfig, dataset_config, method_config, with_overrides

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
    """docs/protocol.md's teacher study of a profile: its variants at each dataset's teacher seeds."""

    profile: str
    teacher_seeds: tuple[tuple[str, tuple[int, ...]], ...]  # (dataset, seeds), in the profile's order
    variants: tuple[TeacherVariant, ...]
    reference: TeacherVariant  # the compute-matched RGB teacher
    candidates: tuple[TeacherVariant, ...]  # the multi-view variants the confirmatory comparison chooses from

    @classmethod
    def of(cls, profile: str) -> "TeacherStudy | None":
        """The profile's study (`PROFILE_PLANS[profile]['teacher_study']`), or None."""
        plan = PROFILE_PLANS.get(profile, {}).get("teacher_study")
        if not plan:
            return None
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

    profile: str
    dataset: str
    kd_variant: TeacherVariant
    tmkd_variant: TeacherVariant | None  # None until the teacher study's choice is committed
    teacher_seeds: tuple[int, ...]  # before the widening rule
    students_per_teacher: int
    seed_base: int
    max_teachers: int

    @classmethod
    def of(cls, profile: str) -> "Confirmatory | None":
        plan = PROFILE_PLANS.get(profile, {}).get("confirmatory")
        if not plan:
            return None
        tmkd = plan.get("tmkd_variant")
        return cls(profile, plan["dataset"], TeacherVariant.named(plan["kd_variant"]),
                   TeacherVariant.named(tmkd) if tmkd else None, tuple(plan["teacher_seeds"]),
                   plan["students_per_teacher"], plan["seed_base"], plan["max_teachers"])

    @property
    def chosen(self) -> bool:
        return self.tmkd_variant is not None

    def student_seeds(self, teacher_seed: int) -> list[int]:
        """The student seeds under one teacher: seed_base + 10 t + i, never shared between teachers."""
        return [self.seed_base + 10 * teacher_seed + i for i in range(self.students_per_teacher)]

    def runs(self, teacher_seeds) -> list:
        """The student runs (plan.RunSpec) at `teacher_seeds`: KD's always, TMKD's once chosen."""
        from .plan import RunSpec, _frozen

        sides = [("KD", self.kd_variant)] + ([("TMKD", self.tmkd_variant)] if self.chosen else [])
        return [RunSpec(self.dataset, method, s, t, _frozen(v.student_overrides()), f"teacher={v.name}")
                for t in teacher_seeds for s in self.student_seeds(t) for method, v in sides]
