# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · Distillation: the main table
#
# For every dataset of the profile, the baselines and TMKD of docs/method.md §6, each over
# several seeds: the student trained with CE alone; KD from the single-view teacher; KD
# from the multi-view teacher with uniform weights; DKD from the single-view teacher;
# TMKD; TMKD with DKD in place of KD; and the control, TMKD's feature and vision-language
# terms on the single-view teacher. The deployed student is the same network in every row.
# Accuracies are on the test split; Δ is the paired (same-seed) difference to KD with its
# 95% t-interval.
#
# The **primary comparison** (docs/protocol.md), named before it was run: TMKD vs KD on
# the first dataset, over pairs of teacher seed and student seed. Everything else here is
# secondary.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the study's datasets (tmkd_core.study.Study)
seeds = None  # None: the profile's seeds (and the primary comparison's)
out_dir = "figures"
n_trace = 4  # images in the one-step walk-through

# %%
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display
import pandas as pd

from tmkd_core.analysis import tmkd_step_trace
from tmkd_core.config import METHODS, method_config
from tmkd_core.experiment import Pipeline
from tmkd_core.explorer import draw_step_trace, step_trace_tables
from tmkd_core.protocol import DECISION_MARGIN, KD_FLOOR, pilot_summary
from tmkd_core.study import Study
from tmkd_core.teacher_report import comparison_panels, write_confirmatory_report
from tmkd_core.figures import distillation_forest, study_summary_figure, teacher_differences_figure
from tmkd_core.report import (GAIN_STEPS, PRIMARY_CAPTION, Outputs, enter_project_root, gain_decomposition,
                              group_runs, method_table, primary_comparison, primary_table, run_record,
                              teacher_level_comparison)

out = Outputs(enter_project_root() / out_dir)
study = Study.of(profile)
datasets = list(datasets or study.datasets)

# %% [markdown]
# ## One TMKD step, taken apart
# One training image of each of the first classes of the first dataset goes through what
# one TMKD training step computes (`analysis.tmkd_step_trace`), before any update: the
# views, the frozen teacher's per-view logits, the semantic scores
# `s_v = cos(P_v h_v, t_{v,y})`, the weights `w = softmax_v(s / tau_w)`, the fused target
# `z_T = sum_v w_v z_v`, and each loss term the distiller returns (already multiplied by
# its coefficient; the trainer sums them).

# %%
tmkd = Pipeline(method_config(study.dataset_config(datasets[0]), "TMKD"))
trace = tmkd_step_trace(tmkd, n_trace)
classes = tmkd.splits.class_names
fig = draw_step_trace(trace, classes, f"One TMKD step on {datasets[0]}: views with scores s and weights w, "
                                      "per-view and fused teacher, fresh student")
out.figure(fig, "tmkd_step")
per_view, step_losses = step_trace_tables(trace, classes)
print("fusion:", trace["fusion"])
print(per_view.to_string(index=False, float_format="%.3f"))
step_losses

# %% [markdown]
# ## Pilot (validation only)
# Before the final runs, two seeds of KD and TMKD on one teacher seed, scored on the
# validation split, measure the spread of the paired difference that sizes the primary
# comparison (docs/protocol.md), and compare TMKD's open method points (`variants`) with
# its default. Seeds below 10; the final runs never reuse them.

# %%
pilot = [(spec, Pipeline(study.config(spec)).run_student()) for spec in study.pilot_runs()]
pilot_records = [run_record(s.dataset, s.method, r, s.setting) for s, r in pilot]  # test_acc None: never read
if pilot_records:
    pilot_table, decided = pilot_summary(study)
    out.table(pilot_table, "pilot", "Validation pilot (seeds " + ", ".join(map(str, study.pilot.seeds)) +
              f"): paired differences in validation accuracy; a variant is adopted above +{DECISION_MARGIN} point")
    print(f"KD validation accuracy {decided['kd_val']:.2f}% (needs {KD_FLOOR:.0f}%); sd of TMKD - KD "
          f"{decided['sd_diff']:.2f} points; pairs the seed rule asks for: {decided['pairs_needed']}, the plan runs "
          f"{len(study.primary_seeds())} (docs/protocol.md's widening rule included)")
    display(pilot_table)

# %% [markdown]
# ## Runs
# Each run is recorded in `data/runs/` under the key of the settings it reads; the results
# file keeps one record per run (`run_record`), and every table below is computed from
# those records alone. The runs are `Study.main_runs`, which `make reproduce`
# has trained before this notebook starts.

# %%
specs = study.main_runs(datasets, seeds)
results = {(s.dataset, s.method): [] for s in specs}  # full run results (histories for the curves)
for s in specs:
    results[s.dataset, s.method].append(Pipeline(study.config(s)).run_student())
records = [run_record(name, m, r) for (name, m), rs in results.items() for r in rs]

# %% [markdown]
# ## Primary comparison
# TMKD − KD in test accuracy over (teacher seed, student seed) pairs: mean, sd, 95%
# t-interval and its half-width (the target was 0.5 point), and the mean difference per
# teacher seed.

# %%
primary = None
p = study.primary
if p is not None and p.dataset == datasets[0]:
    primary = primary_comparison([r for r in records if r["dataset"] == p.dataset], p.method, p.reference)
    primary_rows = primary_table(primary, p.dataset, p.method, p.reference)
    out.table(primary_rows, "primary", PRIMARY_CAPTION)
    display(primary_rows)

# %% [markdown]
# ## Confirmatory comparisons: TMKD from a strong multi-view teacher
# The primary comparison's multi-view teacher is one epoch of fine-tuning. The confirmatory
# comparison (docs/protocol.md, "Amendment: powerful teachers") asks again on CIFAR-100 with
# the multi-view teacher the teacher study chose on validation (notebook 02), against KD from
# the RGB teacher fine-tuned for the same compute, with the teacher seed as the unit of
# replication: the interval is over the teachers' mean paired differences. The secondary one
# ("Secondary confirmatory comparison (CIFAR-10)", fixed before its runs) asks the same on
# CIFAR-10 with the same kind of teacher and fusion, 4 teachers, no widening rule. The
# follow-up ("Follow-up: KD from the RGB ensemble") gives KD the most powerful teacher the
# teacher study found, two RGB teachers averaged, against TMKD's confirmatory runs, and
# reports KD from the ensemble against KD from the confirmatory comparison's teacher. The
# factorial follow-up ("Follow-up: what earns TMKD's CIFAR-100 gain, teacher × terms") crosses
# the confirmatory comparison, KD from its multi-view teacher and TMKD from its RGB teacher, to
# split TMKD's difference into what the teacher brings and what TMKD's loss brings. All read
# the plan's runs (`--parts teachers confirmatory secondary follow_up factorial`) and train nothing;
# until a comparison's runs have all finished it says what it waits for.

# %%
by_teacher = {}  # comparison name -> its teacher-level statistic, once its runs have finished
for c in study.confirmatory_comparisons:
    found = write_confirmatory_report(c, out.figures)
    if isinstance(found, list):
        print(f"the {c.label} comparison waits for {len(found)} run(s), e.g. {found[0]}")
    else:
        by_teacher[c.name] = found[1]
        display(found[0])

# %% [markdown]
# ## Main table (secondary, but for the primary rows)

# %%
tables = []
for name in datasets:
    runs = group_runs(r for r in records if r["dataset"] == name)
    pipe = Pipeline(study.dataset_config(name))
    teacher = pipe.teacher_report("test")
    t = method_table(runs, reference="KD")
    t.insert(0, "dataset", name)
    params = next(r for (n, m), rs in results.items() if n == name for r in rs)["student_params"]
    t["student"] = f"{pipe.cfg.student.arch} ({params / 1e3:.0f}k)"
    t["teacher (seed 0)"] = (f"{pipe.cfg.teacher.arch} ({teacher['teacher_params'] / 1e3:.0f}k): RGB "
                             f"{100 * teacher['rgb_teacher']:.2f}, fused {100 * teacher['fused']:.2f}")
    t["train s/run"] = [f"{np.mean([r['train_time_s'] for r in runs[m]]):.0f}" for m in runs]
    tables.append(t)
main = pd.concat(tables, ignore_index=True)
shown = main.drop(columns=["mean", "sd"])
out.table(shown, "main_results", "Student test accuracy (%), mean ± sd over seeds; Δ: paired (same seed and "
                                 "teacher seed) difference to KD")
shown

# %% [markdown]
# ## Where the gain is won or lost (secondary)
# TMKD differs from KD in its teacher (multi-view, text-weighted) and in its loss (the
# feature and vision-language terms). The control "TMKD terms, RGB teacher" and KD from
# the multi-view teacher with uniform weights change one of the two at a time; each row
# is a paired difference (`report.GAIN_STEPS`) on the first dataset, every row on the
# pairs all these methods ran (the control's seeds, not the primary comparison's 14), so
# that the second and third rows add up to the last.

# %%
decomposition = gain_decomposition([r for r in records if r["dataset"] == datasets[0]])
out.table(decomposition.drop(columns="diff"), "gain_decomposition",
          f"Where TMKD's difference to KD comes from ({datasets[0]}, test accuracy; secondary): paired "
          "differences, mean ± sd over pairs, 95% t-interval")
decomposition.drop(columns="diff")

# %% [markdown]
# ## Training curves
# Validation accuracy after each epoch, mean over seeds.

# %%
fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
for ax, name in zip(axes[0], datasets):
    for (n, m), rs in results.items():
        if n != name:
            continue
        curve = np.mean([[h["val_acc"] for h in r["history"]] for r in rs], axis=0)
        # one colour per method in every panel
        ax.plot(np.arange(1, len(curve) + 1), 100 * curve, marker="o", ms=3, label=m,
                color=f"C{list(METHODS).index(m)}")
    ax.set_title(name)
    ax.set_xlabel("epoch")
axes[0, 0].set_ylabel("val accuracy (%)")
shown_methods = {label: line for ax in axes[0] for line, label in zip(*ax.get_legend_handles_labels())}
axes[0, -1].legend(shown_methods.values(), shown_methods.keys(), fontsize=7, loc="upper left",
                   bbox_to_anchor=(1.01, 1.0), frameon=False)  # every method, off the curves
fig.tight_layout()
out.figure(fig, "distillation_curves")

# %% [markdown]
# ## The answer at a glance
# Each comparison as paired differences with their 95% intervals; every pair (teacher seed,
# student seed) is a point, coloured by its teacher seed. CE, far below (see the table), is
# left off the scale.

# %%
fig = distillation_forest(records, (p.dataset, p.method, p.reference) if primary is not None else None, GAIN_STEPS)
out.figure(fig, "distillation_forest")

# %% [markdown]
# ## Per teacher: the teacher as the unit of replication
# Student seeds under one teacher share that teacher's strengths and flaws, so the claim about
# teachers in general rests on the teacher means D(t) (docs/protocol.md, "Amendment: powerful
# teachers"). Each teacher seed is a row: its student seeds' paired differences (dots, their
# range a line) and their mean (ringed); on top the mean over teachers with its 95%
# t-interval over teachers. The grey band is the tie margin ±0.5 point. Left, the primary
# comparison with its multi-view teacher, re-read with the teacher as the unit; then, once
# their runs have finished, the confirmatory comparison, the secondary one and the ensemble
# follow-up (both of its statistics). The factorial follow-up's three effects (teacher, terms,
# interaction) are a figure of their own below it.

# %%
panels = []
primary_by_teacher = None
if primary is not None and len(primary["teacher_seeds"]) >= 2:
    primary_by_teacher = teacher_level_comparison(
        [r for r in records if r["dataset"] == p.dataset and not r.get("setting")], p.method, p.reference)
    epochs = study.dataset_config(p.dataset).teacher.multiview_optim.epochs
    panels.append((f"{p.dataset} (primary, teacher as unit): {p.method} − {p.reference}, multi-view teacher fine-tuned "
                   f"{epochs} epoch{'s' if epochs > 1 else ''}", primary_by_teacher))
figures = comparison_panels(study.confirmatory_comparisons, by_teacher)
figures["teacher_differences"][:0] = panels
for name, shown in figures.items():
    if shown:
        out.figure(teacher_differences_figure(shown), name)
    for title, s in shown:
        print(f"{title}: {s['diff']:+.2f} [{s['ci_low']:+.2f}, {s['ci_high']:+.2f}] over {s['teachers']} teachers "
              f"({s['pairs']} pairs); within-teacher sd {s['within_teacher_sd']:.2f}, between-teacher sd "
              f"{s['between_teacher_sd']:.2f}" + (f": {s['verdict']}" if name == "factorial_effects" else ""))

# %% [markdown]
# ## The study on one axis
# Every statistic above with the teacher as the unit, one row each on a common scale: the
# mean over teachers with its 95% t-interval over teachers, each teacher's mean as a dot, and
# the reading on the right (README's figure). The primary row is its sensitivity reading with
# the teacher as the unit; its pre-registered reading, over pairs, is in the table above.

# %%
summary = [row for shown in figures.values() for row in shown]
if summary:
    out.figure(study_summary_figure(summary), "study_summary")

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
print("rows:", len(main), "methods:", list(METHODS))
assert sorted(zip(main["dataset"], main["method"])) == sorted(results), "a (dataset, method) without its row"
assert main["mean"].between(0, 100).all(), f"mean accuracies outside [0, 100]:\n{shown}"

# %%
out.results_json("04_distillation", {"datasets": datasets, "table": main.to_dict("records"), "primary": primary,
                                     "gain_decomposition": decomposition.to_dict("records"),
                                     "pilot_runs": pilot_records, "confirmatory": by_teacher.get("confirmatory"),
                                     "secondary_confirmatory": by_teacher.get("secondary_confirmatory"),
                                     "ensemble_follow_up": by_teacher.get("ensemble_follow_up"),
                                     "factorial_follow_up": by_teacher.get("factorial_follow_up"),
                                     "primary_by_teacher": primary_by_teacher},
                 study.dataset_config(datasets[0]), sorted({r["seed"] for r in records}), runs=records)
