"""The teacher study's report and decisions, and the confirmatory comparison's report
(docs/protocol.md, "Amendment: powerful teachers"): the study's table and figure
(`write_teacher_report`), the validation choice of TMKD's teacher (`choose_variant`), the
fusion-setting rule (`fusion_screen`, `fusion_check_summary`), the check that the study's
committed settings are what those rules decide (`check_confirmatory_decisions`), and the
confirmatory statistic (`write_confirmatory_report`).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from .teacher_eval import FUSION_GRID, teacher_record
from .teacher_study import Confirmatory, TeacherStudy, TeacherVariant

if TYPE_CHECKING:
    import pandas as pd


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


def selectivity_caption(split: str = "val") -> str:
    """The caption of `selectivity_table` for one split."""
    return ("Do the text weights of the teacher study's multi-view teachers follow which view is right? "
            f"{'Validation' if split == 'val' else 'Test'} split, one row per teacher seed: each view's mean weight "
            "and the correlation over samples of its weight with its probability of the label; how often the "
            "largest weight falls on the view most confident of the label (1/V were it to fall on a view at random, "
            "V views; 'one view always': were it always on the view most often most confident, named); the fused accuracy with the text weights, uniform weights and confidence weights "
            "w_v ∝ p_v(y) (a reference, not a method), all conditioned on the label as the students see it")


def selectivity_table(records: list[dict], chosen: tuple[str, str] | None = None,
                      split: str = "val") -> "pd.DataFrame":
    """Issue #24's step 2, one row per multi-view teacher (dataset, variant, teacher seed),
    from the `selectivity` its evaluation keeps (`analysis.weights_against_views` under the
    teacher configuration's own fusion, conditioned on the label). A table, not a verdict:
    weights that select would show corr(w_v, p_v(y)) > 0 for each view, the largest weight on
    the most confident view well above 1/V and above always weighting one view highest (`one
    view always`: the most often most confident view, named), and text-weighted fusion above
    uniform fusion.
    `chosen` = (dataset, variant) marks the confirmatory comparison's teacher."""
    import pandas as pd

    rows = []
    for r in sorted((r for r in records if r["kind"] == "multiview"),
                    key=lambda r: (r["dataset"], r["variant"], r["teacher_seed"])):
        sel = r[split]["selectivity"]
        views = [v["view"] for v in sel["per_view"]]
        top, fused = sel["top_view"], sel["fused"]
        rows.append({
            "dataset": r["dataset"], "variant": r["variant"], "teacher seed": r["teacher_seed"],
            "chosen": "yes" if (r["dataset"], r["variant"]) == chosen else "",
            "mean weight (" + " / ".join(views) + ")": " / ".join(f"{v['mean_weight']:.3f}" for v in sel["per_view"]),
            "corr(w, p(label)) (" + " / ".join(views) + ")": " / ".join(
                "n/a" if v["corr_weight_p_label"] is None else f"{v['corr_weight_p_label']:+.2f}"
                for v in sel["per_view"]),
            "top weight on most confident view (%)": round(100 * top["top_weight_on_most_confident"], 1),
            "at random (%)": round(100 * top["chance"], 1),
            "one view always (%)": f"{100 * top['one_view_always']:.1f} ({top['one_view']})",
            "fused: text weights (%)": round(fused["fusion_weights"], 2),
            "fused: uniform (%)": round(fused["uniform"], 2),
            "fused: confidence weights (%)": round(fused["confidence_weights"], 2),
            "text − uniform (points)": round(fused["fusion_weights"] - fused["uniform"], 2)})
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
    # the compute-matched RGB teacher, KD's teacher so far, and the RGB ensembles: the direct
    # reading of "is a multi-view teacher more than an ensemble?" (beside the protocol's two)
    references = [study.reference.name, "rgb"] + [v.name for v in study.variants if v.kind == "ensemble"]
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


_STATISTIC = ("test accuracy (%), mean ± sd over pairs; Δ: the mean over teachers of each teacher's mean paired "
              "difference, 95% t-interval over teachers")
CAPTIONS = {  # by comparison (Confirmatory.name)
    "confirmatory": f"Confirmatory comparison (docs/protocol.md, 'Amendment: powerful teachers'): {_STATISTIC}",
    "secondary_confirmatory": ("Secondary confirmatory comparison (docs/protocol.md, 'Secondary confirmatory "
                               f"comparison (CIFAR-10)'; no widening rule): {_STATISTIC}"),
    "ensemble_follow_up": ("Follow-up (docs/protocol.md, 'Follow-up: KD from the RGB ensemble'; no widening rule): "
                           f"TMKD's confirmatory runs against KD from the RGB ensemble, and KD from the ensemble against "
                           f"KD from the confirmatory comparison's teacher at the same student seeds; {_STATISTIC}"),
    "factorial_follow_up": ("Follow-up (docs/protocol.md, 'Follow-up: what earns TMKD's CIFAR-100 gain, teacher × "
                            "terms'; no widening rule): the confirmatory comparison crossed, with a = KD and b = TMKD "
                            "from the RGB teacher, c = KD and d = TMKD from the multi-view teacher at the same student "
                            "seeds; teacher ½[(c − a) + (d − b)], terms ½[(b − a) + (d − c)], interaction "
                            f"(d − b) − (c − a); {_STATISTIC}")}


def write_confirmatory_report(conf: Confirmatory, out_dir) -> tuple[Any, dict] | list:
    """The confirmatory comparison, once every pair of its teachers (the widening rule
    applied) has finished: tables/<name>.{md,csv,tex} and results/<name>.json (`conf.name`:
    confirmatory, secondary_confirmatory, ensemble_follow_up or factorial_follow_up)
    (`runs`: dataset, method, seed, teacher_seed, teacher_variant, val_acc, test_acc, run_key;
    `confirmatory`: `report.teacher_level_comparison` of TMKD − KD; with a `kd_reference`,
    `kd_reference`: the same of KD from `kd_variant` − KD from it; when `crossed`, `factorial`:
    `factorial_statistics`; the runs these read are in `runs` too). Returns (table, statistic,
    with the reference's under "kd_reference" and the 2 x 2's under "factorial"), or the runs
    still missing (all of TMKD's before its teacher is chosen)."""
    import numpy as np
    import pandas as pd

    from .report import Outputs, mean_std, run_record, teacher_level_comparison

    teachers = conf.widened_teacher_seeds()
    specs = conf.runs(teachers)
    references = conf.reference_runs(teachers)
    found = [(spec, conf.finished_record(spec)) for spec in conf.all_runs(teachers)]
    missing = [spec for spec, record in found if record is None]
    if not conf.chosen or missing:
        return [s.title for s in missing] + ([] if conf.chosen else ["TMKD's runs: its teacher is not chosen yet"])
    runs = [{**run_record(spec.dataset, spec.method, record, spec.setting),
             "teacher_variant": spec.setting.removeprefix("teacher=")} for spec, record in found]
    ours = runs[:len(specs)]  # the comparison's runs; then KD's from `kd_reference`, then the crossed cells
    theirs = runs[len(specs):len(specs) + len(references)]
    statistic = teacher_level_comparison(ours, "TMKD", "KD")
    acc = {m: [100 * r["test_acc"] for r in ours if r["method"] == m] for m in ("KD", "TMKD")}
    row = {
        "dataset": conf.dataset, "teachers": statistic["teachers"], "pairs": statistic["pairs"],
        f"KD from {conf.kd_variant.name} (%)": f"{np.mean(acc['KD']):.2f} ± {np.std(acc['KD'], ddof=1):.2f}",
        f"TMKD from {conf.tmkd_variant.name} (%)": f"{np.mean(acc['TMKD']):.2f} ± {np.std(acc['TMKD'], ddof=1):.2f}",
        "Δ TMKD − KD": f"{statistic['diff']:+.2f}", "95% CI": f"[{statistic['ci_low']:+.2f}, {statistic['ci_high']:+.2f}]",
        "half-width": statistic["half_width"],
        "per teacher": ", ".join(f"{t}: {v:+.2f}" for t, v in statistic["per_teacher_diff"].items()),
        "reading": statistic["verdict"]}
    payload = {"confirmatory": statistic, "teacher_seeds": teachers, "dataset": conf.dataset,
               "kd_variant": conf.kd_variant.name, "tmkd_variant": conf.tmkd_variant.name, "secondary": conf.secondary}
    if references:
        ref = conf.kd_reference.name
        ens, reference = (f"KD from {v}" for v in (conf.kd_variant.name, ref))
        kd = teacher_level_comparison([{**r, "method": ens} for r in ours if r["method"] == "KD"]
                                      + [{**r, "method": reference} for r in theirs], ens, reference)
        ref_acc = [100 * r["test_acc"] for r in theirs]
        row.update({f"KD from {ref} (%)": f"{np.mean(ref_acc):.2f} ± {np.std(ref_acc, ddof=1):.2f}",
                    f"Δ KD from {conf.kd_variant.name} − KD from {ref}": f"{kd['diff']:+.2f}",
                    "95% CI (KD − KD)": f"[{kd['ci_low']:+.2f}, {kd['ci_high']:+.2f}]",
                    "per teacher (KD − KD)": ", ".join(f"{t}: {v:+.2f}" for t, v in kd["per_teacher_diff"].items()),
                    "reading (KD − KD)": kd["verdict"]})
        payload.update(kd_reference=kd, kd_reference_variant=ref)
        statistic = {**statistic, "kd_reference": kd}
    table = pd.DataFrame([row])
    if conf.crossed:  # a row per cell of the 2 x 2 (what a-d are), then one per effect, TMKD − KD (d − a) first
        factorial = factorial_statistics(runs, conf.kd_variant.name, conf.tmkd_variant.name)
        accs = {cell: [100 * r["test_acc"] for r in runs if f"{r['method']} from {r['teacher_variant']}" == cell]
                for cell in factorial["cells"].values()}
        factorial["cells_test_acc"] = {cell: dict(zip(("mean", "sd"), mean_std(a)), n=len(a))
                                       for cell, a in accs.items()}
        cells = [{"effect": f"cell {x}", "contrast": cell, "test accuracy (%)": f"{a['mean']:.2f} ± {a['sd']:.2f}"}
                 for x, cell in factorial["cells"].items() for a in [factorial["cells_test_acc"][cell]]]
        effects = [("TMKD − KD (the confirmatory difference)", {**statistic, "contrast": "d − a"}),
                   *((name, factorial[name]) for name in ("teacher", "terms", "interaction")),
                   *(("simple effect", f) for f in factorial["simple"].values())]
        rows = [{"effect": name, "contrast": f["contrast"], "teachers": str(f["teachers"]), "pairs": str(f["pairs"]),
                 "Δ (points)": f"{f['diff']:+.2f}", "95% CI": f"[{f['ci_low']:+.2f}, {f['ci_high']:+.2f}]",
                 "half-width": f"{f['half_width']:.2f}",
                 "per teacher": ", ".join(f"{t}: {v:+.2f}" for t, v in f["per_teacher_diff"].items()),
                 "reading": f.get("verdict", "(no reading)")} for name, f in effects]
        table = pd.DataFrame(cells + rows).fillna("")
        payload.update(factorial=factorial)
        statistic = {**statistic, "factorial": factorial}
    out = Outputs(out_dir)
    out.table(table, conf.name, CAPTIONS[conf.name])
    out.results_json(conf.name, payload, runs=runs)
    return table, statistic


def comparison_panels(comparisons: list[Confirmatory], statistics: dict[str, dict]) -> dict[str, list]:
    """Notebook 04's per-teacher figures (`figures.teacher_differences_figure` panels: title,
    statistic) of the comparisons whose runs have finished (`statistics`: name ->
    `write_confirmatory_report`'s statistic): "teacher_differences", each one's TMKD − KD and,
    with a `kd_reference`, KD − KD (a crossed comparison's TMKD − KD is the confirmatory one's);
    "factorial_effects", a crossed one's teacher, terms and interaction."""
    panels: dict[str, list] = {"teacher_differences": [], "factorial_effects": []}
    for c in comparisons:
        s = statistics.get(c.name)
        if s is None:
            continue
        if c.crossed:
            panels["factorial_effects"] += [(f"{c.dataset} ({c.label}): {name} {s['factorial'][name]['contrast']}",
                                             s["factorial"][name]) for name in ("teacher", "terms", "interaction")]
            continue
        panels["teacher_differences"].append(
            (f"{c.dataset} ({c.label}): TMKD from {c.tmkd_variant.name} − KD from {c.kd_variant.name}", s))
        if c.kd_reference is not None:
            panels["teacher_differences"].append(
                (f"{c.dataset} ({c.label}): KD from {c.kd_variant.name} − KD from {c.kd_reference.name}",
                 s["kd_reference"]))
    return panels


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
    exactly when `fusion_check_summary` adopts it (None without a candidate); and that every
    candidate teacher the choice reads has trained. DecisionMismatch otherwise, naming the
    setting to change: TMKD's final runs never start from a choice the rules did not make."""
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
    from .experiment import TeacherNotTrained

    seeds = dict(study.teacher_seeds)[conf.dataset]
    records = []
    for teacher in conf.candidate_teachers(study):
        try:
            records.append(teacher_record(teacher, cache_dirs))
        except TeacherNotTrained:
            raise DecisionMismatch(f"{where}['tmkd_variant'] = {conf.tmkd_variant.name!r}, but the choice reads "
                                   f"{teacher.title}, not trained yet: set it back to None until every candidate "
                                   f"has trained at teacher seeds {', '.join(map(str, seeds))}") from None
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


def check_secondary_decisions(secondary: Confirmatory, conf: Confirmatory) -> None:
    """A secondary confirmatory comparison as docs/protocol.md fixed it: the confirmatory
    comparison on another dataset, with its KD teacher, students per teacher and teacher once
    chosen (no new choice), the default fusion (no new screen) and its teacher seeds without
    widening. DecisionMismatch otherwise, naming the setting."""
    where = secondary.where
    if not (conf.chosen and conf.fusion_settled):
        raise DecisionMismatch(f"{where} reads the confirmatory comparison's teacher and fusion setting, not "
                               f"decided yet in {conf.where}: leave it out of the plan until they are")
    if secondary.tmkd_variant != conf.tmkd_variant:
        have = secondary.tmkd_variant.name if secondary.tmkd_variant else None
        raise DecisionMismatch(f"{where}['tmkd_variant'] = {have!r}, but the confirmatory comparison's teacher is "
                               f"{conf.tmkd_variant.name!r}: a secondary comparison makes no new choice")
    if secondary.fusion_candidate is not None or secondary.fusion_adopted is not None or not secondary.fusion_settled:
        raise DecisionMismatch(f"{where}: a secondary comparison uses the default fusion (no new screen): set "
                               "fusion_candidate and fusion_adopted to None and fusion_settled to True")
    if secondary.dataset == conf.dataset or secondary.kd_variant != conf.kd_variant \
            or secondary.students_per_teacher != conf.students_per_teacher:
        raise DecisionMismatch(f"{where}: a secondary comparison is the confirmatory one ({conf.kd_variant.name} for KD, "
                               f"{conf.students_per_teacher} students per teacher) on another dataset than "
                               f"{conf.dataset!r}; it has {secondary.dataset!r}, {secondary.kd_variant.name}, "
                               f"{secondary.students_per_teacher}")
    if secondary.max_teachers != len(secondary.teacher_seeds):
        raise DecisionMismatch(f"{where}['max_teachers'] = {secondary.max_teachers}, but a secondary comparison has "
                               f"no widening rule: set it to its {len(secondary.teacher_seeds)} teacher seeds")


def _check_reuses_confirmatory(entry: Confirmatory, conf: Confirmatory) -> None:
    """A follow-up that reuses the confirmatory comparison's runs as they are: its dataset,
    TMKD teacher, fusion, students per teacher and student seeds, at the teacher seeds it ran,
    and no widening rule. DecisionMismatch otherwise, naming the setting."""
    where = entry.where
    if not (conf.chosen and conf.fusion_settled):
        raise DecisionMismatch(f"{where} reuses the confirmatory comparison's runs, whose teacher and fusion "
                               f"setting are not decided yet in {conf.where}: leave it out of the plan until they are")
    wrong = [f"{k} = {_shown(getattr(entry, k))} (the confirmatory comparison's: {_shown(getattr(conf, k))})"
             for k in ("dataset", "tmkd_variant", "fusion_adopted", "students_per_teacher", "seed_base")
             if getattr(entry, k) != getattr(conf, k)]
    wrong += ([f"fusion_candidate = {_shown(entry.fusion_candidate)} (set it to null)"]
              if entry.fusion_candidate is not None else [])
    wrong += [] if entry.fusion_settled else ["fusion_settled = false (set it to true)"]
    if wrong:
        raise DecisionMismatch(f"{where}: the {entry.label} reuses the confirmatory comparison's runs as they are; "
                               f"it has {'; '.join(wrong)}")
    ran = conf.widened_teacher_seeds()
    if list(entry.teacher_seeds) != ran:
        raise DecisionMismatch(f"{where}['teacher_seeds'] = {list(entry.teacher_seeds)}, but the confirmatory "
                               f"comparison's TMKD runs are at teacher seeds {ran}: set it to those")
    if entry.max_teachers != len(entry.teacher_seeds):
        raise DecisionMismatch(f"{where}['max_teachers'] = {entry.max_teachers}, but the {entry.label} has no "
                               f"widening rule: set it to its {len(entry.teacher_seeds)} teacher seeds")


def check_follow_up_decisions(follow_up: Confirmatory, conf: Confirmatory) -> None:
    """The ensemble follow-up as docs/protocol.md fixed it ("Follow-up: KD from the RGB
    ensemble"): the confirmatory comparison's TMKD runs as they are (`_check_reuses_confirmatory`),
    against KD from an ensemble variant, with the confirmatory comparison's KD teacher as
    `kd_reference`. DecisionMismatch otherwise, naming the setting."""
    _check_reuses_confirmatory(follow_up, conf)
    if follow_up.kd_variant.kind != "ensemble" or follow_up.kd_reference != conf.kd_variant:
        have = follow_up.kd_reference.name if follow_up.kd_reference else None
        raise DecisionMismatch(f"{follow_up.where}: set 'kd_variant' to an ensemble variant (rgb_ens2) and "
                               f"'kd_reference' to the confirmatory comparison's KD teacher {conf.kd_variant.name!r}; "
                               f"it has kd_variant {follow_up.kd_variant.name!r} ({follow_up.kd_variant.kind}) and "
                               f"kd_reference {have!r}")


def check_factorial_decisions(factorial: Confirmatory, conf: Confirmatory) -> None:
    """The factorial follow-up as docs/protocol.md fixed it ("Follow-up: what earns TMKD's
    CIFAR-100 gain, teacher × terms"): the confirmatory comparison's runs as they are
    (`_check_reuses_confirmatory`), with its KD teacher too, `crossed`. DecisionMismatch
    otherwise, naming the setting."""
    _check_reuses_confirmatory(factorial, conf)
    wrong = ([] if factorial.kd_variant == conf.kd_variant else
             [f"kd_variant = {_shown(factorial.kd_variant)} (the confirmatory comparison's: {_shown(conf.kd_variant)})"])
    wrong += [] if factorial.crossed else ["crossed = false (set it to true)"]
    if wrong:
        raise DecisionMismatch(f"{factorial.where}: the factorial follow-up crosses the confirmatory comparison's "
                               f"two teachers and two losses; it has {'; '.join(wrong)}")


def _shown(value) -> str:
    """A setting as a study file writes it: a variant by its name, None as null, a fusion setting as an object."""
    if isinstance(value, TeacherVariant):
        value = value.name
    elif isinstance(value, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        value = dict(value)
    return json.dumps(value)


def factorial_statistics(runs: list[dict], kd_variant: str, tmkd_variant: str) -> dict[str, Any]:
    """docs/protocol.md, "Follow-up: what earns TMKD's CIFAR-100 gain, teacher × terms". With, per
    (teacher seed t, student seed i), a = KD and b = TMKD from `kd_variant`'s teacher, c = KD and
    d = TMKD from `tmkd_variant`'s:

        teacher      T = ½ [(c − a) + (d − b)]
        terms        E = ½ [(b − a) + (d − c)]          T + E = d − a
        interaction  I = (d − b) − (c − a)

    each `report.teacher_level_comparison` (mean of the teacher means, t-interval over
    teachers, its reading), and under `simple` the four simple effects b − a, d − b, c − a,
    d − c the same way, without a `verdict` (no reading pre-registered). `runs`: records with `method`,
    `teacher_variant`, `teacher_seed`, `seed`, `test_acc`."""
    from .report import teacher_level_comparison

    acc = {(r["method"], r["teacher_variant"], r["teacher_seed"], r["seed"]): r["test_acc"] for r in runs}
    pairs = sorted({(t, s) for (_, _, t, s) in acc})
    cells = {"a": ("KD", kd_variant), "b": ("TMKD", kd_variant), "c": ("KD", tmkd_variant), "d": ("TMKD", tmkd_variant)}
    missing = [f"{m} from {v} (teacher seed {t}, seed {s})" for t, s in pairs for m, v in cells.values()
               if (m, v, t, s) not in acc]
    if missing:
        raise ValueError(f"the 2 x 2 lacks {len(missing)} run(s): {', '.join(missing[:4])}")

    def contrast(name: str, ours: dict[str, float], theirs: dict[str, float], method: str, reference: str) -> dict:
        """The teacher-level statistic of sum(ours[x] * x) − sum(theirs[x] * x) over the cells x."""
        def side(label, weights):
            return [{"method": label, "teacher_seed": t, "seed": s,
                     "test_acc": sum(w * acc[(*cells[x], t, s)] for x, w in weights.items())} for t, s in pairs]
        return {"contrast": name, **teacher_level_comparison(side(method, ours) + side(reference, theirs),
                                                             method, reference)}

    kd, mv, tmkd_loss, kd_loss = f"KD from {kd_variant}", f"KD from {tmkd_variant}", "TMKD's loss", "KD's loss"
    return {
        "teacher": contrast("½[(c − a) + (d − b)]", {"c": .5, "d": .5}, {"a": .5, "b": .5}, tmkd_variant, kd_variant),
        "terms": contrast("½[(b − a) + (d − c)]", {"b": .5, "d": .5}, {"a": .5, "c": .5}, tmkd_loss, kd_loss),
        "interaction": contrast("(d − b) − (c − a)", {"d": 1, "a": 1}, {"b": 1, "c": 1},
                                f"{tmkd_variant}'s gain under TMKD's loss", f"{tmkd_variant}'s gain under KD's"),
        "cells": {x: f"{m} from {v}" for x, (m, v) in cells.items()},
        "simple": {name: {k: v for k, v in contrast(name, *weights).items() if k != "verdict"}
                   for name, weights in {
                       "b − a": ({"b": 1}, {"a": 1}, f"TMKD from {kd_variant}", kd),
                       "d − b": ({"d": 1}, {"b": 1}, f"TMKD from {tmkd_variant}", f"TMKD from {kd_variant}"),
                       "c − a": ({"c": 1}, {"a": 1}, mv, kd),
                       "d − c": ({"d": 1}, {"c": 1}, f"TMKD from {tmkd_variant}", mv)}.items()}}
