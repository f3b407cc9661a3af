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
# # 02 · Single-view and multi-view teachers
#
# The *single-view teacher* is a backbone trained on RGB: the usual KD teacher. The
# *multi-view teacher* starts from it (`teacher_init = rgb`) and is fine-tuned on all views
# at once, with per-view BatchNorm (`view_bn = per_view`) and text-aligned heads `P_v`
# (docs/method.md §2). Per-view accuracy, fused accuracy and attention maps (Grad-CAM).
#
# At test time there is no label: the fused teacher's weights condition on its own
# prediction (`condition = pred`). During distillation they condition on the label.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the study's datasets (tmkd_core.study.Study)
out_dir = "figures"
n_cam = 6

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from tmkd_core.analysis import fused_teacher_forward, grad_cam, rgb_teacher_forward
from tmkd_core.data import first_of_each_class
from tmkd_core.experiment import Pipeline
from tmkd_core.report import Outputs, enter_project_root
from tmkd_core.study import Study

out = Outputs(enter_project_root() / out_dir)
study = Study.of(profile)
datasets = list(datasets or study.datasets)

# %% [markdown]
# ## Accuracy of each view and of the fused teacher
# Trained once and cached under `data/checkpoints/` (keyed by the settings they read).
#
# The multi-view teacher gets `multiview_optim.epochs` more epochs than the RGB teacher.
# So that a gain is not mistaken for the effect of longer training, the column "RGB
# fine-tuned as long" is the same fine-tuning run on the RGB view alone (`views = [rgb]`,
# `teacher_report`'s `rgb_finetuned`):
# the multi-view teacher has to beat that one too.
#
# Each teacher seed (`teacher.seed`) trains its own pair of teachers; student seeds read
# them in turn (`tmkd_core.plan`). The label-conditioned fused teacher is what the
# students learn from; the prediction-conditioned one is what the teacher can do unaided.

# %%
pipes, reports, curves = {}, {}, {}
for cfg in study.teacher_configs(datasets):
    name, pipe = cfg.data.name, Pipeline(cfg)
    pipes.setdefault(name, pipe)  # figures: the first teacher seed
    infos = pipe.train_or_load_teachers(control=True)  # the only cell that trains teachers
    reports[name, cfg.teacher.seed] = {split: pipe.teacher_report(split) for split in ("val", "test")}
    curves.setdefault(name, {"rgb": infos["rgb"]["history"], "multi": infos["multi"]["history"]})

rows = []
for (name, teacher_seed), rep in reports.items():
    r = rep["test"]
    rows.append({"dataset": name, "teacher seed": teacher_seed, "teacher": r["arch"], "params": r["teacher_params"],
                 "RGB teacher": 100 * r["rgb_teacher"], "RGB fine-tuned as long": 100 * r["rgb_finetuned"],
                 **{f"MV: {v} view": 100 * r[f"view_{v}"] for v in pipes[name].cfg.views.views},
                 "MV: uniform fusion": 100 * r["uniform"], "MV: text fusion": 100 * r["fused"],
                 "MV: text fusion, label-conditioned": 100 * r["fused_label_conditioned"],
                 "val: RGB teacher": 100 * rep["val"]["rgb_teacher"],
                 "val: RGB fine-tuned as long": 100 * rep["val"]["rgb_finetuned"],
                 "val: text fusion": 100 * rep["val"]["fused"]})
teachers = pd.DataFrame(rows)
out.table(teachers, "teachers", "Teacher top-1 accuracy (%) on the test split (and on validation)")
teachers

# %% [markdown]
# ## Training curves

# %%
fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3), squeeze=False)
for ax, name in zip(axes[0], datasets):
    rgb, multi = curves[name]["rgb"], curves[name]["multi"]
    ax.plot([h["epoch"] for h in rgb], [h["train_acc"] for h in rgb], label="RGB teacher")
    ax.plot([len(rgb) + h["epoch"] for h in multi], [h["train_acc"] for h in multi],
            label="multi-view fine-tuning (mean over views)")
    ax.set_title(name)
    ax.set_xlabel("epoch")
axes[0, 0].set_ylabel("train accuracy (augmented)")
axes[0, 0].legend(fontsize=8)
out.figure(fig, "teachers_curves")

# %% [markdown]
# ## Where the teachers look (Grad-CAM)
# Grad-CAM of the true class on the last stage: the RGB teacher, and the fused multi-view
# teacher (its views' maps summed, since the views are pixel-aligned).

# %%
fig, axes = plt.subplots(3 * len(datasets), n_cam, figsize=(1.7 * n_cam, 1.8 * 3 * len(datasets)), squeeze=False)
for d, name in enumerate(datasets):
    pipe = pipes[name]
    test = pipe.splits.test
    idx = first_of_each_class(test.labels, n_cam)
    x, y = test.images[idx].float() / 255, test.labels[idx]
    cams = {"RGB teacher": grad_cam(x, y, *rgb_teacher_forward(pipe)),
            "multi-view": grad_cam(x, y, *fused_teacher_forward(pipe, y))}
    for j in range(n_cam):
        img = x[j].permute(1, 2, 0).squeeze(-1)
        axes[3 * d, j].imshow(img, cmap="gray" if x.shape[1] == 1 else None)
        axes[3 * d, j].set_title(pipe.splits.class_names[int(y[j])], fontsize=8)
        for k, (label, cam) in enumerate(cams.items()):
            axes[3 * d + 1 + k, j].imshow(img, cmap="gray" if x.shape[1] == 1 else None)
            axes[3 * d + 1 + k, j].imshow(cam[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if j == 0:
                axes[3 * d + 1 + k, j].set_ylabel(label, fontsize=8)
    axes[3 * d, 0].set_ylabel(name, fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
out.figure(fig, "teachers_gradcam")

# %% [markdown]
# ## The teacher study: can a multi-view teacher be made more powerful?
# The multi-view teacher above is one epoch of fine-tuning (`mv_ft1`). The teacher study
# (docs/protocol.md, "Amendment: powerful teachers") trains it the ways a researcher would try
# to make it strong, and gives the RGB side the same chance: each recipe of
# `tmkd_core.config.TEACHER_VARIANTS` at each teacher seed, compared with the RGB teacher
# fine-tuned for the same compute (`rgb_ft30`: view-epochs, what a teacher starts from
# included) and with an ensemble of two RGB teachers (`rgb_ens2`). Differences are paired by
# teacher seed, the unit of replication. The plan trains these teachers (`--parts teachers`):
# this cell trains nothing, and reports those trained so far (`missing` names the others).
# Each teacher's evaluation is kept beside the store's checkpoints (`<store>/evals/`). The
# choice of the confirmatory comparison's teacher reads the validation accuracies only
# (`choice`).

# %%
from tmkd_core.plan import restore
from tmkd_core.teacher_report import write_teacher_report

if study.teacher_study is not None:
    restore(study, ["teachers"])  # a fresh clone: the store's finished teachers, as the plan restores them
    stores = [study.store] if study.store else []
    study_report = write_teacher_report(study.teacher_study, out.figures, stores, study.confirmatory)
    print("not trained yet:", study_report["missing"])
    print("choice of the confirmatory comparison's teacher:", study_report.get("choice"))
    display(pd.read_csv(out.tables / "teacher_study.csv"))

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
print("columns:", list(teachers.columns[:4]), "datasets:", len(teachers))
assert set(teachers["dataset"]) == set(datasets), f"teachers of {set(teachers['dataset'])}, not of {datasets}"
accuracy = teachers.drop(columns=["dataset", "teacher seed", "teacher", "params"])
assert accuracy.apply(lambda c: c.between(0, 100)).all().all(), f"accuracies missing or outside [0, 100]:\n{accuracy}"

# %%
out.results_json("02_teachers", {"reports": [{"dataset": n, "teacher_seed": t, **rep} for (n, t), rep in reports.items()],
                                 "curves": curves}, pipes[datasets[0]].cfg)  # no student runs
