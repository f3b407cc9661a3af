"""Writing results: figures (PNG + PDF), tables (CSV, Markdown, LaTeX), results JSON, and
the seed statistics the tables report (mean, standard deviation, paired difference)."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from .config import ABLATIONS, config_to_dict, method_config
from .utils import atomic_write_text, run_metadata, write_json


def find_root(start: str | Path | None = None) -> Path:
    """The project root (the folder holding pyproject.toml) at or above `start` (default cwd)."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").exists() and (folder / "tmkd_core").is_dir():
            return folder
    raise FileNotFoundError(f"no TMKD project root (pyproject.toml + tmkd_core/) at or above {here}")


def enter_project_root() -> Path:
    """chdir to the project root and return it, so that the configuration's relative paths
    (data/, ../shared/data) mean the same from papermill, nbval (which starts kernels in
    the notebook's folder) and JupyterLab."""
    root = find_root()
    os.chdir(root)
    return root


class Outputs:
    """Where one notebook run writes: figures/, figures/tables/, figures/results/."""

    def __init__(self, out_dir: str | Path):
        self.figures = Path(out_dir)
        self.tables = self.figures / "tables"
        self.results = self.figures / "results"
        for d in (self.figures, self.tables, self.results):
            d.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()

    def figure(self, fig, name: str) -> None:
        """Save as PNG + PDF. The figure stays open, so that a notebook shows it inline (the
        inline backend displays and closes it at the end of the cell); returns nothing, so
        that a cell ending here prints no path."""
        for ext in ("png", "pdf"):
            # A fixed creation date keeps PDFs byte-identical across reruns.
            meta = {"CreationDate": None} if ext == "pdf" else {"Software": None}
            fig.savefig(self.figures / f"{name}.{ext}", dpi=150, bbox_inches="tight", metadata=meta)

    def table(self, df: pd.DataFrame, name: str, caption: str = "", float_format: str = "{:.2f}") -> Path:
        df.to_csv(self.tables / f"{name}.csv", index=False)
        atomic_write_text(markdown_table(df) + "\n", self.tables / f"{name}.md")
        latex = df.style.hide(axis="index").format(precision=2).to_latex(
            hrules=True, caption=caption or None, label=f"tab:{name}")  # booktabs rules
        atomic_write_text(latex, self.tables / f"{name}.tex")
        return self.tables / f"{name}.md"

    def results_json(self, name: str, payload: dict[str, Any], cfg=None, seeds: Sequence[int] | None = None,
                     runs: Sequence[dict] = ()) -> None:
        """The notebook's results file: its payload, every student run it used (`runs`, see
        `run_record`), the configuration and the provenance of the process. Returns nothing,
        so that a notebook's last cell prints no local path."""
        precision = None
        if cfg is not None:
            from .experiment import Pipeline  # late: the pipeline imports most of the library

            precision = Pipeline(cfg).precision()
        write_json({"notebook": name, "config": config_to_dict(cfg) if cfg is not None else None,
                    "seeds": list(seeds) if seeds is not None else None, "runs": list(runs),
                    "wall_time_s": time.perf_counter() - self.started, **run_metadata(precision), **payload},
                   self.results / f"{name}.json")


def markdown_table(df: pd.DataFrame) -> str:
    """A pipe table with numbers to 2 decimals and text verbatim, a column right-aligned when
    every cell reads as a number ("+0.49" included), missing cells blank. tabulate's own
    number parsing would read text such as "+0.49" as a number and drop its sign, so cells
    are formatted here and its parsing is turned off."""
    columns = [df.iloc[:, j] for j in range(df.shape[1])]  # by position: names may repeat
    cells = [["" if _missing(v) else f"{v:.2f}" if isinstance(v, (float, np.floating)) else str(v) for v in col]
             for col in columns]
    right = [all(_reads_as_number(v) for v in col if not _missing(v)) for col in columns]
    rows = [list(row) for row in zip(*cells)] if cells else []
    return pd.DataFrame(rows, columns=range(len(columns))).to_markdown(
        index=False, headers=[str(c) for c in df.columns], disable_numparse=True,
        colalign=["right" if r else "left" for r in right])


def _missing(value: Any) -> bool:
    """None, NaN, pd.NA or an empty string (a row without that statistic)."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def _reads_as_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, float, np.number)):
        return True
    try:
        float(str(value))
        return True
    except ValueError:
        return False


def t_quantile_975(dof: int) -> float:
    """Two-sided 95% Student-t quantile (scipy, a dependency of scikit-image)."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    v = np.asarray(list(values), dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Mean of a_i - b_i over seeds, its standard deviation and 95% t-interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    mean, sd = mean_std(d)
    half = t_quantile_975(len(d) - 1) * sd / math.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"diff": mean, "diff_sd": sd, "ci_low": mean - half, "ci_high": mean + half}


def fmt_pm(mean: float, sd: float, scale: float = 100.0) -> str:
    return f"{mean * scale:.2f} ± {sd * scale:.2f}"


RUN_FIELDS = ("dataset", "method", "setting", "teacher_seed", "seed", "val_acc", "test_acc", "run_key", "train_time_s",
              "cpu_model")


def run_record(dataset: str, method: str, result: dict, setting: str = "") -> dict:
    """What a results file keeps of one student run: enough to recompute any mean, sd or
    interval of its tables without the git-ignored data/ (`RUN_FIELDS`)."""
    teacher_seed = result.get("config", {}).get("teacher", {}).get("seed", 0)  # older records: seed 0
    return {"dataset": dataset, "method": method, "setting": setting, "teacher_seed": teacher_seed,
            **{k: result[k] for k in ("seed", "val_acc", "test_acc", "run_key", "train_time_s")},
            "cpu_model": run_cpu(result)}


def run_cpu(result: dict) -> str | None:
    """The CPU a run trained on: its epochs' `cpu_model` where they record it, "mixed" if it
    was resumed on another CPU (an epoch that records none ran before epochs kept it, so it
    counts as another); records older than that: the record's own `cpu_model`."""
    epochs = [h.get("cpu_model") for h in result.get("history", [])]
    if not any(epochs):
        return result.get("cpu_model")
    return epochs[0] if len(set(epochs)) == 1 else "mixed"


def seeds_needed(sd_diff: float, half_width: float = 0.005, floor: float = 0.005, multiple: int = 1,
                 most: int = 200) -> int:
    """The smallest n with t(0.975, n-1) * max(sd_diff, floor) / sqrt(n) <= half_width,
    rounded up to a multiple of `multiple` (the teacher seeds): docs/protocol.md's rule."""
    sd = max(sd_diff, floor)
    for n in range(2, most + 1):
        if t_quantile_975(n - 1) * sd / math.sqrt(n) <= half_width:
            return -(-n // multiple) * multiple
    raise ValueError(f"no n <= {most} reaches a half-width of {half_width} at sd {sd}")


def reading(low: float, high: float, method: str, reference: str, tie_margin: float = 0.5) -> str:
    """docs/protocol.md's reading of a 95% interval [low, high] of method − reference (points):
    a win or a loss if it excludes 0 (that takes precedence), a tie if it lies within
    ±tie_margin, else inconclusive."""
    return (f"{method} beats {reference}" if low > 0 else f"{method} loses to {reference}" if high < 0
            else f"a tie within ±{tie_margin:g} point" if -tie_margin <= low and high <= tie_margin
            else f"inconclusive (the interval contains 0 and reaches past ±{tie_margin:g} point)")


def teacher_level_comparison(records: Sequence[dict], method: str = "TMKD", reference: str = "KD",
                             metric: str = "test_acc", tie_margin: float = 0.5) -> dict[str, Any]:
    """The confirmatory statistic of docs/protocol.md ("Amendment: powerful teachers"), the
    teacher seed as the unit. With d(t, i) = acc(method) − acc(reference) of student seed i
    under teacher t (points) and D(t) = mean_i d(t, i):

        mean D = (1/T) sum_t D(t),   95% CI = mean D ± t(0.975, T−1) sd(D) / sqrt(T)

    (the interval of the balanced two-level model with the teacher as a random effect). Beside
    it, no reading: the within-teacher sd s_w (pooled over teachers) and the between-teacher
    sd sqrt(max(0, var(D) − s_w² / m)), m the mean number of student seeds per teacher."""
    by = {(r["method"], r["teacher_seed"], r["seed"]): 100 * r[metric] for r in records}
    d: dict[int, list[float]] = {}
    for (m, t, s), value in sorted(by.items()):
        if m == method and (reference, t, s) in by:
            d.setdefault(t, []).append(value - by[reference, t, s])
    if len(d) < 2:
        raise ValueError(f"{method} vs {reference}: {len(d)} teacher(s) with paired runs, need at least 2")
    teachers = sorted(d)
    means = np.array([np.mean(d[t]) for t in teachers])
    mean, sd = mean_std(means)
    half = t_quantile_975(len(teachers) - 1) * sd / math.sqrt(len(teachers))
    within = [x - np.mean(d[t]) for t in teachers for x in d[t]]
    dof_within = sum(len(d[t]) - 1 for t in teachers)
    s_w = float(math.sqrt(sum(x * x for x in within) / dof_within)) if dof_within else float("nan")
    m = float(np.mean([len(d[t]) for t in teachers]))
    between = math.sqrt(max(0.0, sd ** 2 - (s_w ** 2 / m if dof_within else 0.0)))
    return {"teachers": len(teachers), "teacher_seeds": teachers, "pairs": sum(len(d[t]) for t in teachers),
            "metric": metric, "diff": mean, "teacher_means_sd": sd, "ci_low": mean - half, "ci_high": mean + half,
            "half_width": half, "per_teacher_diff": {t: float(np.mean(d[t])) for t in teachers},
            "per_teacher_pairs": {t: d[t] for t in teachers}, "within_teacher_sd": s_w, "between_teacher_sd": between,
            "tie_margin": tie_margin, "verdict": reading(mean - half, mean + half, method, reference, tie_margin)}


def primary_comparison(records: Sequence[dict], method: str = "TMKD", reference: str = "KD",
                       metric: str = "test_acc", tie_margin: float = 0.5) -> dict[str, Any]:
    """docs/protocol.md's primary statistic: the paired difference `method` - `reference`
    over (teacher seed, student seed) pairs, its sd, 95% t-interval and half-width, the
    per-teacher-seed mean differences, the machines the pairs ran on (`machines`: CPU model ->
    pairs, "mixed" for a pair whose two runs ran on different ones), and the reading of the
    interval (in points): a win or a loss if it excludes 0, a tie if it lies within
    ±tie_margin, else inconclusive."""
    by = {(r["method"], r["teacher_seed"], r["seed"]): r[metric] for r in records if not r.get("setting")}
    cpu = {(r["method"], r["teacher_seed"], r["seed"]): r.get("cpu_model") for r in records if not r.get("setting")}
    pairs = sorted((t, s) for (m, t, s) in by if m == method and (reference, t, s) in by)
    if len(pairs) < 2:
        raise ValueError(f"{method} vs {reference}: {len(pairs)} paired runs, need at least 2")
    a = [by[method, t, s] for t, s in pairs]
    b = [by[reference, t, s] for t, s in pairs]
    d = paired_difference(a, b)
    per_teacher = {}
    for t in sorted({t for t, _ in pairs}):
        idx = [i for i, (tt, _) in enumerate(pairs) if tt == t]
        per_teacher[t] = 100 * float(np.mean([a[i] - b[i] for i in idx]))
    machines: dict[str, int] = {}
    for t, s in pairs:
        where = {cpu[method, t, s], cpu[reference, t, s]}
        name = "mixed" if len(where) > 1 else str(where.pop() or "unknown")
        machines[name] = machines.get(name, 0) + 1
    half = 100 * (d["ci_high"] - d["ci_low"]) / 2
    low, high = 100 * d["ci_low"], 100 * d["ci_high"]
    verdict = reading(low, high, method, reference, tie_margin)
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    return {"pairs": len(pairs), "teacher_seeds": sorted({t for t, _ in pairs}), "metric": metric,
            method: 100 * ma, f"{method} sd": 100 * sa, reference: 100 * mb, f"{reference} sd": 100 * sb,
            "diff": 100 * d["diff"], "diff_sd": 100 * d["diff_sd"], "ci_low": low, "ci_high": high,
            "half_width": half, "per_teacher_diff": per_teacher, "machines": machines, "verdict": verdict}


PRIMARY_CAPTION = ("Primary comparison (docs/protocol.md): test accuracy, mean ± sd over pairs; Δ: paired "
                   "difference, 95% t-interval")


def primary_table(primary: dict[str, Any], dataset: str, method: str = "TMKD", reference: str = "KD") -> pd.DataFrame:
    """`primary_comparison`'s result as the one-row table of notebook 04 and the plan's
    --primary-report (tables/primary)."""
    return pd.DataFrame([{
        "dataset": dataset, "pairs": primary["pairs"], "teacher seeds": len(primary["teacher_seeds"]),
        f"{reference} (%)": f"{primary[reference]:.2f} ± {primary[f'{reference} sd']:.2f}",
        f"{method} (%)": f"{primary[method]:.2f} ± {primary[f'{method} sd']:.2f}",
        f"Δ {method} − {reference}": f"{primary['diff']:+.2f} ± {primary['diff_sd']:.2f}",
        "95% CI": f"[{primary['ci_low']:+.2f}, {primary['ci_high']:+.2f}]", "half-width": primary["half_width"],
        "per teacher seed": ", ".join(f"teacher {t}: {v:+.2f}" for t, v in primary["per_teacher_diff"].items()),
        "pairs per CPU": ", ".join(f"{k}: {v}" for k, v in primary["machines"].items()),
        "reading": primary["verdict"]}])


# Where TMKD's gain over KD is won or lost (docs/protocol.md, "If TMKD does not beat KD"): each
# step changes one thing; on the same pairs, the second and third add up to the fourth, TMKD − KD.
GAIN_STEPS = (
    ("the multi-view teacher (uniform weights), KD's loss", "KD (multi-view, uniform)", "KD"),
    ("TMKD's feature and VLC terms, RGB teacher", "TMKD terms, RGB teacher", "KD"),
    ("the multi-view teacher (text weights), TMKD's terms", "TMKD", "TMKD terms, RGB teacher"),
    ("all of TMKD", "TMKD", "KD"),
)


def gain_decomposition(records: Sequence[dict], steps=GAIN_STEPS, metric: str = "test_acc") -> pd.DataFrame:
    """One row per step (label, method, reference) whose two methods both ran: the paired
    difference d_i = acc(method, pair i) − acc(reference, pair i), its mean ± sd and 95%
    t-interval (none under 3 pairs: a t(1) interval says nothing). Every row reads the same
    pairs (teacher seed, seed): those on which every method of these rows ran, so that the
    rows add up as the steps do (KD and TMKD ran more pairs, for the primary comparison,
    than the control). Records of a `setting` are named "method [setting]"."""
    acc: dict[str, dict[tuple, float]] = {}
    for r in records:
        name = f"{r['method']} [{r['setting']}]" if r.get("setting") else r["method"]
        acc.setdefault(name, {})[r["teacher_seed"], r["seed"]] = r[metric]
    steps = [s for s in steps if s[1] in acc and s[2] in acc]
    pairs = sorted(set.intersection(*(set(acc[m]) for _, *ms in steps for m in ms))) if steps else []
    rows = []
    for label, method, reference in steps if pairs else ():
        d = paired_difference([acc[method][p] for p in pairs], [acc[reference][p] for p in pairs])
        ci = fmt_diff(d)[1] if len(pairs) >= 3 else ""
        rows.append({"step": label, "difference": f"{method} − {reference}", "pairs": len(pairs),
                     "Δ (points)": f"{100 * d['diff']:+.2f} ± {100 * d['diff_sd']:.2f}", "95% CI": ci,
                     "diff": 100 * d["diff"]})
    return pd.DataFrame(rows, columns=["step", "difference", "pairs", "Δ (points)", "95% CI", "diff"])


def group_runs(records: Iterable[dict], by: str = "method") -> dict[str, list[dict]]:
    """Records grouped by one field, groups in order of first appearance, seeds sorted."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r[by], []).append(r)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def run_pair(r: dict) -> tuple[int, int]:
    """(teacher seed, seed) of a run: records carry teacher_seed; a full result holds it in its config."""
    return r.get("teacher_seed", r.get("config", {}).get("teacher", {}).get("seed", 0)), r["seed"]


def paired_to(results: Sequence[dict], reference: Sequence[dict], metric: str = "test_acc",
              names: tuple[str, str] = ("runs", "reference")) -> dict[str, float]:
    """`paired_difference` of each run in `results` to the `reference` run of the same
    (teacher seed, seed); ValueError naming the pairs that have no reference run."""
    ref = {run_pair(r): r[metric] for r in reference}
    missing = [run_pair(r) for r in results if run_pair(r) not in ref]
    if missing:
        raise ValueError(f"{names[0]}: (teacher seed, seed) {missing} have no {names[1]} run to pair with")
    return paired_difference([r[metric] for r in results], [ref[run_pair(r)] for r in results])


def fmt_diff(d: dict[str, float]) -> tuple[str, str]:
    """A paired difference (fractions) as points: ("+0.50", "[-0.10, +1.10]")."""
    return f"{100 * d['diff']:+.2f}", f"[{100 * d['ci_low']:+.2f}, {100 * d['ci_high']:+.2f}]"


def method_table(runs: dict[str, list[dict]], reference: str = "KD", metric: str = "test_acc") -> pd.DataFrame:
    """One row per method: accuracy mean ± sd over seeds and the paired difference to `reference`.

    `runs[method]` lists that method's runs (records or results), one per seed; the
    difference pairs runs of the same (teacher seed, seed) and needs the reference on each.
    """
    rows = []
    for method, results in runs.items():
        m, sd = mean_std(r[metric] for r in results)
        row = {"method": method, "seeds": len(results), f"{metric} (%)": fmt_pm(m, sd), "mean": 100 * m,
               "sd": 100 * sd, f"Δ vs {reference}": "", "95% CI": ""}
        if reference in runs and method != reference:
            d = paired_to(results, runs[reference], metric, (method, reference))
            row[f"Δ vs {reference}"], row["95% CI"] = fmt_diff(d)
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(kd: Sequence[dict], tmkd: Sequence[dict], base, groups: Sequence[str],
                   ablations: dict[str, dict[str, dict]] = ABLATIONS) -> pd.DataFrame:
    """Notebook 05's table: one row per setting `label` of each group (`ablations[group]`, in
    order), from the TMKD records whose `setting` is "group=label" and the KD records `kd`:
    validation and test accuracy mean ± sd over seeds, and the paired test difference
    (`paired_to`, same teacher seed and seed) to KD and to the group's default. The default
    is the setting whose overrides leave method_config(base, "TMKD") as it is; it is marked
    "(default)" and has no difference to itself, and where no setting is the default no row
    of the group has one. val_mean, val_sd, test_mean and test_sd hold the numbers (points)."""
    by_setting = group_runs(tmkd, by="setting")
    tmkd_default = method_config(base, "TMKD")
    rows = []
    for group in groups:
        default = next((label for label, overrides in ablations[group].items()
                        if method_config(base, "TMKD", overrides) == tmkd_default), None)
        for label in ablations[group]:
            results = by_setting[f"{group}={label}"]
            val_m, val_sd = mean_std(r["val_acc"] for r in results)
            test_m, test_sd = mean_std(r["test_acc"] for r in results)
            vs_kd, ci_kd = fmt_diff(paired_to(results, kd, names=(f"{group}={label}", "KD")))
            vs_tmkd, ci_tmkd = ("", "") if default in (None, label) else fmt_diff(
                paired_to(results, by_setting[f"{group}={default}"], names=(f"{group}={label}", f"{group}={default}")))
            rows.append({"group": group, "setting": label + (" (default)" if label == default else ""),
                         "val (%)": f"{100 * val_m:.2f} ± {100 * val_sd:.2f}",
                         "test (%)": f"{100 * test_m:.2f} ± {100 * test_sd:.2f}",
                         "Δ test vs KD": vs_kd, "95% CI vs KD": ci_kd,
                         "Δ test vs TMKD": vs_tmkd, "95% CI vs TMKD": ci_tmkd,
                         "val_mean": 100 * val_m, "val_sd": 100 * val_sd, "test_mean": 100 * test_m,
                         "test_sd": 100 * test_sd})
    return pd.DataFrame(rows)
