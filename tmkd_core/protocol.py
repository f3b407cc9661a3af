"""docs/protocol.md's rules, applied to a study (tmkd_core.study.Study): the pilot's decisions
(`pilot_summary`, `check_pilot_decisions`), the widening rule (`widen_pairs`), and the pilot's
and primary comparison's reports (`write_pilot_report`, `write_primary_report`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from .study import PilotNotSettled, RunSpec

if TYPE_CHECKING:
    from .study import Study


DECISION_MARGIN = 0.3  # points of validation accuracy a variant must gain (docs/protocol.md)


KD_FLOOR = 78.0  # % that KD's student must reach before the final runs (docs/protocol.md)


MAX_PAIRS = 24  # the most primary pairs the protocol runs


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


def widen_from_records(seeds: list[int], diff_of: Callable[[int], float | None], n_teachers: int,
                       most: int | None = None) -> list[int]:
    """`widen_pairs` applied until it adds nothing: `diff_of(seed)` is a seed's paired
    difference in points, None while its runs have not all finished; a widening step reads
    the seeds it added, since they may have finished too."""
    seeds, diffs = list(seeds), {}
    while True:
        for seed in set(seeds) - set(diffs):
            if (d := diff_of(seed)) is not None:
                diffs[seed] = d
        wider = widen_pairs(seeds, diffs, n_teachers, most)
        if wider == seeds:
            return seeds
        seeds = wider


def check_pilot_decisions(study: Study) -> None:
    """For a settled pilot: that every pilot run is there, KD reached KD_FLOOR, the variants
    the rule adopted are the study's `adopted` list, and each method's final settings hold
    exactly the adopted variants (and the pinned baseline elsewhere). PilotNotSettled if not."""
    from .experiment import get_path

    pilot, name = study.pilot, study.name
    if not pilot or not pilot.settled:
        return
    summary = pilot_summary(study)
    if summary is None:
        raise PilotNotSettled(f"the {name} pilot is marked settled but {pilot_progress(study)}")
    decided = summary[1]
    if not decided["kd_reaches_floor"]:
        raise PilotNotSettled(f"the {name} pilot's KD reached {decided['kd_val']:.2f}% validation, under "
                              f"{KD_FLOOR}%: raise the students' epochs and rerun the pilot (docs/protocol.md)")
    adopted = sorted(label for label, yes in decided["adopted"].items() if yes)
    if adopted != sorted(pilot.adopted):
        raise PilotNotSettled(f"the {name} pilot's rule adopted {adopted}, the study says "
                              f"{sorted(pilot.adopted)} ({study.where}['pilot']['adopted'])")
    for method, variants in pilot.variants.items():
        final = study.config(RunSpec(pilot.dataset, method, 0, pilot.teacher_seed))
        for label, overrides in variants.items():
            chosen = f"{method} [{label}]" in adopted
            for key, value in overrides.items():
                want = value if chosen else pilot.baseline.get(key, get_path(final, key))
                if get_path(final, key) != want:
                    raise PilotNotSettled(f"{method} [{label}] was {'adopted' if chosen else 'not adopted'}, but the "
                                          f"{name} study's {method} has {key} = {get_path(final, key)!r}, not "
                                          f"{want!r}")


def pilot_progress(study: Study) -> str:
    """How far the pilot has run, and why stored records may not count here (`store_drift`)."""
    runs = study.pilot_runs()
    done = sum(study.finished_record(s) is not None for s in runs)
    drift = store_drift(study) if done < len(runs) else []
    packages = any("frozen teacher" not in d for d in drift)
    return f"{done} of its {len(runs)} runs are finished" + (
        f"; this environment differs from the one that made the store's run records, in what enters their "
        f"keys or numbers ({'; '.join(drift)})" + (": install the pinned packages (make setup)" if packages else "")
        if drift else "")


def pilot_declaration(pilot) -> dict:
    """The pilot as declared (the keys of a study's `pilot` entry), for results/pilot.json."""
    return {"dataset": pilot.dataset, "teacher_seed": pilot.teacher_seed, "seeds": list(pilot.seeds),
            "methods": list(pilot.methods), "settled": pilot.settled, "adopted": list(pilot.adopted),
            "baseline": pilot.baseline, "variants": pilot.variants}


def store_drift(study: Study) -> list[str]:
    """How this environment differs from the one that made the study's stored run records,
    in what enters the keys or the numbers: package versions and the frozen teacher's
    precision (e.g. "sentence-transformers 6.2.0 there, 6.3.0 here (34 records)"). Empty without a store."""
    from .config import make_config
    from .utils import resolve_device, run_metadata, teacher_dtype

    store, profile = study.store, study.profile
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


def pilot_summary(study: Study) -> tuple[Any, dict] | None:
    """The pilot's table (validation only) and what docs/protocol.md's rules decide from it:
    each variant adopted or not (mean paired gain > DECISION_MARGIN), whether KD reaches
    KD_FLOOR, and the pairs the seed rule asks for. None if a pilot run is missing."""
    import numpy as np
    import pandas as pd

    from .report import paired_difference, seeds_needed

    pilot = study.pilot
    if not pilot:
        return None
    val: dict[tuple[str, str], list[float]] = {}
    for spec in sorted(study.pilot_runs(), key=lambda r: r.seed):
        record = study.finished_record(spec)
        if record is None:
            return None
        val.setdefault((spec.method, spec.setting), []).append(record["val_acc"])
    d = paired_difference(val["TMKD", ""], val["KD", ""])
    rows = [{"comparison": "TMKD - KD", "seeds": len(val["KD", ""]), "val Δ (points)": 100 * d["diff"],
             "sd of Δ": 100 * d["diff_sd"], "mean val (%)": 100 * np.mean(val["TMKD", ""]), "adopt": ""}]
    adopted = {}
    for method, variants in pilot.variants.items():
        for label in variants:
            v = paired_difference(val[method, label], val[method, ""])
            adopted[method, label] = 100 * v["diff"] > DECISION_MARGIN
            rows.append({"comparison": f"{method} [{label}] - {method}", "seeds": len(val[method, label]),
                         "val Δ (points)": 100 * v["diff"], "sd of Δ": 100 * v["diff_sd"],
                         "mean val (%)": 100 * np.mean(val[method, label]),
                         "adopt": "yes" if adopted[method, label] else "no"})
    n_teachers = len(study.teacher_seeds(pilot.dataset))
    kd_val = 100 * float(np.mean(val["KD", ""]))
    return pd.DataFrame(rows), {"kd_val": kd_val, "kd_reaches_floor": kd_val >= KD_FLOOR,
                                # the protocol runs at most MAX_PAIRS, and reports a half-width missed
                                "pairs_needed": min(seeds_needed(d["diff_sd"], multiple=n_teachers), MAX_PAIRS),
                                "sd_diff": 100 * d["diff_sd"], "adopted": {f"{m} [{lab}]": a for (m, lab), a
                                                                          in adopted.items()}}


def write_pilot_report(study: Study, out_dir: str | Path) -> tuple[Any, dict] | None:
    """`pilot_summary` written where the study's figures go: tables/pilot.{csv,md,tex} and
    results/pilot.json (the decisions and every pilot run's record); None if incomplete."""
    from .report import Outputs, run_record

    summary = pilot_summary(study)
    if summary is None:
        return None
    table, decided = summary
    pilot = study.pilot
    out = Outputs(out_dir)
    out.table(table, "pilot", f"Validation pilot (seeds {', '.join(map(str, pilot.seeds))}): paired differences "
                              f"in validation accuracy; a variant is adopted above +{DECISION_MARGIN} point")
    runs = [run_record(s.dataset, s.method, study.finished_record(s), s.setting) for s in study.pilot_runs()]
    out.results_json("pilot", {"decided": decided, "pilot": pilot_declaration(pilot), "decision_margin": DECISION_MARGIN,
                               "kd_floor": KD_FLOOR}, runs=runs)
    return summary


def write_primary_report(study: Study, out_dir: str | Path) -> tuple[Any, dict] | list[RunSpec]:
    """docs/protocol.md's primary comparison, read once every pair of `primary_seeds` (the
    widening rule applied) has finished, without waiting for the rest of the plan: written
    where notebook 04 writes it too (tables/primary.{csv,md,tex}) with results/primary.json
    (the statistic and every run's record). Returns (table, statistic), or the runs still
    missing."""
    from .report import PRIMARY_CAPTION, Outputs, primary_comparison, primary_table, run_record, teacher_level_comparison

    primary = study.primary
    if not primary:
        raise PilotNotSettled(f"the {study.name} study has no primary comparison (its 'primary')")
    study.check_settled()
    method, reference = primary.method, primary.reference
    seeds = study.primary_seeds()
    found = [(spec, study.finished_record(spec)) for spec in study.runs(primary.dataset, [reference, method], seeds)]
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
    table = primary_table(statistic, primary.dataset, method, reference)
    out = Outputs(out_dir)
    out.table(table, "primary", PRIMARY_CAPTION)
    out.results_json("primary", {"primary": statistic, "primary_seeds": seeds, "dataset": primary.dataset},
                     runs=records)
    return table, statistic
