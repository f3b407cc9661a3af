"""Figures that show a comparison: paired differences with their 95% intervals (forest
plots), each pair a point coloured by its teacher seed, and the teacher study's accuracy
against compute. Legends sit outside the data."""
from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

SEED_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def seed_colour(seed: int, seeds: Sequence[int]) -> str:
    return SEED_COLOURS[sorted(seeds).index(seed) % len(SEED_COLOURS)]


def forest(ax, rows: Sequence[dict[str, Any]], xlabel: str, seed_label: str = "teacher seed") -> None:
    """One row per comparison, top to bottom: `label`, the mean `diff` as a black diamond with
    its 95% interval [`ci_low`, `ci_high`] (none if missing), and its `points`, (difference,
    teacher seed) pairs, jittered vertically and coloured by teacher seed; a line at 0.
    Differences in points of accuracy."""
    seeds = sorted({s for row in rows for _, s in row.get("points", ())})
    rng = np.random.default_rng(0)  # fixed jitter: the same figure on every rerun
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        points = row.get("points", ())
        if points:
            values = np.array([p for p, _ in points], float)
            ax.scatter(values, y + rng.uniform(-0.18, 0.18, len(values)), s=14, alpha=0.75, zorder=2,
                       c=[seed_colour(s, seeds) for _, s in points], linewidths=0)
        if row.get("ci_low") is not None and np.isfinite(row["ci_low"]):
            ax.plot([row["ci_low"], row["ci_high"]], [y, y], color="black", lw=2, zorder=3)
        ax.plot([row["diff"]], [y], marker="D", color="black", ms=6, zorder=4)
    ax.axvline(0, color="grey", lw=1, ls="--", zorder=1)
    ax.set_yticks(range(len(rows)), [row["label"] for row in rows][::-1])
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel(xlabel)
    if seeds:
        handles = [ax.scatter([], [], s=14, c=seed_colour(s, seeds)) for s in seeds]
        ax.legend(handles, [f"{seed_label} {s}" for s in seeds], loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False, fontsize=8)


def teacher_study_figure(records: list[dict], variants: Sequence[str], reference: str, datasets: Sequence[str]):
    """Per dataset (a row): test accuracy as deployed against training compute, one point per
    teacher seed and a variant's mean ringed; and each variant's paired difference to the
    compute-matched RGB teacher (`reference`) over teacher seeds, as deployed and as TMKD's
    students see it (label-conditioned), with 95% intervals."""
    import matplotlib.pyplot as plt

    from .teacher_report import measure, paired_to_reference

    fig, axes = plt.subplots(len(datasets), 2, figsize=(10, 3.4 * len(datasets)), squeeze=False,
                             layout="constrained", width_ratios=(1, 1.15))
    markers = dict(zip(variants, "osD^v<>ph*"))
    for (ax, fax), dataset in zip(axes, datasets):
        mine = [r for r in records if r["dataset"] == dataset]
        for k, v in enumerate(variants):
            rs = [r for r in mine if r["variant"] == v]
            if not rs:
                continue
            x = rs[0]["compute_view_epochs"] + (k - len(variants) / 2) * 0.35  # side by side at equal compute
            acc = [r["test"]["deployed"] for r in rs]
            ax.scatter([x] * len(acc), acc, marker=markers[v], s=18, alpha=0.5, color=f"C{k}")
            ax.scatter([x], [np.mean(acc)], marker=markers[v], s=70, facecolors="none", edgecolors=f"C{k}", lw=1.5,
                       label=v)
        ax.set_xlabel("training compute (view-epochs, what a teacher starts from included)")
        ax.set_ylabel("test accuracy as deployed (%)")
        ax.set_title(dataset, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
        rows = []
        for v in variants:
            if v == reference:
                continue
            rs = [r for r in mine if r["variant"] == v]
            both = rs and rs[0]["kind"] == "multiview"  # an RGB teacher's students see what it deploys
            for name, label in (("deployed", "deployed"), ("label_conditioned", "label-cond."))[: 2 if both else 1]:
                ref = {r["teacher_seed"]: measure(r, "test", name) for r in mine if r["variant"] == reference}
                points = [(measure(r, "test", name) - ref[r["teacher_seed"]], r["teacher_seed"])
                          for r in rs if r["teacher_seed"] in ref]
                if not points:
                    continue
                d = paired_to_reference(mine, v, reference, "test", name)
                rows.append({"label": f"{v}, {label}", "points": points,
                             "diff": float(np.mean([p for p, _ in points])),
                             "ci_low": d["ci_low"] if d else None, "ci_high": d["ci_high"] if d else None})
        if rows:
            forest(fax, rows, f"Δ test accuracy to {reference} (points)")
        else:
            fax.text(0.5, 0.5, f"no {reference} teacher trained yet", ha="center", va="center", transform=fax.transAxes)
            fax.set_axis_off()
        fax.set_title(f"{dataset}: paired difference to the compute-matched RGB teacher", loc="left", fontsize=9)
    return fig


def paired_row(label: str, results: Sequence[dict], reference: Sequence[dict], metric: str = "test_acc") -> dict:
    """A forest row: each run of `results` minus the `reference` run of its (teacher seed,
    seed), in points, as points coloured by teacher seed, with the mean and 95% t-interval
    (`report.paired_to`; under 3 pairs no interval is drawn)."""
    from .report import paired_to, run_pair

    ref = {run_pair(r): r[metric] for r in reference}
    d = paired_to(results, reference, metric)
    points = [(100 * (r[metric] - ref[run_pair(r)]), run_pair(r)[0]) for r in results]
    wide = len(points) < 3
    return {"label": f"{label} ({len(points)})", "points": points, "diff": 100 * d["diff"],
            "ci_low": None if wide else 100 * d["ci_low"], "ci_high": None if wide else 100 * d["ci_high"]}


def distillation_forest(records: Sequence[dict], primary: tuple[str, str, str] | None,
                        steps: Sequence[tuple[str, str, str]], reference: str = "KD", leave_out=("CE",)):
    """Notebook 04's answer at a glance. Left: every method's paired difference to `reference`
    per dataset (the primary comparison, `primary` = (dataset, method, reference), on all its
    pairs; the others on their own seeds; `leave_out` methods are off the scale: see the
    table). Right: where the difference comes from (`steps`, `report.GAIN_STEPS`) on the
    primary dataset, every step on the pairs all its methods ran."""
    import matplotlib.pyplot as plt

    from .report import group_runs, run_pair

    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    left = []
    for dataset in datasets:
        runs = group_runs(r for r in records if r["dataset"] == dataset and not r.get("setting"))
        for method, results in runs.items():
            if method == reference or method in leave_out or reference not in runs:
                continue
            mine = {run_pair(r) for r in runs[reference]}
            paired = [r for r in results if run_pair(r) in mine]
            is_primary = bool(primary) and (dataset, method, reference) == tuple(primary)
            row = paired_row(f"{dataset}{' (primary)' if is_primary else ''}: {method} − {reference}", paired,
                             runs[reference])
            left.insert(0, row) if is_primary else left.append(row)  # the answer on top
    right = []
    if primary:
        runs = group_runs(r for r in records if r["dataset"] == primary[0] and not r.get("setting"))
        steps = [s for s in steps if s[1] in runs and s[2] in runs]
        common = set.intersection(*({run_pair(r) for r in runs[m]} for _, *ms in steps for m in ms)) if steps else set()
        for label, method, ref in steps:
            right.append(paired_row(f"{label}:\n{method} − {ref}", [r for r in runs[method] if run_pair(r) in common],
                                    [r for r in runs[ref] if run_pair(r) in common]))
    fig, axes = plt.subplots(2, 1, figsize=(8, 0.5 * (len(left) + len(right)) + 2.4), layout="constrained",
                             height_ratios=(max(len(left), 1), max(len(right), 1)), squeeze=False)
    forest(axes[0, 0], left, f"Δ test accuracy to {reference} (points); points: pairs (teacher seed, student seed)")
    axes[0, 0].set_title(f"Each method against {reference}, paired by seed (95% t-intervals)", loc="left", fontsize=10)
    if right:
        forest(axes[1, 0], right, "Δ test accuracy (points)")
        axes[1, 0].set_title(f"Where the difference comes from ({primary[0]}, the pairs every step ran)",
                             loc="left", fontsize=10)
    else:
        axes[1, 0].set_axis_off()
    return fig


def ablation_forest(kd: Sequence[dict], tmkd: Sequence[dict], table) -> "plt.Figure":
    """Notebook 05's ablations at a glance: each non-default setting's paired test difference
    to its group's default (rows of `report.ablation_table`), pairs coloured by teacher seed."""
    import matplotlib.pyplot as plt

    from .report import group_runs

    by_setting = group_runs(tmkd, by="setting")
    rows = []
    for group in dict.fromkeys(table["group"]):
        labels = list(table[table["group"] == group]["setting"])
        default = next((s.removesuffix(" (default)") for s in labels if s.endswith(" (default)")), None)
        for label in labels:
            if default is None or label.endswith(" (default)"):
                continue
            rows.append(paired_row(f"{group}: {label} − {default}", by_setting[f"{group}={label}"],
                                   by_setting[f"{group}={default}"]))
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.4), layout="constrained")
    forest(ax, rows, "Δ test accuracy to TMKD's default setting (points)")
    ax.set_title("Ablations of TMKD, paired by seed (95% t-intervals)", loc="left", fontsize=10)
    return fig


def teacher_forest(ax, statistic: dict[str, Any], title: str) -> None:
    """One comparison with the teacher as the unit (`report.teacher_level_comparison`): a row
    per teacher seed, its student seeds' paired differences as dots, their range as a line and
    their mean D(t) as a ringed point; on top, the mean over teachers with its 95% t-interval
    (T − 1 degrees of freedom). The band is the tie margin the statistic was read with."""
    teachers = list(statistic["per_teacher_pairs"])
    n = len(teachers)
    ax.axvspan(-statistic["tie_margin"], statistic["tie_margin"], color="0.92", zorder=0)
    ax.axvline(0, color="grey", lw=1, ls="--", zorder=1)
    rng = np.random.default_rng(0)  # fixed jitter: the same figure on every rerun
    for i, t in enumerate(teachers):
        y, pairs, colour = n - 1 - i, np.asarray(statistic["per_teacher_pairs"][t], float), seed_colour(t, teachers)
        ax.plot([pairs.min(), pairs.max()], [y, y], color=colour, lw=1.5, zorder=2)
        ax.scatter(pairs, y + rng.uniform(-0.15, 0.15, len(pairs)), s=14, color=colour, alpha=0.8, linewidths=0,
                   zorder=3)
        ax.plot([statistic["per_teacher_diff"][t]], [y], marker="o", ms=8, mfc="white", mec=colour, mew=2, zorder=4)
    ax.plot([statistic["ci_low"], statistic["ci_high"]], [n, n], color="black", lw=2, zorder=3)
    ax.plot([statistic["diff"]], [n], marker="D", color="black", ms=7, zorder=4)
    labels = [f"teacher seed {t} ({len(statistic['per_teacher_pairs'][t])} students)" for t in teachers]
    ax.set_yticks(range(n + 1), labels[::-1] + [f"mean over {n} teachers (95% CI)"])
    ax.set_ylim(-0.6, n + 0.6)
    ax.set_title("\n".join(textwrap.wrap(title, 60)), loc="left", fontsize=10)  # long titles must not run into the next panel
    ax.set_xlabel(f"Δ {statistic['metric'].removesuffix('_acc')} accuracy (points)")


def teacher_differences_figure(panels: Sequence[tuple[str, dict[str, Any]]], per_row: int = 3) -> "plt.Figure":
    """Notebook 04's per-teacher picture: one `teacher_forest` per comparison (title,
    `teacher_level_comparison`), `per_row` side by side (so that the figure stays readable
    on a page), each on its own scale."""
    import matplotlib.pyplot as plt

    lines = max(len(s["per_teacher_pairs"]) for _, s in panels) + 1
    cols = min(per_row, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, (0.45 * lines + 1.6) * rows), layout="constrained",
                             squeeze=False)
    for ax, (title, statistic) in zip(axes.flat, panels):
        teacher_forest(ax, statistic, title)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    return fig


def study_summary_figure(rows: Sequence[tuple[str, dict[str, Any]]]) -> "plt.Figure":
    """Every teacher-level statistic of the study on one axis: a row per statistic (title,
    `report.teacher_level_comparison`), top to bottom, its mean over teachers (diamond) with
    the 95% t-interval over teachers and each teacher's mean D(t) as a dot coloured by teacher
    seed; its reading on the right; behind each row a grey band, the tie margin it was read
    with."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    fig, ax = plt.subplots(figsize=(13, 0.5 * len(rows) + 1.4), layout="constrained")
    for i, (_, s) in enumerate(rows):
        y, margin = len(rows) - 1 - i, s["tie_margin"]
        ax.add_patch(Rectangle((-margin, y - 0.5), 2 * margin, 1, color="0.92", zorder=0, linewidth=0))
    forest(ax, [{"label": title, "diff": s["diff"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                 "points": [(v, int(t)) for t, v in s["per_teacher_diff"].items()]} for title, s in rows],
           "Δ test accuracy (points)")
    seeds = sorted({int(t) for _, s in rows for t in s["per_teacher_diff"]})
    handles = [ax.scatter([], [], s=14, c=seed_colour(t, seeds)) for t in seeds]
    ax.get_legend().remove()  # forest's legend beside the axes: below the figure here, the readings on the right
    fig.legend(handles, [f"teacher seed {t}" for t in seeds], loc="outside lower center", ncol=len(seeds),
               frameon=False, fontsize=8)
    readings = ax.twinx()
    readings.set_ylim(ax.get_ylim())
    # the reading without its trailing explanation ("inconclusive (the interval contains 0 ...)")
    short = [re.sub(r" \([^()]*\)$", "", s.get("verdict", "")) for _, s in rows]
    readings.set_yticks(range(len(rows)), short[::-1], fontsize=9)
    return fig
