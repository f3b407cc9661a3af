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
# # 05 · Ablations: which part of TMKD carries what
#
# Each group changes one switch of TMKD (docs/method.md §6, `tmkd_core.config.ABLATIONS`)
# and keeps the rest at the default. Validation and test accuracy, mean ± sd over seeds,
# the paired difference to KD from the single-view teacher on the same seeds, and to TMKD
# with its default settings (what the switch itself changes).
# Settings that change the multi-view teacher (views, prompts, edge operator, high-pass
# radius) train a teacher of their own.

# %% tags=["parameters"]
profile = "cpu"
dataset = None  # None: the profile's first dataset
seeds = None  # None: the profile's ablation seeds
groups = None  # None: the profile's ablation groups (every group of tmkd_core.config.ABLATIONS but in smoke)
out_dir = "figures"

# %%
import matplotlib.pyplot as plt
import pandas as pd

from tmkd_core.config import ABLATIONS, dataset_config, method_config, plan_value, profile_plan
from tmkd_core.experiment import Pipeline
from tmkd_core.plan import ablation_runs
from tmkd_core.report import Outputs, enter_project_root, fmt_diff, group_runs, mean_std, paired_to, run_record

out = Outputs(enter_project_root() / out_dir)
dataset = dataset or profile_plan(profile, "datasets")[0]
seeds = profile_plan(profile, "ablation_seeds", seeds)
groups = list(groups or plan_value(profile, "ablation_groups") or ABLATIONS)
base = dataset_config(profile, dataset)

# %%
kd_specs, tmkd_specs = ablation_runs(profile, dataset, seeds, groups)
kd = [run_record(dataset, "KD", Pipeline(s.config(profile)).run_student()) for s in kd_specs]
by_setting = group_runs([run_record(dataset, "TMKD", Pipeline(s.config(profile)).run_student(), s.setting)
                         for s in tmkd_specs], by="setting")
rows, records = [], list(kd)
for group in groups:
    default = next((by_setting[f"{group}={label}"] for label, overrides in ABLATIONS[group].items()
                    if method_config(base, "TMKD", overrides) == method_config(base, "TMKD")), None)
    for label, overrides in ABLATIONS[group].items():
        results = by_setting[f"{group}={label}"]
        records += results
        val_m, val_sd = mean_std(r["val_acc"] for r in results)
        test_m, test_sd = mean_std(r["test_acc"] for r in results)
        vs_kd, ci_kd = fmt_diff(paired_to(results, kd))
        is_default = results is default
        # what this switch changes (nothing to compare with where no setting is the profile's own)
        vs_tmkd, ci_tmkd = ("", "") if is_default or default is None else fmt_diff(paired_to(results, default))
        rows.append({"group": group, "setting": label + (" (default)" if is_default else ""),
                     "val (%)": f"{100 * val_m:.2f} ± {100 * val_sd:.2f}",
                     "test (%)": f"{100 * test_m:.2f} ± {100 * test_sd:.2f}",
                     "Δ test vs KD": vs_kd, "95% CI vs KD": ci_kd,
                     "Δ test vs TMKD": vs_tmkd, "95% CI vs TMKD": ci_tmkd,
                     "val_mean": 100 * val_m, "val_sd": 100 * val_sd, "test_mean": 100 * test_m, "test_sd": 100 * test_sd})
ablations = pd.DataFrame(rows)
kd_test = mean_std(r["test_acc"] for r in kd)
shown = ablations.drop(columns=["val_mean", "val_sd", "test_mean", "test_sd"])
out.table(shown, "ablations", f"TMKD ablations on {dataset}, seeds {seeds}; KD: {100 * kd_test[0]:.2f} ± {100 * kd_test[1]:.2f}")
shown

# %%
fig, axes = plt.subplots(1, len(groups), figsize=(2.2 * len(groups) + 1, 3.4), sharey=True, squeeze=False)
for ax, group in zip(axes[0], groups):
    sub = ablations[ablations["group"] == group]
    ax.bar(range(len(sub)), sub["test_mean"], yerr=sub["test_sd"], capsize=3,
           color=["tab:orange" if "default" in s else "tab:blue" for s in sub["setting"]])
    ax.axhline(100 * kd_test[0], color="gray", ls="--", lw=1, label="KD")
    ax.set_xticks(range(len(sub)))
    ax.set_xticklabels([s.replace(" (default)", "*") for s in sub["setting"]], rotation=45, ha="right", fontsize=7)
    ax.set_title(group, fontsize=9)
lo = ablations["test_mean"].min() - 3
axes[0, 0].set_ylim(lo, ablations["test_mean"].max() + 2)
axes[0, 0].set_ylabel("test accuracy (%)")
axes[0, 0].legend(fontsize=7)
fig.suptitle(f"TMKD ablations on {dataset} (* default; dashed: KD)")
fig.tight_layout()
out.figure(fig, "ablations")

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
print("groups:", groups)

# %%
out.results_json("05_ablations", {"dataset": dataset, "kd_test": kd_test, "rows": rows}, base, seeds, runs=records)
