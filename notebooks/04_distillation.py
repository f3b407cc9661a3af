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
# TMKD; TMKD with DKD in place of KD. The deployed student is the same network in every
# row. Accuracies are on the test split; Δ is the paired (same-seed) difference to KD with
# its 95% t-interval.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the profile's datasets (tmkd_core.config.PROFILE_PLANS)
seeds = None  # None: the profile's seeds
out_dir = "figures"
n_trace = 4  # images in the one-step walk-through

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tmkd_core.analysis import tmkd_step_trace
from tmkd_core.config import METHODS, dataset_config, method_config, profile_plan
from tmkd_core.experiment import Pipeline
from tmkd_core.explorer import draw_step_trace, step_trace_tables
from tmkd_core.report import Outputs, enter_project_root, group_runs, method_table, run_record

out = Outputs(enter_project_root() / out_dir)
datasets = profile_plan(profile, "datasets", datasets)
seeds = profile_plan(profile, "seeds", seeds)

# %% [markdown]
# ## One TMKD step, taken apart
# One training image of each of the first classes of the first dataset goes through what
# one TMKD training step computes (`analysis.tmkd_step_trace`), before any update: the
# views, the frozen teacher's per-view logits, the semantic scores
# `s_v = cos(P_v h_v, t_{v,y})`, the weights `w = softmax_v(s / tau_w)`, the fused target
# `z_T = sum_v w_v z_v`, and each loss term the distiller returns (already multiplied by
# its coefficient; the trainer sums them).

# %%
tmkd = Pipeline(method_config(dataset_config(profile, datasets[0]), "TMKD"))
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
# ## Runs
# Each run is recorded in `data/runs/` under the key of the settings it reads; the results
# file keeps one record per run (`run_record`), and every table below is computed from
# those records alone.

# %%
results = {}  # full run results (histories for the curves)
for name in datasets:
    base = dataset_config(profile, name)
    results[name] = {m: [Pipeline(method_config(base, m, {"seed": s})).run_student() for s in seeds] for m in METHODS}
records = [run_record(name, m, r) for name, per in results.items() for m, rs in per.items() for r in rs]

# %% [markdown]
# ## Main table

# %%
tables = []
for name in datasets:
    pipe = Pipeline(dataset_config(profile, name))
    teacher = pipe.teacher_report("test")
    runs = group_runs(r for r in records if r["dataset"] == name)
    t = method_table(runs, reference="KD")
    t.insert(0, "dataset", name)
    t["student"] = f"{pipe.cfg.student.arch} ({results[name]['CE'][0]['student_params'] / 1e3:.0f}k)"
    t["teacher"] = f"{pipe.cfg.teacher.arch} ({teacher['teacher_params'] / 1e3:.0f}k): RGB {100 * teacher['rgb_teacher']:.2f}, fused {100 * teacher['fused']:.2f}"
    t["train s/run"] = [f"{np.mean([r['train_time_s'] for r in runs[m]]):.0f}" for m in runs]
    tables.append(t)
main = pd.concat(tables, ignore_index=True)
shown = main.drop(columns=["mean", "sd"])
out.table(shown, "main_results", f"Student test accuracy (%), mean ± sd over seeds {seeds}; Δ: paired difference to KD")
shown

# %% [markdown]
# ## Training curves
# Validation accuracy after each epoch, mean over seeds.

# %%
fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), 3.2), squeeze=False)
for ax, name in zip(axes[0], datasets):
    for m, rs in results[name].items():
        curve = np.mean([[h["val_acc"] for h in r["history"]] for r in rs], axis=0)
        ax.plot(np.arange(1, len(curve) + 1), 100 * curve, marker="o", ms=3, label=m)
    ax.set_title(name)
    ax.set_xlabel("epoch")
axes[0, 0].set_ylabel("val accuracy (%)")
axes[0, -1].legend(fontsize=7)
fig.tight_layout()
out.figure(fig, "distillation_curves")

fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(datasets), 3.2))
width = 0.8 / len(METHODS)
for k, m in enumerate(METHODS):
    sub = main[main["method"] == m]
    ax.bar(np.arange(len(datasets)) + k * width, sub["mean"], width, yerr=sub["sd"], label=m, capsize=2)
ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2)
ax.set_xticklabels(datasets)
ax.set_ylim(max(0, main["mean"].min() - 10), min(100, main["mean"].max() + 5))
ax.set_ylabel("test accuracy (%)")
ax.legend(fontsize=7, ncol=2)
out.figure(fig, "distillation_results")

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
print("rows:", len(main), "methods:", list(METHODS))

# %%
out.results_json("04_distillation", {"datasets": datasets, "table": main.to_dict("records")},
                 dataset_config(profile, datasets[0]), seeds, runs=records)
