"""A study, resolved once: what it runs, what it compares, and where its records are kept.

    study = Study.of("cpu")                      # a built-in study (config.PROFILE_PLANS)
    study = Study.load("mine.json")              # or one declared in a file of the same keys
    study.main_runs()                            # notebook 04's runs, the primary pairs widened
    study.primary                                # Comparison(dataset, reference, method, seeds)
    study.pilot, study.teacher_study, study.confirmatory    # and the comparisons after it (LATER_COMPARISONS)

A study is data (open_clip's "configurations are data"): the keys of a `config.PROFILE_PLANS`
entry, read here and nowhere else. A new study or comparison is declared in one place, a
JSON file of those keys (`Study.load`, `python -m tmkd_core.plan --study FILE`), without
touching code; the built-in studies are the entries of PROFILE_PLANS, each named after the
configuration profile it runs (`Study.profile`: the settings every run starts from).

The keys: `datasets`; `teacher_seeds` (student seed s reads teacher seed
`teacher_seeds[s mod len]`); `seeds` (the student seeds of every method); `methods` (default:
every method of config.METHODS); `per_dataset` (any of these changed for one dataset);
`primary` ({dataset, methods: [reference, method], seeds}: docs/protocol.md's primary
comparison, its seeds widened by the rule of `protocol.widen_pairs`); `pilot` (the validation
pilot, see `Pilot`); `ablation_seeds` and `ablation_groups` (notebook 05, groups of
config.ABLATIONS); `store` (the artefact store, relative to the project root); `teacher_study`,
`confirmatory`, `secondary_confirmatory`, `ensemble_follow_up` and `factorial_follow_up`
(tmkd_core.teacher_study; the ensemble follow-up's entry also takes `kd_reference`, the
factorial one's `crossed`); `profile` (a file's configuration profile; default: the study's
name).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .config import ABLATIONS, METHODS, PROFILE_PLANS, PROFILES, ExperimentConfig, dataset_config, method_config
from .settings import ConfigError
from .teacher_study import Confirmatory, TeacherStudy

STUDY_KEYS = ("profile", "datasets", "teacher_seeds", "seeds", "methods", "per_dataset", "primary", "pilot",
              "ablation_seeds", "ablation_groups", "store", "teacher_study", "confirmatory", "secondary_confirmatory",
              "ensemble_follow_up", "factorial_follow_up")
PER_DATASET_KEYS = ("teacher_seeds", "seeds", "methods")
PRIMARY_KEYS = ("dataset", "methods", "seeds")
COMPARISON_KEYS = ("dataset", "kd_variant", "tmkd_variant", "fusion_candidate", "fusion_settled", "fusion_adopted",
                   "teacher_seeds", "students_per_teacher", "seed_base", "max_teachers")
# the comparisons that read the confirmatory one's decisions, in their pre-registered order, and
# the keys only one of them takes
LATER_COMPARISONS = ("secondary_confirmatory", "ensemble_follow_up", "factorial_follow_up")
OWN_COMPARISON_KEYS = {"ensemble_follow_up": ("kd_reference",), "factorial_follow_up": ("crossed",)}
PILOT_KEYS = ("dataset", "teacher_seed", "seeds", "methods", "settled", "adopted", "baseline", "variants")


def _check_keys(entry: dict, known: tuple, where: str) -> None:
    unknown = set(entry) - set(known)
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {sorted(unknown)}; available: {', '.join(known)}")


class StudyError(ValueError):
    """A study's declaration is not one the plan can run (a bad key, method or dataset)."""


class PilotNotSettled(RuntimeError):
    """Final runs were asked for before the pilot's decisions were applied."""


@dataclass(frozen=True)
class RunSpec:
    """One student run of a study: a method on a dataset at a student seed, reading the
    teachers of `teacher_seed`, with extra `overrides` (an ablation or a method point)."""

    dataset: str
    method: str
    seed: int
    teacher_seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()
    setting: str = ""  # "group=label" of an ablation or a pilot variant; "" for the method itself

    def config(self, profile: str) -> ExperimentConfig:
        """The run's configuration in the configuration profile `profile` (`Study.profile`)."""
        base = dataset_config(profile, self.dataset)
        return method_config(base, self.method, {**dict(self.overrides), "seed": self.seed,
                                                 "teacher.seed": self.teacher_seed})

    @property
    def title(self) -> str:
        setting = f" [{self.setting}]" if self.setting else ""
        return f"{self.method}{setting} seed {self.seed} ({self.dataset}, teacher seed {self.teacher_seed})"


def frozen(overrides) -> tuple:
    """Overrides as a sorted tuple of items, lists as tuples (a RunSpec is hashable)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(overrides).items()))


@dataclass(frozen=True)
class Comparison:
    """A paired comparison: `method` − `reference` on `dataset`, pair by student seed."""

    dataset: str
    reference: str
    method: str
    seeds: tuple[int, ...]  # before the widening rule


@dataclass(frozen=True)
class Pilot:
    """docs/protocol.md's validation pilot: KD and TMKD at `seeds` on one teacher, and each
    method's `variants` (method -> label -> overrides), on validation only. `baseline` pins
    what the variants are compared with, so that adopting a variant into the study's settings
    leaves the pilot as it was run. Until `settled` (set in the commit that applies its
    decisions), the plan runs the pilot alone; `adopted` lists what the rule adopted
    ("TMKD [views=detail]"), checked against the pilot's records (protocol.check_pilot_decisions)."""

    dataset: str
    teacher_seed: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    settled: bool = False
    adopted: tuple[str, ...] = ()
    baseline: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def runs(self) -> list[RunSpec]:
        base = {**self.baseline, "score_test": False}  # validation only: the test split stays unread
        runs = [RunSpec(self.dataset, m, s, self.teacher_seed, frozen(base)) for m in self.methods for s in self.seeds]
        for method, variants in self.variants.items():
            for label, overrides in variants.items():
                runs += [RunSpec(self.dataset, method, s, self.teacher_seed, frozen({**base, **overrides}), label)
                         for s in self.seeds]
        return runs


def resolve_store(declared: str | Path | None) -> Path | None:
    """A declared artefact store: relative to the project root (where it is kept in git), or absolute."""
    if not declared:
        return None
    from .report import find_root

    return Path(declared) if Path(declared).is_absolute() else find_root() / declared


@dataclass(frozen=True)
class Study:
    """One study: its datasets and seeds, its runs, its comparisons, its store. Built once
    (`Study.of`, `Study.load`, `Study.from_plan`); the plan, the reports and the notebooks ask it."""

    name: str
    profile: str  # the configuration profile every run starts from (config.PROFILES)
    datasets: tuple[str, ...]
    per_dataset: dict[str, dict[str, tuple]]  # dataset -> teacher_seeds, seeds, methods
    primary: Comparison | None = None
    pilot: Pilot | None = None
    ablation_seeds: tuple[int, ...] = ()
    ablation_groups: tuple[str, ...] = ()
    declared_store: str | None = None  # as declared: relative to the project root, or absolute
    teacher_study: TeacherStudy | None = None
    confirmatory: Confirmatory | None = None
    secondary_confirmatory: Confirmatory | None = None  # the same comparison on another dataset, after the rest
    ensemble_follow_up: Confirmatory | None = None  # TMKD's confirmatory runs against KD from an ensemble, after those
    factorial_follow_up: Confirmatory | None = None  # the confirmatory comparison crossed (2 x 2), after those
    where: str = ""  # where it is declared: "PROFILE_PLANS['cpu']" or the study file's path
    file: Path | None = None  # the study file (Study.load), None for a built-in study

    @property
    def store(self) -> Path | None:
        """The artefact store (resolved when asked: a study is built anywhere, its store found
        from the project root only when it is read)."""
        return resolve_store(self.declared_store)

    @property
    def command(self) -> str:
        """How the plan's command names this study."""
        return f"--study {self.file}" if self.file else f"--profile {self.name}"

    # --- building one ---------------------------------------------------------------------------

    @classmethod
    def of(cls, name: str | Path) -> "Study":
        """A built-in study, the entry `name` of config.PROFILE_PLANS, or a study file
        (`name` ending in .json, `load`): what a notebook's `profile` parameter names."""
        if str(name).endswith(".json"):
            return cls.load(name)
        if name not in PROFILE_PLANS:
            raise StudyError(f"unknown study {name!r}; available: {', '.join(PROFILE_PLANS)} "
                             f"(or a study file: Study.load / --study FILE.json)")
        return cls.from_plan(name, PROFILE_PLANS[name])

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        """A study declared in a JSON file of PROFILE_PLANS's keys, named after the file."""
        path = Path(path)
        try:
            plan = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StudyError(f"cannot read the study file {path}: {exc}") from None
        return cls.from_plan(path.stem, plan, where=str(path), file=path)

    @classmethod
    def from_plan(cls, name: str, plan: dict[str, Any], where: str | None = None, file: Path | None = None
                  ) -> "Study":
        """The study a plan declares (the keys of the module docstring), checked: a missing or
        unknown key, dataset, method, ablation group or teacher variant is named, with where it
        is declared and what is available (StudyError)."""
        where = where or f"PROFILE_PLANS[{name!r}]"
        try:
            return cls._from_plan(name, copy.deepcopy(plan), where, file)
        except KeyError as exc:  # a missing key of a nested entry, or an unknown teacher variant
            raise StudyError(f"{where}: {exc.args[0] if exc.args else exc}" if " " in str(exc) else
                             f"{where}: an entry lacks the key {exc}; see tmkd_core/study.py's docstring "
                             f"and config.PROFILE_PLANS['cpu'] for a complete one") from None

    @classmethod
    def _from_plan(cls, name: str, plan: dict[str, Any], where: str, file: Path | None) -> "Study":
        unknown = set(plan) - set(STUDY_KEYS)
        if unknown:
            raise StudyError(f"{where}: unknown key(s) {sorted(unknown)}; a study has: {', '.join(STUDY_KEYS)}")
        profile = plan.get("profile", name)
        if profile not in PROFILES:
            raise StudyError(f"{where}: profile {profile!r} is not a configuration profile; available: "
                             f"{', '.join(PROFILES)} (a study file names one with \"profile\")")
        for needed, example in (("datasets", '["cifar10"]'), ("seeds", "[0, 1, 2]")):
            if not plan.get(needed):
                raise StudyError(f"{where}: a study needs \"{needed}\", e.g. {example}")
        datasets = tuple(plan["datasets"])
        for ds in datasets:
            try:
                dataset_config(profile, ds)
            except ConfigError as exc:
                raise StudyError(f"{where}: dataset {ds!r}: {exc}") from None
        stray = set(plan.get("per_dataset", {})) - set(datasets)
        if stray:
            raise StudyError(f"{where}['per_dataset']: {sorted(stray)} not among the study's datasets "
                             f"({', '.join(datasets)})")
        per_dataset = {}
        for ds in datasets:
            changed = plan.get("per_dataset", {}).get(ds, {})
            wrong = set(changed) - set(PER_DATASET_KEYS)
            if wrong:
                raise StudyError(f"{where}['per_dataset'][{ds!r}]: unknown key(s) {sorted(wrong)}; "
                                 f"available: {', '.join(PER_DATASET_KEYS)}")
            resolved = {"teacher_seeds": tuple(changed.get("teacher_seeds", plan.get("teacher_seeds", [0]))),
                        "seeds": tuple(changed.get("seeds", plan.get("seeds", []))),
                        "methods": tuple(changed.get("methods", plan.get("methods", list(METHODS))))}
            bad = [m for m in resolved["methods"] if m not in METHODS]
            if bad or not resolved["methods"]:
                raise StudyError(f"{where}: unknown method(s) {bad} for {ds}; available: {', '.join(METHODS)}"
                                 if bad else f"{where}: no method for {ds}; available: {', '.join(METHODS)}")
            if not resolved["teacher_seeds"] or not resolved["seeds"]:
                raise StudyError(f"{where}: {ds} needs at least one teacher seed and one student seed")
            per_dataset[ds] = resolved
        primary = None
        if plan.get("primary"):
            p = plan["primary"]
            _check_keys(p, PRIMARY_KEYS, f"{where}['primary']")
            if p.get("dataset") not in datasets:
                raise StudyError(f"{where}['primary']: its dataset {p.get('dataset')!r} is not one of the study's "
                                 f"({', '.join(datasets)})")
            methods = p.get("methods", [])
            if len(methods) != 2 or not set(methods) <= set(METHODS):
                raise StudyError(f"{where}['primary']: needs two methods [reference, method] of config.METHODS "
                                 f"({', '.join(METHODS)}); it has {methods}")
            if not p.get("seeds"):
                raise StudyError(f"{where}['primary']: needs \"seeds\", e.g. [100, 101, 102, 103]")
            primary = Comparison(p["dataset"], p["methods"][0], p["methods"][1], tuple(p["seeds"]))
        pilot = None
        if plan.get("pilot"):
            p = plan["pilot"]
            _check_keys(p, PILOT_KEYS, f"{where}['pilot']")
            pilot = Pilot(p["dataset"], p["teacher_seed"], tuple(p["seeds"]), tuple(p["methods"]),
                          bool(p.get("settled")), tuple(p.get("adopted", [])), p.get("baseline", {}),
                          p.get("variants", {}))
            unknown = set(pilot.methods) - set(METHODS) | set(pilot.variants) - set(pilot.methods)
            if pilot.dataset not in datasets or unknown:
                raise StudyError(f"{where}['pilot']: its dataset must be one of the study's ({', '.join(datasets)}) "
                                 f"and its methods and variants' methods among config.METHODS and its own methods; "
                                 f"it has {pilot.dataset!r}, unknown {sorted(unknown)}")
        groups = tuple(plan.get("ablation_groups") or ABLATIONS)
        bad = [g for g in groups if g not in ABLATIONS]
        if bad:
            raise StudyError(f"{where}: unknown ablation group(s) {bad}; available: {', '.join(ABLATIONS)}")
        store = plan.get("store") or None
        study = TeacherStudy.from_plan(profile, plan["teacher_study"]) if plan.get("teacher_study") else None
        for key in ("confirmatory",) + LATER_COMPARISONS:
            if plan.get(key):
                _check_keys(plan[key], COMPARISON_KEYS + OWN_COMPARISON_KEYS.get(key, ()), f"{where}[{key!r}]")
                for flag in ("fusion_settled", "crossed"):  # a string such as "no" would read as true
                    if flag in plan[key] and not isinstance(plan[key][flag], bool):
                        raise StudyError(f"{where}[{key!r}][{flag!r}] must be true or false; it has "
                                         f"{plan[key][flag]!r}")
        conf = (Confirmatory.from_plan(profile, plan["confirmatory"], store, where)
                if plan.get("confirmatory") else None)
        later = {}  # the comparisons that read the confirmatory one's decisions
        for key in LATER_COMPARISONS:
            if not plan.get(key):
                continue
            if conf is None:
                raise StudyError(f"{where}[{key!r}]: this comparison takes its teacher and fusion setting from the "
                                 "study's \"confirmatory\" entry, which it lacks")
            later[key] = Confirmatory.from_plan(profile, plan[key], store, where, key)
            if later[key].dataset not in datasets:
                raise StudyError(f"{where}[{key!r}]: its dataset {later[key].dataset!r} is not one of the study's "
                                 f"({', '.join(datasets)})")
        return cls(name, profile, datasets, per_dataset, primary, pilot, tuple(plan.get("ablation_seeds", ())),
                   groups, store, study, conf, where=where, file=file, **later)

    def with_store(self, store: Path | None) -> "Study":
        """The same study reading and keeping its artefacts in `store` (None: no store): its
        finished runs are then looked up there too (the pilot's check, the widening rules, the reports)."""
        from dataclasses import replace

        declared = None if store is None else str(Path(store).resolve())
        comparisons = {key: replace(c, declared_store=declared) if c else None
                       for key in ("confirmatory",) + LATER_COMPARISONS for c in [getattr(self, key)]}
        return replace(self, declared_store=declared, **comparisons)

    @property
    def confirmatory_comparisons(self) -> list[Confirmatory]:
        """The confirmatory comparison and those after it (LATER_COMPARISONS), those it
        declares, in their pre-registered order."""
        return [c for key in ("confirmatory",) + LATER_COMPARISONS if (c := getattr(self, key)) is not None]

    # --- what it runs ---------------------------------------------------------------------------

    def teacher_seeds(self, dataset: str) -> list[int]:
        return list(self._of(dataset)["teacher_seeds"])

    def seeds(self, dataset: str) -> list[int]:
        return list(self._of(dataset)["seeds"])

    def methods(self, dataset: str) -> list[str]:
        return list(self._of(dataset)["methods"])

    def _of(self, dataset: str) -> dict:
        if dataset not in self.per_dataset:
            raise StudyError(f"the {self.name} study has no dataset {dataset!r}; it has: {', '.join(self.datasets)}")
        return self.per_dataset[dataset]

    def dataset_config(self, dataset: str, overrides: dict | None = None) -> ExperimentConfig:
        """The study's configuration of one dataset (its profile's per-dataset settings applied)."""
        return dataset_config(self.profile, dataset, overrides)

    def config(self, spec: RunSpec) -> ExperimentConfig:
        return spec.config(self.profile)

    def teacher_seed_of(self, dataset: str, seed: int) -> int:
        """The teacher seed a student seed reads: `teacher_seeds[seed mod len]`, a function of
        the seed alone, so that a seed pairs with the same teachers in every table; consecutive
        seeds take the teacher seeds in turn."""
        seeds = self.teacher_seeds(dataset)
        return seeds[seed % len(seeds)]

    def runs(self, dataset: str, methods: Iterable[str], seeds: Iterable[int], overrides=(),
             setting: str = "") -> list[RunSpec]:
        seeds = list(seeds)
        return [RunSpec(dataset, m, s, self.teacher_seed_of(dataset, s), frozen(overrides), setting)
                for m in methods for s in seeds]

    def teacher_configs(self, datasets: Iterable[str] | None = None) -> list[ExperimentConfig]:
        """Notebook 02: each dataset's configuration at each of its teacher seeds."""
        return [self.dataset_config(name, {"teacher.seed": t}) for name in (datasets or self.datasets)
                for t in self.teacher_seeds(name)]

    def main_runs(self, datasets: Iterable[str] | None = None, seeds: Iterable[int] | None = None,
                  settled_only: bool = True) -> list[RunSpec]:
        """Notebook 04: every method of each dataset at its seeds, and for the primary dataset
        the primary comparison's methods at the primary seeds (the first seeds are shared: the
        secondary rows pair with the same reference runs). PilotNotSettled while the pilot has
        not decided (`settled_only=False` lists them anyway)."""
        self.check_settled(settled_only)
        out: list[RunSpec] = []
        for name in datasets or self.datasets:
            runs = self.runs(name, self.methods(name), self.seeds(name) if seeds is None else seeds)
            if self.primary and self.primary.dataset == name and seeds is None:
                p = self.primary
                runs += [r for r in self.runs(name, [p.reference, p.method], self.primary_seeds()) if r not in runs]
            out += runs
        return out

    def ablation_runs(self, dataset: str | None = None, seeds: Iterable[int] | None = None,
                      groups: Iterable[str] | None = None, settled_only: bool = True
                      ) -> tuple[list[RunSpec], list[RunSpec]]:
        """Notebook 05: (KD runs, TMKD runs of every ablation setting) on one dataset."""
        self.check_settled(settled_only)
        dataset = dataset or self.datasets[0]
        seeds = list(self.ablation_seeds if seeds is None else seeds)
        kd = self.runs(dataset, ["KD"], seeds)
        tmkd = [r for g in (groups or self.ablation_groups) for label, o in ABLATIONS[g].items()
                for r in self.runs(dataset, ["TMKD"], seeds, o, f"{g}={label}")]
        return kd, tmkd

    def pilot_runs(self) -> list[RunSpec]:
        """The validation pilot's runs; empty if the study has none."""
        return self.pilot.runs() if self.pilot else []

    @property
    def pilot_settled(self) -> bool:
        """Whether the final runs may start: no pilot, or its decisions applied (`settled`)."""
        return self.pilot is None or self.pilot.settled

    def unsettled(self) -> PilotNotSettled:
        return PilotNotSettled(f"the {self.name} study's final runs wait for its pilot: run it (`python -m "
                               f"tmkd_core.plan {self.command}`), then settle it as docs/protocol.md, "
                               f"'Settling the pilot', says ({self.where}['pilot'])")

    def check_settled(self, settled_only: bool = True) -> None:
        """PilotNotSettled unless the pilot has settled and its decisions hold (with `settled_only`)."""
        if settled_only:
            if not self.pilot_settled:
                raise self.unsettled()
            from . import protocol

            protocol.check_pilot_decisions(self)

    def primary_seeds(self) -> list[int]:
        """The primary comparison's student seeds: the study's (sized by the pilot), widened
        by `protocol.widen_pairs` from the test accuracies of the finished pairs."""
        from .protocol import widen_from_records

        p = self.primary

        def diff(seed: int) -> float | None:
            pair = [self.finished_record(spec) for spec in self.runs(p.dataset, [p.method, p.reference], [seed])]
            return None if None in pair else 100 * (pair[0]["test_acc"] - pair[1]["test_acc"])

        return widen_from_records(list(p.seeds), diff, len(self.teacher_seeds(p.dataset)))

    def is_primary(self, spec: RunSpec) -> bool:
        """Whether the run is one of the primary comparison's (its seeds hold every final seed
        from the first primary seed on)."""
        p = self.primary
        return bool(p) and spec.dataset == p.dataset and spec.method in (p.reference, p.method) and \
            not spec.overrides and spec.seed >= min(p.seeds)

    def in_plan_order(self, specs: list[RunSpec]) -> list[RunSpec]:
        """The primary comparison's runs first, in seed order, a pair's two runs side by side;
        then the runs of one dataset and teacher seed together."""
        order = {name: i for i, name in enumerate(self.datasets)}
        return sorted(specs, key=lambda r: (0, r.seed, 0) if self.is_primary(r)
                      else (1, order.get(r.dataset, len(order)), r.teacher_seed))

    # --- its records ----------------------------------------------------------------------------

    def finished_record(self, spec: RunSpec) -> dict | None:
        """`spec`'s run record if the run has finished: from the data root, else from the
        study's store (a fresh clone, before the plan has restored it); None if neither has it."""
        return finished_record(spec, self.profile, self.store)

    @property
    def figures_dir(self) -> str:
        """Where its reports go unless told: the committed figures/ for the built-in cpu study,
        else build/<name>/figures (a study file named cpu.json included)."""
        return "figures" if self.name == "cpu" and self.file is None else f"build/{self.name}/figures"


def finished_record(spec: RunSpec, profile: str, store: Path | None) -> dict | None:
    """`spec`'s run record (in configuration profile `profile`) if the run has finished: from
    the data root, else from `store`; None if neither has it."""
    from .experiment import Pipeline
    from .store import in_store

    pipe = Pipeline(spec.config(profile))
    if pipe.run_path.exists():
        return pipe.run_student()
    kept = in_store(pipe.run_path, pipe.cfg, store) if store else None
    return pipe._read_record(kept) if kept is not None and kept.exists() else None
