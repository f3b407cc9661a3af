"""A profile's plan: every teacher, teacher-output cache and student run its notebooks read,
run by worker processes in dependency order, with live progress and an estimate of the
time left for the whole plan.

    python -m tmkd_core.plan --profile cpu --jobs 2        # what `make reproduce` runs first
    python -m tmkd_core.plan --profile cpu --dry-run       # the tasks and their estimated cost

The runs are enumerated here once (`pilot_runs`, `main_runs`, `ablation_runs`,
`teacher_configs`) from `config.PROFILE_PLANS`; the notebooks read the same lists, so that
after the plan has run they find every artefact and train nothing. The primary comparison's
pairs come first; whenever they have all finished, docs/protocol.md's widening rule
(`primary_seeds`) may add pairs, which the plan runs next. After them, a free worker takes
the task with the longest chain of work waiting on it (`next_task`: a teacher whose cache
and runs would otherwise finish last), then the rest in plan order. A task is one stage of
one configuration (`Pipeline.BUILT_STAGES`); it is done when its artefact exists, so an
interrupted plan started again skips what finished and resumes the rest from their
checkpoints. Each worker runs with `threads` = the machine's threads // jobs: on 2 cores,
two one-thread runs side by side trained 1.48x as many images per second as one
two-thread run for resnet8, 1.15x for resnet14. A task that can only run alone (the first
teacher, on which everything waits) takes every free thread instead (thread counts enter
no key, see experiment.py).

Where a task runs is the executor's (`executors.py`): worker processes of this machine
(`--executor local`, the default), or the workers of a Dask cluster (`--executor dask`: a
LocalCluster here, Slurm or PBS worker jobs with `--cluster slurm|pbs`, or a running
scheduler with `--scheduler`; docs/cluster.md). Each teacher and student run writes its
training curves as TensorBoard event files next to its checkpoint or record (`events.py`).

A profile may name an artefact `store` (the cpu profile: `artefacts/cpu/`, kept in git): the
plan copies every finished teacher checkpoint and run record there, and copies what a data
root lacks back from it before it starts, so that a fresh clone (or a machine whose `data/`
was wiped) continues the plan where it stopped, and every table can be recomputed from the
committed records. A task still training is kept there as its last epoch's checkpoint
(`partial/`), so that it resumes on another machine; `--prune-store` removes those that no
unfinished task resumes from. Teacher-output caches are rebuilt, not stored (hundreds of MB).
Each start's output is kept there too (`logs/`), and `--dry-run` adds up their wall time.

Time left is estimated from floating-point operations (`forward_flops`, counted once per
architecture) at a rate measured on this machine when the plan starts, then corrected by
the ratio of measured to estimated time of the tasks that finish, and from the start by
the training times that finished teachers and runs record (`train_time_s`): a student's
data pipeline and loss make it several times slower than its operations alone. The time
left is those estimates scheduled on the workers as the plan runs them (`finish_seconds`).
"""
from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import math
import multiprocessing as mp
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .config import (ABLATIONS, METHODS, PROFILE_PLANS, ExperimentConfig, config_to_dict, dataset_config,
                     method_config, plan_value, profile_plan)
from . import executors
from .executors import Executor, LocalExecutor
from .experiment import Pipeline
from .teacher_study import Confirmatory, DecisionMismatch, TeacherStudy
from .utils import atomic_copy


# --- the runs of a profile ---------------------------------------------------------------------

class PilotNotSettled(RuntimeError):
    """Final runs were asked for before the pilot's decisions were applied."""


class PlanRunning(RuntimeError):
    """Another plan of the profile runs on the data root (`hold_plan_lock`)."""


PLAN_RUNNING = 4  # run_plan's and the command's exit status when another plan holds the lock


@dataclass(frozen=True)
class RunSpec:
    """One student run of the plan: a method on a dataset at a student seed, reading the
    teachers of `teacher_seed`, with extra `overrides` (an ablation or a method point)."""

    dataset: str
    method: str
    seed: int
    teacher_seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()
    setting: str = ""  # "group=label" of an ablation or a pilot variant; "" for the method itself

    def config(self, profile: str) -> ExperimentConfig:
        base = dataset_config(profile, self.dataset)
        return method_config(base, self.method, {**dict(self.overrides), "seed": self.seed,
                                                 "teacher.seed": self.teacher_seed})


def teacher_seed_of(profile: str, dataset: str, seed: int) -> int:
    """The teacher seed a student seed reads: `teacher_seeds[seed mod len]`, a function of
    the seed alone, so that a seed pairs with the same teachers in every table; consecutive
    seeds take the teacher seeds in turn."""
    seeds = plan_value(profile, "teacher_seeds", dataset)
    return seeds[seed % len(seeds)]


def _frozen(overrides) -> tuple:
    """Overrides as a sorted tuple of items, lists as tuples (a RunSpec is hashable)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in dict(overrides).items()))


def _runs(profile, dataset, methods, seeds, overrides=(), setting="") -> list[RunSpec]:
    return [RunSpec(dataset, m, s, teacher_seed_of(profile, dataset, s), _frozen(overrides), setting)
            for m in methods for s in seeds]


def _unsettled(profile: str) -> PilotNotSettled:
    return PilotNotSettled(f"the {profile} profile's final runs wait for its pilot: run it (`python -m tmkd_core.plan "
                           f"--profile {profile}`), then settle it as docs/protocol.md, 'Settling the pilot', says")


def _check_settled(profile: str, settled_only: bool) -> None:
    if settled_only:
        if not pilot_settled(profile):
            raise _unsettled(profile)
        check_pilot_decisions(profile)


def main_runs(profile: str, datasets: Iterable[str] | None = None, seeds: Iterable[int] | None = None,
              settled_only: bool = True) -> list[RunSpec]:
    """Notebook 04: every method of each dataset (`methods`) at its `seeds`, and for the
    primary dataset the primary comparison's methods at the primary seeds (the first seeds
    are shared: the secondary rows pair with the same KD runs). PilotNotSettled while the
    profile's pilot has not decided (`settled_only=False` lists them anyway)."""
    _check_settled(profile, settled_only)
    out: list[RunSpec] = []
    for name in profile_plan(profile, "datasets", datasets):
        methods = plan_value(profile, "methods", name) or list(METHODS)
        runs = _runs(profile, name, methods, plan_value(profile, "seeds", name) if seeds is None else list(seeds))
        primary = plan_value(profile, "primary", name)
        if primary and seeds is None:
            runs += [r for r in _runs(profile, name, primary["methods"], primary_seeds(profile)) if r not in runs]
        out += runs
    return out


def widen_pairs(seeds: list[int], diffs: dict[int, float], n_teachers: int, most: int | None = None,
                half_width: float = 0.5) -> list[int]:
    """docs/protocol.md's widening rule: while every seed has its paired difference in
    `diffs` (seed -> points) and their 95% half-width t(0.975, n-1) sd / sqrt(n) exceeds
    `half_width`, `n_teachers` more seeds continuing from the last, up to `most` (MAX_PAIRS).
    It reads the spread of the differences only, never their mean."""
    from .report import mean_std, t_quantile_975

    seeds, most = list(seeds), MAX_PAIRS if most is None else most
    while len(seeds) < most and all(s in diffs for s in seeds):
        sd = mean_std(diffs[s] for s in seeds)[1]
        if t_quantile_975(len(seeds) - 1) * sd / math.sqrt(len(seeds)) <= half_width:
            break
        seeds += list(range(max(seeds) + 1, max(seeds) + 1 + max(n_teachers, 1)))[: most - len(seeds)]
    return seeds


def primary_seeds(profile: str) -> list[int]:
    """The primary comparison's student seeds: the profile's (`primary.seeds`, sized by the
    pilot), widened by `widen_pairs` from the test accuracies of the finished pairs."""
    primary = plan_value(profile, "primary")
    name, seeds = primary["dataset"], primary["seeds"]
    method, reference = primary["methods"][::-1]
    diffs: dict[int, float] = {}
    while True:  # a widening step reads the pairs it added: they may have finished too
        for seed in set(seeds) - set(diffs):
            pair = [finished_record(spec, profile) for spec in _runs(profile, name, [method, reference], [seed])]
            if None not in pair:
                diffs[seed] = 100 * (pair[0]["test_acc"] - pair[1]["test_acc"])
        wider = widen_pairs(seeds, diffs, len(plan_value(profile, "teacher_seeds", name)))
        if wider == seeds:
            return seeds
        seeds = wider


def confirmatory_teacher_seeds(conf: Confirmatory) -> list[int]:
    """The confirmatory comparison's teacher seeds: the profile's, widened by `widen_pairs`
    (two teachers at a time, up to `max_teachers`) from the teacher-level mean differences
    TMKD - KD of the teachers whose runs have all finished (docs/protocol.md, "Amendment:
    powerful teachers"). Until TMKD's final runs may start (its teacher chosen and the fusion
    setting settled), the profile's seeds."""
    seeds = list(conf.teacher_seeds)
    if not (conf.chosen and conf.fusion_settled):
        return seeds
    means: dict[int, float] = {}
    while True:  # a widening step reads the teachers it added: they may have finished too
        for t in set(seeds) - set(means):
            specs = conf.runs([t])
            records = [finished_record(spec, conf.profile) for spec in specs]
            if None not in records:
                acc = {(spec.method, spec.seed): r["test_acc"] for spec, r in zip(specs, records)}
                students = conf.student_seeds(t)
                means[t] = 100 * sum(acc["TMKD", s] - acc["KD", s] for s in students) / len(students)
        wider = widen_pairs(seeds, means, 2, conf.max_teachers)
        if wider == seeds:
            return seeds
        seeds = wider


def profile_store(profile: str) -> Path | None:
    """The profile's artefact store (`store`, relative to the project root), or None."""
    from .report import find_root

    store = plan_value(profile, "store")
    return find_root() / store if store else None


def finished_record(spec: RunSpec, profile: str) -> dict | None:
    """`spec`'s run record if the run has finished: from the data root, else from the
    profile's store (a fresh clone, before the plan has restored it); None if neither has it."""
    pipe = Pipeline(spec.config(profile))
    if pipe.run_path.exists():
        return pipe.run_student()
    store = profile_store(profile)
    kept = in_store(pipe.run_path, pipe.cfg, store) if store else None
    return pipe._read_record(kept) if kept is not None and kept.exists() else None


def in_store(path: Path, cfg: ExperimentConfig, store: Path, folder: str = "") -> Path:
    """Where the store keeps a file of the data root (`path`, under `cfg.data.root`)."""
    return Path(store) / folder / path.relative_to(Path(cfg.data.root))


def ablation_runs(profile: str, dataset: str | None = None, seeds: Iterable[int] | None = None,
                  groups: Iterable[str] | None = None, settled_only: bool = True) -> tuple[list[RunSpec], list[RunSpec]]:
    """Notebook 05: (KD runs, TMKD runs of every ablation setting) on one dataset."""
    _check_settled(profile, settled_only)
    dataset = dataset or profile_plan(profile, "datasets")[0]
    seeds = profile_plan(profile, "ablation_seeds", seeds)
    groups = list(groups or plan_value(profile, "ablation_groups") or ABLATIONS)
    kd = _runs(profile, dataset, ["KD"], seeds)
    tmkd = [r for g in groups for label, o in ABLATIONS[g].items()
            for r in _runs(profile, dataset, ["TMKD"], seeds, o, f"{g}={label}")]
    return kd, tmkd


def pilot_runs(profile: str) -> list[RunSpec]:
    """The validation pilot of docs/protocol.md: KD and TMKD at the pilot seeds, and each
    method's variants to settle (`variants`: method -> label -> overrides); empty if the
    profile has none."""
    pilot = plan_value(profile, "pilot")
    if not pilot:
        return []
    name, teacher = pilot["dataset"], pilot["teacher_seed"]
    base = {**pilot.get("baseline", {}), "score_test": False}  # validation only: the test split stays unread
    runs = [RunSpec(name, m, s, teacher, _frozen(base)) for m in pilot["methods"] for s in pilot["seeds"]]
    for method, variants in pilot.get("variants", {}).items():
        for label, overrides in variants.items():
            runs += [RunSpec(name, method, s, teacher, _frozen({**base, **overrides}), label) for s in pilot["seeds"]]
    return runs


def pilot_settled(profile: str) -> bool:
    """Whether the final runs may start: the profile has no pilot, or its decisions are
    applied (`settled`)."""
    pilot = plan_value(profile, "pilot")
    return not pilot or bool(pilot.get("settled"))


def check_pilot_decisions(profile: str) -> None:
    """For a settled pilot: that every pilot run is there, KD reached KD_FLOOR, the variants
    the rule adopted are the profile's `adopted` list, and each method's final settings hold
    exactly the adopted variants (and the pinned baseline elsewhere). PilotNotSettled if not."""
    from .experiment import get_path

    pilot = plan_value(profile, "pilot")
    if not pilot or not pilot.get("settled"):
        return
    summary = pilot_summary(profile)
    if summary is None:
        raise PilotNotSettled(f"the {profile} pilot is marked settled but {_pilot_progress(profile)}")
    decided = summary[1]
    if not decided["kd_reaches_floor"]:
        raise PilotNotSettled(f"the {profile} pilot's KD reached {decided['kd_val']:.2f}% validation, under "
                              f"{KD_FLOOR}%: raise the students' epochs and rerun the pilot (docs/protocol.md)")
    adopted = sorted(label for label, yes in decided["adopted"].items() if yes)
    if adopted != sorted(pilot.get("adopted", [])):
        raise PilotNotSettled(f"the {profile} pilot's rule adopted {adopted}, the profile says "
                              f"{sorted(pilot.get('adopted', []))} (PROFILE_PLANS[{profile!r}]['pilot']['adopted'])")
    for method, variants in pilot.get("variants", {}).items():
        final = RunSpec(pilot["dataset"], method, 0, pilot["teacher_seed"]).config(profile)
        for label, overrides in variants.items():
            chosen = f"{method} [{label}]" in adopted
            for key, value in overrides.items():
                want = value if chosen else pilot["baseline"].get(key, get_path(final, key))
                if get_path(final, key) != want:
                    raise PilotNotSettled(f"{method} [{label}] was {'adopted' if chosen else 'not adopted'}, but the "
                                          f"{profile} profile's {method} has {key} = {get_path(final, key)!r}, not "
                                          f"{want!r}")


def _pilot_progress(profile: str) -> str:
    runs = pilot_runs(profile)
    done = sum(finished_record(s, profile) is not None for s in runs)
    drift = store_drift(profile) if done < len(runs) else []
    packages = any("frozen teacher" not in d for d in drift)
    return f"{done} of its {len(runs)} runs are finished" + (
        f"; this environment differs from the one that made the store's run records, in what enters their "
        f"keys or numbers ({'; '.join(drift)})" + (": install the pinned packages (make setup)" if packages else "")
        if drift else "")


def store_drift(profile: str) -> list[str]:
    """How this environment differs from the one that made the profile's stored run records,
    in what enters the keys or the numbers: package versions and the frozen teacher's
    precision (e.g. "sentence-transformers 6.2.0 there, 6.3.0 here (34 records)"). Empty without a store."""
    from .config import make_config
    from .utils import resolve_device, run_metadata, teacher_dtype

    store = profile_store(profile)
    here = run_metadata()["packages"]
    cfg = make_config(profile)
    here_precision = str(teacher_dtype(cfg.teacher_precision, resolve_device(cfg.device)) or torch.float32)
    here_precision = here_precision.removeprefix("torch.")
    seen: dict[str, set] = {}
    for path in sorted((Path(store) / "runs").glob("*.json")) if store else []:
        record = json.loads(path.read_text())
        if record.get("config", {}).get("profile") != profile:
            continue
        for name, version in record.get("packages", {}).items():
            if version != here.get(name):
                seen.setdefault(f"{name} {version} there, {here.get(name)} here", set()).add(path.name)
        precision = record.get("precision", {}).get("frozen_teacher")
        if precision not in (None, here_precision):
            seen.setdefault(f"frozen teacher in {precision} there, {here_precision} here", set()).add(path.name)
    return [f"{what} ({len(files)} record{'s' * (len(files) > 1)})" for what, files in seen.items()]


DECISION_MARGIN = 0.3  # points of validation accuracy a variant must gain (docs/protocol.md)
KD_FLOOR = 78.0  # % that KD's student must reach before the final runs (docs/protocol.md)
MAX_PAIRS = 24  # the most primary pairs the protocol runs


def pilot_summary(profile: str) -> tuple[Any, dict] | None:
    """The pilot's table (validation only) and what docs/protocol.md's rules decide from it:
    each variant adopted or not (mean paired gain > DECISION_MARGIN), whether KD reaches
    KD_FLOOR, and the pairs the seed rule asks for. None if a pilot run is missing."""
    import numpy as np
    import pandas as pd

    from .report import paired_difference, seeds_needed

    pilot = plan_value(profile, "pilot")
    if not pilot:
        return None
    val: dict[tuple[str, str], list[float]] = {}
    for spec in sorted(pilot_runs(profile), key=lambda r: r.seed):
        record = finished_record(spec, profile)
        if record is None:
            return None
        val.setdefault((spec.method, spec.setting), []).append(record["val_acc"])
    d = paired_difference(val["TMKD", ""], val["KD", ""])
    rows = [{"comparison": "TMKD - KD", "seeds": len(val["KD", ""]), "val Δ (points)": 100 * d["diff"],
             "sd of Δ": 100 * d["diff_sd"], "mean val (%)": 100 * np.mean(val["TMKD", ""]), "adopt": ""}]
    adopted = {}
    for method, variants in pilot.get("variants", {}).items():
        for label in variants:
            v = paired_difference(val[method, label], val[method, ""])
            adopted[method, label] = 100 * v["diff"] > DECISION_MARGIN
            rows.append({"comparison": f"{method} [{label}] - {method}", "seeds": len(val[method, label]),
                         "val Δ (points)": 100 * v["diff"], "sd of Δ": 100 * v["diff_sd"],
                         "mean val (%)": 100 * np.mean(val[method, label]),
                         "adopt": "yes" if adopted[method, label] else "no"})
    n_teachers = len(plan_value(profile, "teacher_seeds", pilot["dataset"]))
    kd_val = 100 * float(np.mean(val["KD", ""]))
    return pd.DataFrame(rows), {"kd_val": kd_val, "kd_reaches_floor": kd_val >= KD_FLOOR,
                                # the protocol runs at most MAX_PAIRS, and reports a half-width missed
                                "pairs_needed": min(seeds_needed(d["diff_sd"], multiple=n_teachers), MAX_PAIRS),
                                "sd_diff": 100 * d["diff_sd"], "adopted": {f"{m} [{lab}]": a for (m, lab), a
                                                                          in adopted.items()}}


def write_pilot_report(profile: str, out_dir: str | Path) -> tuple[Any, dict] | None:
    """`pilot_summary` written where the profile's figures go: tables/pilot.{csv,md,tex} and
    results/pilot.json (the decisions and every pilot run's record); None if incomplete."""
    from .report import Outputs, run_record

    summary = pilot_summary(profile)
    if summary is None:
        return None
    table, decided = summary
    pilot = plan_value(profile, "pilot")
    out = Outputs(out_dir)
    out.table(table, "pilot", f"Validation pilot (seeds {', '.join(map(str, pilot['seeds']))}): paired differences "
                              f"in validation accuracy; a variant is adopted above +{DECISION_MARGIN} point")
    runs = [run_record(s.dataset, s.method, finished_record(s, profile), s.setting) for s in pilot_runs(profile)]
    out.results_json("pilot", {"decided": decided, "pilot": pilot, "decision_margin": DECISION_MARGIN,
                               "kd_floor": KD_FLOOR}, runs=runs)
    return summary


def write_primary_report(profile: str, out_dir: str | Path) -> tuple[Any, dict] | list[RunSpec]:
    """docs/protocol.md's primary comparison, read once every pair of `primary_seeds` (the
    widening rule applied) has finished, without waiting for the rest of the plan: written
    where notebook 04 writes it too (tables/primary.{csv,md,tex}) with results/primary.json
    (the statistic and every run's record). Returns (table, statistic), or the runs still
    missing."""
    from .report import PRIMARY_CAPTION, Outputs, primary_comparison, primary_table, run_record, teacher_level_comparison

    primary = plan_value(profile, "primary")
    if not primary:
        raise PilotNotSettled(f"the {profile} profile has no primary comparison (PROFILE_PLANS[{profile!r}]['primary'])")
    _check_settled(profile, True)
    method, reference = primary["methods"][::-1]
    seeds = primary_seeds(profile)
    found = [(spec, finished_record(spec, profile)) for spec in _runs(profile, primary["dataset"], [reference, method],
                                                                       seeds)]
    missing = [spec for spec, record in found if record is None]
    if missing:
        return missing
    records = [run_record(spec.dataset, spec.method, record) for spec, record in found]
    statistic = primary_comparison(records, method, reference)
    # sensitivity checks, not the statistic (no reading): the pairs of one teacher seed, and the
    # pairs whose two runs trained on one CPU, where they are at least 3 (no t(1) intervals)
    def part(keep) -> dict:
        out = primary_comparison([r for r in records if keep(r)], method, reference)
        return {k: out[k] for k in ("pairs", "diff", "diff_sd", "ci_low", "ci_high", "half_width")}

    cpus: dict[tuple, set] = {}  # (teacher seed, seed) -> the CPUs its two runs trained on
    for r in records:
        cpus.setdefault((r["teacher_seed"], r["seed"]), set()).add(r["cpu_model"])
    statistic["per_teacher"] = {t: part(lambda r, t=t: r["teacher_seed"] == t) for t in statistic["teacher_seeds"]
                                if sum(pair[0] == t for pair in cpus) >= 3}
    statistic["per_cpu"] = {cpu: part(lambda r, cpu=cpu: cpus[r["teacher_seed"], r["seed"]] == {cpu})
                            for cpu, pairs in statistic["machines"].items() if cpu != "mixed" and pairs >= 3}
    # and the interval with the teacher seed as the unit (over the teachers' mean differences), no reading
    by_teacher = teacher_level_comparison(records, method, reference)
    statistic["teacher_level"] = {k: by_teacher[k] for k in ("teachers", "diff", "teacher_means_sd", "ci_low",
                                                            "ci_high", "half_width", "within_teacher_sd",
                                                            "between_teacher_sd")}
    table = primary_table(statistic, primary["dataset"], method, reference)
    out = Outputs(out_dir)
    out.table(table, "primary", PRIMARY_CAPTION)
    out.results_json("primary", {"primary": statistic, "primary_seeds": seeds, "dataset": primary["dataset"]},
                     runs=records)
    return table, statistic


def teacher_configs(profile: str, datasets: Iterable[str] | None = None) -> list[ExperimentConfig]:
    """Notebook 02: each dataset's configuration at each of its teacher seeds."""
    return [dataset_config(profile, name, {"teacher.seed": t}) for name in profile_plan(profile, "datasets", datasets)
            for t in plan_value(profile, "teacher_seeds", name)]


# --- tasks -------------------------------------------------------------------------------------


@dataclass
class Task:
    stage: str
    cfg: ExperimentConfig
    title: str
    key: str
    artefact: Path
    needs: list[str] = field(default_factory=list)  # keys of the tasks it builds on
    cost_flop: float = 0.0
    partial: Path | None = None  # its resumable checkpoint while it trains (Pipeline.partial_checkpoint)
    primary: bool = False  # the primary comparison needs it: it starts before the rest
    events: Path | None = None  # its TensorBoard curves while it trains (Pipeline.events_dir)
    decides: bool = False  # a pending pre-registered decision reads it, and unplanned work waits on that decision

    def done(self) -> bool:
        return self.artefact.exists()


def _title(stage: str, cfg: ExperimentConfig) -> str:
    t = f"{cfg.data.name} teacher seed {cfg.teacher.seed}"
    if stage == "rgb_teacher":
        return f"RGB teacher ({t})"
    if stage == "multiview_teacher":
        kind = "RGB fine-tuned control" if list(cfg.views.views) == ["rgb"] else "multi-view teacher"
        modes = f", {cfg.views.edge_mode}/{cfg.views.hf_mode}" if len(cfg.views.views) > 1 else ""
        prompts = f", {cfg.text.prompts} prompts" if cfg.text.prompts != "prior_aware" else ""
        epochs = cfg.teacher.multiview_optim.epochs
        how = f", {epochs} epoch{'s' * (epochs > 1)}" + (" from scratch" if cfg.teacher.teacher_init == "scratch" else "")
        return f"{kind} ({t}, views {'/'.join(cfg.views.views)}{modes}{prompts}{how})"
    if stage == "teacher_cache":
        epochs = cfg.teacher.multiview_optim.epochs
        teacher = ("RGB" if cfg.student.teacher != "multi" else f"RGB fine-tuned ({epochs} epochs)"
                   if list(cfg.views.views) == ["rgb"] else
                   f"multi-view ({cfg.views.edge_mode}/{cfg.views.hf_mode}, {epochs} epochs)")
        replicas = cfg.student.cache_replicas or cfg.student.optim.epochs
        return f"{teacher} teacher-output cache ({t}, {replicas} replicas)"
    raise KeyError(stage)


def run_title(spec: RunSpec) -> str:
    setting = f" [{spec.setting}]" if spec.setting else ""
    return f"{spec.method}{setting} seed {spec.seed} ({spec.dataset}, teacher seed {spec.teacher_seed})"


def is_primary(profile: str, spec: RunSpec) -> bool:
    """Whether the run is one of the primary comparison's (its seeds hold every final seed
    of its methods, widened pairs included)."""
    primary = plan_value(profile, "primary")
    return bool(primary) and spec.dataset == primary["dataset"] and spec.method in primary["methods"] and \
        not spec.overrides and spec.seed >= min(primary["seeds"])


def in_plan_order(profile: str, specs: list[RunSpec]) -> list[RunSpec]:
    """The primary comparison's runs first, in seed order, a pair's two runs side by side;
    then the runs of one dataset and teacher seed together. A free worker still takes a
    teacher or cache that runs wait on before a run (`next_task`)."""
    order = {name: i for i, name in enumerate(profile_plan(profile, "datasets"))}
    return sorted(specs, key=lambda r: (0, r.seed, 0) if is_primary(profile, r)
                  else (1, order.get(r.dataset, len(order)), r.teacher_seed))


def plan_tasks(profile: str, parts: Iterable[str] = ("pilot", "main", "ablations"), costs: bool = True) -> list[Task]:
    """Every stage the chosen parts of the plan need, once each: the runs `in_plan_order`,
    each task's dependencies just before it, then the teachers no run reads. `costs`
    False leaves `cost_flop` 0 and reads no dataset."""
    configs: list[ExperimentConfig] = []
    parts = list(parts)
    if {"main", "ablations", "teachers", "confirmatory"} & set(parts) and not pilot_settled(profile):
        raise _unsettled(profile)
    study = TeacherStudy.of(profile) if "teachers" in parts else None
    conf = Confirmatory.of(profile) if "confirmatory" in parts else None
    if conf is not None:
        from .teacher_study import check_confirmatory_decisions

        store = profile_store(profile)
        check_confirmatory_decisions(conf, TeacherStudy.of(profile), [store] if store else [])
    if "main" in parts:
        for cfg in teacher_configs(profile):  # notebook 02: both teachers and the control
            configs += [cfg, method_config(cfg, "TMKD")]
            if len(cfg.views.views) > 1:
                configs.append(method_config(cfg, "TMKD", {"views.views": ["rgb"]}))
        # notebook 03 compares the first dataset's weights with those of generic prompts, whose
        # text heads need a multi-view teacher of their own
        first = dataset_config(profile, profile_plan(profile, "datasets")[0])
        if len(first.views.views) > 1:
            configs.append(method_config(first, "TMKD", {"text.prompts": "generic"}))
    specs = (pilot_runs(profile) if "pilot" in parts else []) + (main_runs(profile) if "main" in parts else [])
    if "ablations" in parts:
        kd, tmkd = ablation_runs(profile)
        specs += kd + tmkd
    confirmatory = conf.runs(confirmatory_teacher_seeds(conf)) if conf else []
    if conf and study and not conf.fusion_settled:  # the fusion candidate's student check, until settled
        confirmatory += conf.fusion_check_runs(dict(study.teacher_seeds)[conf.dataset])
    specs = in_plan_order(profile, specs + confirmatory)
    tasks: dict[str, Task] = {}

    def add(pipe: Pipeline, stage: str, title: str | None = None, primary: bool = False) -> str:
        key = f"{stage}:{pipe.key(stage)}"
        needs = [add(pipe, s, primary=primary) for s in pipe.after(stage) if s in Pipeline.BUILT_STAGES]
        if key not in tasks:
            tasks[key] = Task(stage, pipe.cfg, title or _title(stage, pipe.cfg), key, pipe.artefact(stage), needs,
                              stage_flop(pipe, stage) if costs else 0.0, pipe.partial_checkpoint(stage), primary,
                              pipe.events_dir(stage))
        tasks[key].primary |= primary  # a teacher a secondary run listed first is the primary's too
        return key

    # the confirmatory comparison, and the teachers its choice reads, go first as the primary's do
    first = set(confirmatory)
    for spec in specs:
        add(Pipeline(spec.config(profile)), "student", run_title(spec), is_primary(profile, spec) or spec in first)
    for teacher in study.teachers() if study else []:
        for i, cfg in enumerate(teacher.configs):  # an ensemble's second teacher is titled as an RGB teacher
            key = add(Pipeline(cfg), teacher.variant.stage, None if i else teacher.title,
                      primary=conf is not None and teacher.dataset == conf.dataset)
            tasks[key].decides |= conf is not None and teacher in conf.choice_reads(study)
    for cfg in configs:  # teachers no run reads come last: notebook 02's control, notebook 03's generic prompts
        pipe = Pipeline(cfg)
        add(pipe, "multiview_teacher" if pipe.uses("multiview_teacher") else "rgb_teacher")
    # each dependency just before the first task that needs it: plan order is the order of need
    return list(tasks.values())


# --- cost model --------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def forward_flops(arch: str, num_classes: int, in_channels: int, size: int) -> float:
    """Floating-point operations of one image's forward pass (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    model = build_model(arch, num_classes, in_channels).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(2, in_channels, size, size))
    return counter.get_total_flops() / 2


def stage_flop(pipe: Pipeline, stage: str) -> float:
    """Operations a stage computes (training = 3 forward passes: forward and backward)."""
    cfg, splits = pipe.cfg, pipe.splits
    n, size = len(splits.train), splits.train.images.shape[-1]

    def f(arch):
        return forward_flops(arch, splits.num_classes, splits.in_channels, size)

    views = len(cfg.views.views)
    if stage == "rgb_teacher":
        return 0.0 if cfg.teacher.checkpoint else cfg.teacher.optim.epochs * n * 3 * f(cfg.teacher.arch)
    if stage == "multiview_teacher":
        return cfg.teacher.multiview_optim.epochs * n * views * 3 * f(cfg.teacher.arch)
    teacher_views = views if cfg.student.teacher == "multi" else 1
    if stage == "teacher_cache":
        return pipe.replicas * n * teacher_views * f(cfg.teacher.arch)
    online = cfg.student.distiller != "ce" and cfg.student.teacher_outputs == "online"
    per_image = 3 * f(cfg.student.arch) + (teacher_views * f(cfg.teacher.arch) if online else 0.0)
    evals = (len(splits.val) * cfg.student.optim.epochs + len(splits.val) + len(splits.test)) * f(cfg.student.arch)
    return cfg.student.optim.epochs * n * per_image + evals


def measure_rate(threads: int, seconds: float = 2.0) -> float:
    """FLOP/s of resnet8 training steps (batch 128) at `threads` threads on this machine."""
    import torch.nn.functional as F

    from .models import build_model

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model("resnet8", 10, 3).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (128,))
        steps, start = 0, None
        while start is None or time.perf_counter() - start < seconds:
            if steps == 2:
                start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x)[0], y).backward()
            opt.step()
            steps += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return (steps - 2) * 128 * 3 * forward_flops("resnet8", 10, 3, 32) / elapsed


def worker_threads(jobs: int) -> int:
    """Threads per worker: this process's threads shared out over the workers."""
    return max(1, torch.get_num_threads() // jobs)


def launch_threads(free: int, ready: int, running: int, per_worker: int) -> int:
    """Threads for the next task: `per_worker`, or all `free` threads when it can only run
    alone (nothing `running`, one task `ready`: everything else waits for it); 0 = wait."""
    if running == 0 and ready == 1:
        return free
    return min(per_worker, free)


def measure_worker_rate(threads: int, jobs: int, seconds: float = 3.0) -> float:
    """FLOP/s of one worker while `jobs` workers run side by side, as the plan runs them:
    the mean of `jobs` concurrent `measure_rate`s (one alone overstates a shared core)."""
    if jobs == 1:
        return measure_rate(threads, seconds)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        rates = list(pool.map(measure_rate, [threads] * jobs, [seconds] * jobs))
    return sum(rates) / len(rates)


# --- the artefact store -------------------------------------------------------------------------

STORED_STAGES = ("rgb_teacher", "multiview_teacher", "student")  # caches are rebuilt: too large


def stored_copy(task: Task, store: Path) -> Path | None:
    """Where the store keeps `task`'s artefact (its path under the data root), or None for
    a stage that is not stored."""
    if task.stage not in STORED_STAGES:
        return None
    return in_store(task.artefact, task.cfg, store)


def stored_partial(task: Task, store: Path) -> Path | None:
    """Where the store keeps `task`'s resumable checkpoint while it is unfinished (under
    `partial/`), or None for a task that has none (a cache)."""
    if task.partial is None:
        return None
    return in_store(task.partial, task.cfg, store, "partial")


PARTIAL_FIELDS = ("epoch", "model", "optimizer", "scheduler", "history")  # what train.fit resumes from


def partial_epoch(path: Path) -> int:
    """The epoch a resumable checkpoint holds; DamagedArtifact if it is not one `fit` resumes."""
    from .utils import damaged, load_checkpoint

    state = load_checkpoint(path)
    if not isinstance(state, dict) or any(k not in state for k in PARTIAL_FIELDS):
        raise damaged(path, f"it is not a resumable checkpoint (it needs {', '.join(PARTIAL_FIELDS)})")
    return int(state["epoch"])


def keep_partial(task: Task, store: Path) -> None:
    """Copy a running task's resumable checkpoint into the store if it changed, so that a
    machine that loses its data root resumes the task from its last epoch, not its first.
    A checkpoint that vanishes meanwhile (its task just finished) is not an error."""
    kept = stored_partial(task, store)
    if kept is None:
        return
    try:
        if not kept.exists() or kept.read_bytes() != task.partial.read_bytes():
            atomic_copy(task.partial, kept)
    except FileNotFoundError:
        return


def check_artefact(task: Task, path: Path) -> None:
    """Raise DamagedArtifact unless `path` holds `task`'s artefact: a run record of this
    run's key and settings, or a checkpoint (loaded with weights_only) of this stage key."""
    pipe = Pipeline(task.cfg)
    if task.stage == "student":
        pipe._read_record(path)
    else:
        pipe.read_checkpoint(task.stage, path)


def sound_stored_copy(task: Task, store: Path, say=None) -> bool:
    """Whether the store holds `task`'s finished artefact and it passes `check_artefact`; a
    damaged one is named through `say`, if given."""
    from .utils import DamagedArtifact

    kept = stored_copy(task, store)
    if kept is None or not kept.exists():
        return False
    try:
        check_artefact(task, kept)
    except DamagedArtifact as exc:
        if say is not None:
            say(f"[plan] not restored, the task runs again: {exc} (the stored copy: {kept})")
        return False
    return True


def restore_artefacts(tasks: list[Task], store: Path, say=print) -> int:
    """Copy into the data root every stored artefact it lacks, each checked first
    (`check_artefact`; a bad one is named and skipped, so its task runs again), and the
    last epoch's checkpoint of each unfinished task (`stored_partial`) where the data root
    holds none or an earlier epoch; how many were copied. No finished artefact in the data
    root is overwritten."""
    from .utils import DamagedArtifact

    copied = 0
    for task in tasks:
        if task.done():
            continue
        if sound_stored_copy(task, store, say):
            atomic_copy(stored_copy(task, store), task.artefact)
            copied += 1
            continue
        partial = stored_partial(task, store)
        if partial is None or not partial.exists():
            continue
        try:  # an unfinished task's last epoch: it resumes from there
            epoch = partial_epoch(partial)
        except DamagedArtifact as exc:
            say(f"[plan] not restored, the task resumes from what data/ holds or starts afresh: {exc}")
            continue
        if task.partial.exists():  # a later epoch here is kept; an earlier one gives way
            try:
                if partial_epoch(task.partial) >= epoch:
                    continue
            except DamagedArtifact:
                pass
            say(f"[plan] {task.title}: the store's epoch {epoch} replaces an earlier checkpoint in {task.partial}")
        atomic_copy(partial, task.partial)
        copied += 1
    return copied


def keep_artefact(task: Task, store: Path, say=print) -> None:
    """Copy a finished task's artefact into the store, checked first (nothing for a cache),
    and drop its stored last epoch; a stored copy that differs (a run retrained with
    --force) is replaced."""
    kept = stored_copy(task, store)
    if kept is not None and not (kept.exists() and kept.read_bytes() == task.artefact.read_bytes()):
        check_artefact(task, task.artefact)
        if kept.exists():
            say(f"[plan] the store's copy of {task.title} differs from {task.artefact}: replaced")
        atomic_copy(task.artefact, kept)
    partial = stored_partial(task, store)
    if partial is not None:  # finished: its last epoch's checkpoint is no longer needed
        partial.unlink(missing_ok=True)


def stale_partials(tasks: list[Task], store: Path) -> list[Path]:
    """The store's last-epoch checkpoints that no unfinished task of `tasks` (the whole plan,
    as this checkout defines it) resumes from: those of tasks finished here or in the store
    (a stored copy that passes `check_artefact`: a damaged one leaves its task's epoch live),
    and those no task names (its key has changed since). `--prune-store` removes them."""
    live = {stored_partial(t, store) for t in tasks
            if t.partial is not None and not (t.done() or sound_stored_copy(t, store))}
    folder = Path(store) / "partial"
    return sorted(p for p in folder.rglob("*.pt") if p not in live) if folder.is_dir() else []


def default_parts(profile: str) -> list[str]:
    """The parts a plan runs unless told: all once the pilot has settled, else the pilot."""
    return list(PARTS) if pilot_settled(profile) else ["pilot"]


def whole_plan(profile: str) -> list[Task]:
    """Every task of the profile's plan (`default_parts`), without costs: what
    `--prune-store` judges the store's checkpoints against."""
    return plan_tasks(profile, default_parts(profile), costs=False)


def ready_tasks(pending: list[Task], done_keys: set[str]) -> list[Task]:
    """The pending tasks whose dependencies are done, in plan order: a teacher or cache
    stands just before the first run that needs it, so the primary pairs' teachers and
    caches are built before the secondary runs."""
    return [t for t in pending if all(n in done_keys for n in t.needs)]


def work_behind(tasks: list[Task], seconds: dict[str, float]) -> dict[str, float]:
    """For each task, the longest chain of work that waits on it: b(t) = max over the
    tasks d that need t of (seconds(d) + b(d)), 0 for a task nothing needs (a student run).
    A chain, not the sum: what waits on a teacher in parallel does not lengthen it."""
    after: dict[str, list[Task]] = {}
    for task in tasks:
        for need in task.needs:
            after.setdefault(need, []).append(task)
    behind: dict[str, float] = {}

    def chain(task: Task) -> float:
        if task.key not in behind:
            behind[task.key] = max((seconds[d.key] + chain(d) for d in after.get(task.key, ())), default=0.0)
        return behind[task.key]

    for task in tasks:
        chain(task)
    return behind


def next_task(startable: list[Task], behind: dict[str, float]) -> Task:
    """The task a free worker starts: the primary comparison's first; among them, those a
    pending decision reads (`Task.decides`: the teacher study's candidates, whose choice all of
    TMKD's confirmatory side waits on, work the plan cannot list yet, so `work_behind` cannot
    see it); then the one with the longest chain of work waiting on it (`work_behind`: a
    CIFAR-100 teacher before a CIFAR-10 run, so that its chain does not end alone with a
    worker idle), then plan order."""
    return min(startable, key=lambda t: (not t.primary, not t.decides, -behind.get(t.key, 0.0)))  # first of ties


def finish_seconds(pending: list[Task], running_left: dict[str, float], jobs: int,
                   seconds: dict[str, float]) -> float:
    """Seconds until the last task ends when `jobs` workers take the `pending` tasks as
    `run_plan` does (`next_task` whenever a worker is free, after every task ending at that
    moment), after the running tasks' `running_left` seconds: list scheduling on the
    estimates, each task at one worker's speed (a task the plan runs alone on every thread
    is a little faster). A need outside both counts as done."""
    behind = work_behind(pending, seconds)
    waiting = list(pending)
    unfinished = {t.key for t in pending} | set(running_left)
    ends = [(left, key) for key, left in running_left.items()]
    heapq.heapify(ends)
    now = 0.0
    while waiting or ends:
        while len(ends) < jobs:
            startable = [t for t in waiting if unfinished.isdisjoint(t.needs)]
            if not startable:
                break
            task = next_task(startable, behind)
            waiting.remove(task)
            heapq.heappush(ends, (now + seconds[task.key], task.key))
        if not ends:  # a need that never finishes: run_plan says so when it gets there
            break
        now, key = heapq.heappop(ends)
        unfinished.discard(key)
        while ends and ends[0][0] == now:  # every task ending now, before a worker picks
            unfinished.discard(heapq.heappop(ends)[1])
    return now


def needed(tasks: list[Task], done=Task.done) -> list[Task]:
    """The tasks to run: every one not `done`, less the teacher-output caches that no task
    left to run reads (after a restore, their students are finished)."""
    pending = [t for t in tasks if not done(t)]
    wanted = {n for t in pending for n in t.needs}
    return [t for t in pending if t.stage != "teacher_cache" or t.key in wanted]


# --- running -----------------------------------------------------------------------------------

def hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class StoreLog:
    """Every line the plan says, also kept in the store (`<store>/logs/<start>_plan.log`) once
    the plan has something to run, so that its output and wall time add up across machines
    and sessions (`plan_wall_time`). Lines said before that are written then."""

    def __init__(self, say: Callable[[str], None], store: Path):
        self.say, self.path = say, Path(store) / "logs" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_plan.log"
        self.held: list[str] | None = []

    def __call__(self, line: str) -> None:
        self.say(line)
        if self.held is not None:
            self.held.append(line)
            return
        with self.path.open("a") as f:
            f.write(line + "\n")

    def keep(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(line + "\n" for line in self.held or []))
        self.held = None


ELAPSED = re.compile(r"\| elapsed (\d+):(\d\d):(\d\d) \|")
START = re.compile(r"\[plan\] \d+ tasks, ")  # the line a start with work to do begins with


def plan_wall_time(log_dir: Path) -> tuple[int, float]:
    """(starts, seconds of wall time) of the plan logs in `log_dir`: each start's last
    `elapsed`, summed. A file may hold several starts: each begins at its `START` line, or
    where the elapsed time falls back (a log cut before that line)."""
    starts, seconds = 0, 0.0
    for path in sorted(Path(log_dir).glob("*.log")):
        last = None
        for line in path.read_text(errors="replace").splitlines():
            if START.match(line):
                starts, last = starts + 1, 0
                continue
            found = ELAPSED.search(line)
            if not found:
                continue
            h, m, sec = found.groups()
            now = int(h) * 3600 + int(m) * 60 + int(sec)
            if last is None or now < last:
                starts, last = starts + 1, 0
            seconds, last = seconds + now - last, now
    return starts, seconds


class Progress:
    """Estimated seconds per task, corrected by the tasks that finished (before any of a
    stage has finished here: by the times recorded in the finished artefacts of that stage)."""

    def __init__(self, rate: float, jobs: int):
        self.rate, self.jobs = rate, jobs
        self.measured: dict[str, list[tuple[float, float]]] = {}  # stage -> (estimated, actual)
        self.recorded: dict[str, list[tuple[float, float]]] = {}  # the same, from artefacts found at the start

    def estimate(self, task: Task) -> float:
        est = task.cost_flop / self.rate
        pairs = (self.measured.get(task.stage) or self.recorded.get(task.stage)
                 or [p for v in self.measured.values() for p in v])
        if pairs:
            est *= sum(a for _, a in pairs) / max(sum(e for e, _ in pairs), 1e-9)
        return est

    def finished(self, task: Task, seconds: float) -> None:
        self.measured.setdefault(task.stage, []).append((task.cost_flop / self.rate, seconds))

    def read_records(self, tasks: list[Task], store: Path | None = None) -> "Progress":
        """The training times recorded in the finished artefacts among `tasks` (in the data
        root, else in `store`): a run record's or a teacher checkpoint's `train_time_s`
        (training only: setup and evaluation are left out). Unreadable ones are skipped."""
        from .utils import DamagedArtifact, load_checkpoint

        for task in tasks:
            path = task.artefact if task.done() else stored_copy(task, store) if store is not None else None
            if task.stage == "teacher_cache" or path is None or not path.exists():
                continue
            try:
                info = json.loads(path.read_text()) if task.stage == "student" else load_checkpoint(path)["info"]
                seconds = float(info["train_time_s"])
            except (OSError, ValueError, KeyError, TypeError, DamagedArtifact):  # an estimate never stops the plan
                continue
            if seconds > 0:  # an imported teacher records 0
                self.recorded.setdefault(task.stage, []).append((task.cost_flop / self.rate, seconds))
        return self

    def left(self, pending: list[Task], running: dict[str, tuple[Task, float]]) -> float:
        """Seconds of wall time left: the pending tasks scheduled on the workers as the plan
        will run them (`finish_seconds`), so a long chain of teacher, cache and runs that
        leaves a worker idle counts, not only the work spread evenly."""
        now = time.perf_counter()
        running_left = {t.key: max(self.estimate(t) - (now - t0), 0.0) for t, t0 in running.values()}
        return finish_seconds(pending, running_left, self.jobs, {t.key: self.estimate(t) for t in pending})


def plan_lock_path(tasks: list[Task]) -> Path | None:
    """Where a plan of these tasks holds its lock: one per data root and profile
    (`<data root>/logs/plan/<profile>.lock`), whatever `--log-dir` says; None for no task."""
    if not tasks:
        return None
    cfg = tasks[0].cfg
    return Path(cfg.data.root) / "logs" / "plan" / f"{cfg.profile}.lock"


def hold_plan_lock(path: Path):
    """The open lock file of the one plan allowed per data root and profile
    (`plan_lock_path`): a second plan beside a running one would train the same tasks into
    the same files (plans of other profiles may run beside it). The lock (flock) goes with
    the plan's process; a plan killed with SIGKILL leaves its workers training, which
    `pkill -f multiprocessing.spawn` stops. Raises PlanRunning, naming the other plan's process id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise PlanRunning(f"another plan of this profile (process {owner}, lock {path}) is running on this data "
                          f"root: wait for it, or stop it with `kill -TERM {owner}` (it resumes where it stopped)"
                          ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def run_plan(tasks: list[Task], jobs: int, log_dir: Path, say=print, heartbeat_s: float = 60.0,
             store: Path | None = None, more: Callable[[], list[Task]] | None = None,
             executor: Executor | None = None) -> int:
    """Run the tasks not done yet on `jobs` workers of the `executor` (default: worker
    processes of this machine, `executors.LocalExecutor`); 0 when all finished, 1 when a
    task failed, PLAN_RUNNING when another plan holds this one's lock (`hold_plan_lock`).
    With a `store`, stored artefacts are restored first and each finished one is kept
    there. After each finished run, `more()` may return tasks to add (the widening rule's
    pairs): those not in the plan yet go first. The executor decides where a task runs;
    what runs, and in which order, is decided here."""
    path = plan_lock_path(tasks)
    try:
        lock = hold_plan_lock(path) if path is not None else None
    except PlanRunning as exc:
        say(f"[plan] {exc}")
        return PLAN_RUNNING
    try:
        return _run_holding_the_lock(tasks, jobs, log_dir, say, heartbeat_s, store, more,
                                     executor if executor is not None else LocalExecutor())
    finally:
        if lock is not None:
            lock.close()


def _run_holding_the_lock(tasks: list[Task], jobs: int, log_dir: Path, say, heartbeat_s: float,
                          store: Path | None, more: Callable[[], list[Task]] | None, executor: Executor) -> int:
    jobs, threads, machine_threads, note = executor.capacity(jobs)
    if note:
        say(note)
    if store is not None:
        say = StoreLog(say, store)
        restored = restore_artefacts(tasks, store, say)
        for task in tasks:  # finished before this plan kept them (or by a notebook)
            if task.done():
                keep_artefact(task, store, say)
        say(f"[plan] artefact store {store}: {restored} artefact(s) restored to the data root")
    pending = needed(tasks)
    total, skipped = len(tasks), len(tasks) - len(pending)
    if not pending:
        say(f"[plan] all {total} tasks done or not needed")
        return 0
    if store is not None:
        say.keep()
    try:
        executor.open(jobs, say)
        rate = executor.rate(threads, jobs)
    except BaseException as exc:
        executor.close()
        if not isinstance(exc, Exception):
            raise
        say(f"[plan] the {executor.name} executor could not start: {type(exc).__name__}: {exc}")
        return 1
    progress = Progress(rate, jobs)
    progress.read_records(tasks)
    say(f"[plan] {total} tasks, {skipped} done or not needed; {len(pending)} to run on "
        f"{executor.describe(jobs, threads)}; measured {rate / 1e9:.1f} GFLOP/s per worker; estimated "
        f"{hms(progress.left(pending, {}))}")
    root = Path(pending[0].cfg.data.root)
    say(f"[plan] live training curves: `tensorboard --logdir {root}` (each teacher and run writes them next to its "
        f"checkpoint or record, <key>.tb/); per-task logs in {log_dir}")
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[Task, float]] = {}
    held: dict[str, int] = {}  # threads of each running task
    resumed: set[str] = set()  # tasks that started from a checkpoint of an earlier plan
    threads_of: dict[str, int] = {}
    started, last_beat = time.perf_counter(), 0.0
    pending_keys = {t.key for t in pending}
    done_keys = {t.key for t in tasks if t.key not in pending_keys}

    def status(event: str) -> None:
        n_done = total - len(pending) - len(running)
        left = progress.left(pending, running)
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        say(f"[plan {n_done}/{total} done, {len(running)} running | elapsed {hms(time.perf_counter() - started)} | "
            f"left ~{hms(left)} (ends ~{finish})] {event}")

    def stop(signum, frame):  # a scheduler's SIGTERM stops the workers too, as Ctrl-C does
        raise KeyboardInterrupt

    # SIGINT too: a plan started in the background (`nohup ... &`) inherits SIGINT ignored
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while pending or running:
            for ended in executor.ended():
                key = ended.key
                task, t0 = running.pop(key)
                threads_of[key] = held.pop(key)
                log = log_dir / f"{task.key.replace(':', '_')}.log"
                if not ended.ok or not task.done():
                    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                    others = ", ".join(t.title for t, _ in running.values())
                    say(f"[plan] FAILED: {task.title} ({ended.why or 'no artefact'}); its log, {log}:\n{tail}"
                        + (f"\n[plan] stopping the others (they resume next time): {others}" if others else ""))
                    return 1
                # a lone task's threads, or a task resumed part-way, would skew the correction
                if threads_of[key] == threads and key not in resumed:
                    progress.finished(task, time.perf_counter() - t0)
                if store is not None:
                    keep_artefact(task, store, say)
                done_keys.add(key)
                status(f"finished {task.title} in {hms(time.perf_counter() - t0)}")
                if more is not None and task.stage == "student":
                    known = done_keys | {t.key for t in pending} | set(running)
                    added = [t for t in more() if t.key not in known and not t.done()]
                    pending[:0] = added
                    total += len(added)
                    if added:
                        status(f"added {len(added)} task(s) first: " + "; ".join(t.title for t in added))
            while len(running) < jobs:
                startable = ready_tasks(pending, done_keys)
                n_threads = (launch_threads(machine_threads - sum(held.values()), len(startable), len(running),
                                            threads) if executor.pools_threads else threads)
                if not startable or n_threads < 1:
                    break
                ready = next_task(startable, work_behind(pending, {t.key: progress.estimate(t) for t in pending}))
                pending.remove(ready)
                log = log_dir / f"{ready.key.replace(':', '_')}.log"
                cfg = {**config_to_dict(ready.cfg), "progress": False}
                if ready.partial is not None and ready.partial.exists():
                    resumed.add(ready.key)
                executor.start(ready.key, cfg, ready.stage, n_threads, log)
                running[ready.key], held[ready.key] = (ready, time.perf_counter()), n_threads
                status(f"started {ready.title} on {n_threads} thread(s) (~{hms(progress.estimate(ready))})"
                       + (" from its last checkpoint" if ready.key in resumed else "")
                       + (f"; curves in {ready.events}" if ready.events is not None else ""))
            if not running and pending:
                say("[plan] no task can start: a task it needs is missing from the plan")
                return 1
            if time.perf_counter() - last_beat > heartbeat_s:
                last_beat = time.perf_counter()
                if store is not None:
                    for task, _ in running.values():
                        keep_partial(task, store)
                now = time.perf_counter()
                status("running: " + "; ".join(f"{t.title} {hms(now - t0)}" for t, t0 in running.values()))
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("[plan] interrupted: finished tasks are kept, running ones resume from their checkpoints next time")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        executor.stop()  # the tasks still running, if the plan stopped early (they resume next time)
        executor.close()
        if store is not None:  # the interrupted tasks' last epochs, for a machine without this data root
            for task, _ in running.values():
                try:
                    keep_partial(task, store)
                except OSError as exc:
                    say(f"[plan] {task.title}: its last epoch was not kept in the store: {exc}")
    status("all tasks done")
    return 0


def widened_pairs(profile: str, parts: list[str]) -> Callable[[], list[Task]] | None:
    """For `run_plan(more=...)`: the plan's tasks again once a widening rule has added pairs
    (the primary comparison's) or teachers (the confirmatory comparison's) since the last
    call, else none (None: the parts have neither comparison)."""
    rules = []
    if "main" in parts and plan_value(profile, "primary"):
        rules.append(("the primary interval's half-width exceeds 0.5 point: {n} pairs now (docs/protocol.md, "
                      "'Sizing the interval')", lambda: primary_seeds(profile)))
    conf = Confirmatory.of(profile) if "confirmatory" in parts else None
    if conf is not None:
        rules.append(("the confirmatory interval's half-width exceeds 0.5 point: {n} teachers now (docs/protocol.md, "
                      "'Amendment: powerful teachers')", lambda: confirmatory_teacher_seeds(conf)))
    if not rules:
        return None
    seen = [now() for _, now in rules]

    def more() -> list[Task]:
        widened = False
        for i, (message, now) in enumerate(rules):
            seeds = now()
            if seeds != seen[i]:
                print("[plan] " + message.format(n=len(seeds)), flush=True)
                seen[i], widened = seeds, True
        return plan_tasks(profile, parts) if widened else []
    return more


def _study_reports(profile: str, out_dir: str | None, store: Path | None, teachers: bool, confirmatory: bool) -> int:
    """--teacher-report and --confirmatory-report: 0 when written, 1 when a part is missing."""
    from .teacher_study import write_confirmatory_report, write_teacher_report

    out_dir = out_dir or ("figures" if profile == "cpu" else f"build/{profile}/figures")
    study, conf = TeacherStudy.of(profile), Confirmatory.of(profile)
    if (teachers and study is None) or (confirmatory and conf is None):
        print(f"[plan] the {profile} profile has no {'teacher study' if teachers else 'confirmatory comparison'} "
              f"(PROFILE_PLANS[{profile!r}])", file=sys.stderr)
        return 2
    if store is not None:  # a fresh clone: the stored teachers and runs into data/
        try:
            restore_artefacts(plan_tasks(profile, ["teachers", "confirmatory"], costs=False), store)
        except (PilotNotSettled, DecisionMismatch) as exc:
            print(f"[plan] {exc}", file=sys.stderr)
            return 2
    code = 0
    if teachers:
        payload = write_teacher_report(study, out_dir, [store] if store is not None else [], conf)
        for t in payload["missing"]:
            print(f"[plan] not trained yet: {t}")
        if conf is not None and not conf.chosen:  # the choice reads validation alone: so does its reader
            print("[plan] the confirmatory comparison's teacher is not chosen yet: the choice below reads validation "
                  f"accuracies only; the test accuracies are in {out_dir}/tables/teacher_study.md")
        else:
            print((Path(out_dir) / "tables" / "teacher_study.md").read_text())
        for key in ("choice", "fusion_screen", "fusion_check"):
            if payload.get(key) is not None:
                print(f"{key}: {json.dumps(payload[key])}")
        print(f"written: {out_dir}/tables/teacher_study.md, {out_dir}/teacher_study.png, "
              f"{out_dir}/results/teacher_study.json")
        code = int(bool(payload["missing"]))
    if confirmatory:
        report = write_confirmatory_report(conf, out_dir)
        if isinstance(report, list):
            print(f"[plan] the confirmatory comparison waits for {len(report)} run(s): " + "; ".join(report),
                  file=sys.stderr)
            return 1
        print(report[0].T.to_string(header=False))
        print(f"written: {out_dir}/tables/confirmatory.md, {out_dir}/results/confirmatory.json")
    return code


PARTS = ("pilot", "main", "ablations", "teachers", "confirmatory")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tmkd_core.plan", description=__doc__.split("\n\n")[0],
        epilog="Without --dry-run, --prune-store or a --*-report flag it trains (the cpu profile: hours). Exit "
               "status: 0 all done, 1 a task failed or a report is incomplete, 2 refused (the pilot has not settled), "
               "3 the pilot finished and waits to be settled, 4 another plan of the profile is running on this data "
               "root, 130 interrupted.")
    parser.add_argument("--profile", default="cpu", choices=list(PROFILE_PLANS),
                        help="the profile whose plan runs (default: cpu, the evidence of docs/protocol.md)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("TMKD_JOBS", "2")),
                        help="worker processes (default 2, or $TMKD_JOBS)")
    parser.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                        help="pilot: the validation pilot; main: the teachers and notebook 04's runs (the primary "
                             "comparison first); ablations: notebook 05's runs; teachers: the teacher study; "
                             "confirmatory: the CIFAR-100 confirmatory comparison (KD's side until TMKD's teacher "
                             "is chosen). Default: all, or the pilot alone while it has not settled")
    parser.add_argument("--pilot-report", action="store_true",
                        help="the pilot's validation table and what the protocol's rules decide from it, "
                             "written to <out-dir>/tables/pilot.md and <out-dir>/results/pilot.json (for cpu: the "
                             "committed figures/, overwritten); the pilot's stored artefacts are restored to data/")
    parser.add_argument("--primary-report", action="store_true",
                        help="the primary comparison of docs/protocol.md once all its pairs have finished (the "
                             "widening rule applied), before the rest of the plan: written to <out-dir>/tables/"
                             "primary.md and <out-dir>/results/primary.json, where notebook 04 writes it too")
    parser.add_argument("--teacher-report", action="store_true",
                        help="the teacher study as far as it has trained, the validation choice of the confirmatory "
                             "comparison's teacher and the fusion-setting rule (docs/protocol.md, 'Amendment: powerful "
                             "teachers'): <out-dir>/tables/teacher_study.md, teacher_study.png and "
                             "results/teacher_study.json; each teacher's evaluation is kept in <store>/evals")
    parser.add_argument("--confirmatory-report", action="store_true",
                        help="the confirmatory comparison once all its runs have finished: "
                             "<out-dir>/tables/confirmatory.md and results/confirmatory.json")
    parser.add_argument("--out-dir", default=None,
                        help="where the --*-report flags write (default: figures for cpu, overwriting the "
                             "committed files, else build/<profile>/figures)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the tasks and their estimates, train nothing: done (in data/), kept (in the store, "
                             "restored at the start), todo, skip (a cache no run left reads). It extracts the "
                             "datasets (hundreds of MB) and times this CPU for a few seconds")
    parser.add_argument("--prune-store", action="store_true",
                        help="remove the store's last-epoch checkpoints (under <store>/partial/) that no unfinished "
                             "task of the whole plan resumes from (finished, or of a changed key), naming each; with "
                             "--dry-run, only list them. Run it with the code and store the plan runs with")
    parser.add_argument("--log-dir", default=None, help="per-task logs (default: <data.root>/logs/plan)")
    executors.add_arguments(parser)
    parser.add_argument("--store", default=None,
                        help="artefact store: finished teachers and run records, restored when missing "
                             "(default: the profile's `store`, e.g. artefacts/cpu; 'none' for none)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.executor == "local" and (args.cluster != "local" or args.scheduler or args.job_script):
        parser.error("--cluster, --scheduler and --job-script are for --executor dask")
    if args.job_script:
        if args.cluster == "local":
            parser.error("--job-script prints a Slurm or PBS worker's job script: add --cluster slurm or pbs")
        root = Path(dataset_config(args.profile, profile_plan(args.profile, "datasets")[0]).data.root)
        print(executors.job_script(args.cluster, args.scheduler or "tcp://<the plan's scheduler>:<port>",
                                   **executors.from_args(args, root).jobqueue))
        return 0
    # the profile's store is relative to the project root, where it is kept in git
    store = profile_store(args.profile) if args.store is None else None if args.store == "none" else Path(args.store)
    if args.pilot_report:
        if store is not None:
            restore_artefacts(plan_tasks(args.profile, ["pilot"], costs=False), store)
        out_dir = args.out_dir or ("figures" if args.profile == "cpu" else f"build/{args.profile}/figures")
        summary = write_pilot_report(args.profile, out_dir)
        if summary is None:
            state = _pilot_progress(args.profile) if plan_value(args.profile, "pilot") else "has no pilot"
            print(f"[plan] the {args.profile} pilot is not complete: {state}; run `python -m tmkd_core.plan "
                  f"--profile {args.profile} --parts pilot`", file=sys.stderr)
            return 1
        table, decided = summary
        print(table.to_string(index=False, float_format="%.2f"))
        print(decided)
        print(f"written: {out_dir}/tables/pilot.md, {out_dir}/results/pilot.json")
        return 0
    if args.primary_report:
        out_dir = args.out_dir or ("figures" if args.profile == "cpu" else f"build/{args.profile}/figures")
        try:
            report = write_primary_report(args.profile, out_dir)
        except (PilotNotSettled, DecisionMismatch) as exc:
            print(f"[plan] {exc}", file=sys.stderr)
            return 2
        if isinstance(report, list):
            print(f"[plan] the primary comparison waits for {len(report)} run(s): "
                  + ", ".join(f"{s.method} seed {s.seed}" for s in report), file=sys.stderr)
            return 1
        table, statistic = report
        print(table.T.to_string(header=False))
        parts = {**{f"teacher seed {t}": p for t, p in statistic["per_teacher"].items()},
                 **statistic["per_cpu"]}
        for name, part in parts.items():
            print(f"sensitivity, the pairs of {name} alone ({part['pairs']}): Δ {part['diff']:+.2f} ± "
                  f"{part['diff_sd']:.2f}, 95% CI [{part['ci_low']:+.2f}, {part['ci_high']:+.2f}]")
        unit = statistic["teacher_level"]
        print(f"sensitivity, the teacher seed as the unit ({unit['teachers']} teacher means): Δ {unit['diff']:+.2f}, "
              f"95% CI [{unit['ci_low']:+.2f}, {unit['ci_high']:+.2f}] (half-width {unit['half_width']:.2f})")
        print(f"written: {out_dir}/tables/primary.md, {out_dir}/results/primary.json")
        return 0
    if args.teacher_report or args.confirmatory_report:
        return _study_reports(args.profile, args.out_dir, store, args.teacher_report, args.confirmatory_report)
    if args.prune_store:
        if store is None:
            parser.error("--prune-store needs a store: " + ("--store none was given" if args.store == "none" else
                                                            f"the {args.profile} profile names none; give --store PATH"))
        if not (Path(store) / "partial").is_dir():
            print(f"[plan] {store} has no partial/ folder: no last-epoch checkpoint to prune")
            return 0
        try:
            stale = stale_partials(whole_plan(args.profile), store)
        except (PilotNotSettled, DecisionMismatch) as exc:
            print(f"[plan] {exc}", file=sys.stderr)
            return 2
        for path in stale:
            if not args.dry_run:
                path.unlink()
            print(f"[plan] {'stale' if args.dry_run else 'removed'}: {path} (no unfinished task resumes from it)")
        print(f"[plan] {len(stale)} stale checkpoint(s) {'listed' if args.dry_run else 'removed'} in {store}/partial")
        return 0
    parts = args.parts or default_parts(args.profile)
    if args.parts is None and parts == ["pilot"]:
        print(f"[plan] the {args.profile} pilot has not decided yet (docs/protocol.md): running the pilot alone",
              flush=True)
    try:
        tasks = plan_tasks(args.profile, parts)
        stale = stale_partials(whole_plan(args.profile), store) if args.dry_run and store is not None else []
    except (PilotNotSettled, DecisionMismatch) as exc:
        print(f"[plan] {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        rate = measure_worker_rate(worker_threads(args.jobs), args.jobs)
        progress = Progress(rate, args.jobs).read_records(tasks, store)

        def stored(t):
            kept = stored_copy(t, store) if store is not None else None
            return kept is not None and kept.exists()

        pending = needed(tasks, done=lambda t: t.done() or stored(t))
        to_run = {t.key for t in pending}
        for t in tasks:
            state = "done" if t.done() else "kept" if stored(t) else "todo" if t.key in to_run else "skip"
            print(f"{state}  {hms(progress.estimate(t)) if state == 'todo' else '-':>7}  {t.title}")
        for path in stale:
            print(f"stale  {path} (no unfinished task resumes from it: --prune-store removes it)")
        print(f"{len(tasks)} tasks, {len(pending)} to run, estimated {hms(progress.left(pending, {}))} on {args.jobs} "
              f"workers (at {rate / 1e9:.1f} GFLOP/s per worker, measured now: a busy machine reads slower)")
        if store is not None:
            starts, seconds = plan_wall_time(Path(store) / "logs")
            print(f"so far: {starts} plan start(s), {hms(seconds)} of plan wall time (the logs in {store}/logs)")
        return 0
    root = Path(tasks[0].cfg.data.root) if tasks else Path("data")
    log_dir = Path(args.log_dir) if args.log_dir else root / "logs" / "plan"
    code = run_plan(tasks, args.jobs, log_dir, say=lambda s: print(s, flush=True), store=store,
                    more=widened_pairs(args.profile, parts), executor=executors.from_args(args, root))
    if code == 0 and not pilot_settled(args.profile):
        summary = pilot_summary(args.profile)
        if summary is not None:
            print(summary[0].to_string(index=False, float_format="%.2f"), "\n", summary[1], sep="")
        print(f"[plan] the pilot is done; the final runs wait for its decisions (docs/protocol.md): apply them to "
              f"the {args.profile} profile and set PROFILE_PLANS[{args.profile!r}]['pilot']['settled'] = True",
              file=sys.stderr)
        return 3  # make reproduce stops here: the notebooks would start the final runs
    return code


if __name__ == "__main__":
    sys.exit(main())
