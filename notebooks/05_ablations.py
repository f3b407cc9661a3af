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
from IPython.display import display

from tmkd_core.config import ABLATIONS
from tmkd_core.experiment import Pipeline
from tmkd_core.figures import ablation_forest
from tmkd_core.study import Study
from tmkd_core.report import Outputs, ablation_table, enter_project_root, group_runs, mean_std, run_record

out = Outputs(enter_project_root() / out_dir)
study = Study.of(profile)
dataset = dataset or study.datasets[0]
seeds = list(study.ablation_seeds if seeds is None else seeds)
groups = list(groups or study.ablation_groups)
base = study.dataset_config(dataset)
if not seeds:  # a study file may declare none; the notebook then says so and writes an empty results file
    print(f"the {study.name} study declares no ablation seeds (`ablation_seeds`): nothing to ablate")

# %%
ablations, records, kd_test = None, [], None
if seeds:
    kd_specs, tmkd_specs = study.ablation_runs(dataset, seeds, groups)
    kd = [run_record(dataset, "KD", Pipeline(study.config(s)).run_student()) for s in kd_specs]
    tmkd = [run_record(dataset, "TMKD", Pipeline(study.config(s)).run_student(), s.setting) for s in tmkd_specs]
    # each setting against KD and against its group's default (report.ablation_table)
    ablations = ablation_table(kd, tmkd, base, groups)
    records = kd + [r for runs in group_runs(tmkd, by="setting").values() for r in runs]
    kd_test = mean_std(r["test_acc"] for r in kd)
    shown = ablations.drop(columns=["val_mean", "val_sd", "test_mean", "test_sd"])
    out.table(shown, "ablations",
              f"TMKD ablations on {dataset}, seeds {seeds}; KD: {100 * kd_test[0]:.2f} ± {100 * kd_test[1]:.2f}")
    display(shown)

# %%
# each setting's paired difference to its group's default, pairs coloured by teacher seed
if seeds:
    out.figure(ablation_forest(kd, tmkd, ablations), "ablations")

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
print("groups:", groups)
if seeds:
    expected = [(g, label) for g in groups for label in ABLATIONS[g]]  # every setting of every group, once
    got = list(zip(ablations["group"], ablations["setting"].str.removesuffix(" (default)")))
    assert got == expected, f"ablation rows {got} are not the settings {expected}"
    assert ablations["test_mean"].between(0, 100).all(), f"test accuracies outside [0, 100]:\n{shown}"

# %%
out.results_json("05_ablations", {"dataset": dataset, "kd_test": kd_test,
                                  "rows": ablations.to_dict("records") if seeds else []}, base, seeds, runs=records)
