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
# # 01 · Visual priors: the views a multi-view teacher sees
#
# TMKD's visual teacher sees every image through several *views* built from visual priors
# (docs/method.md §1): `rgb` (the image), `edge` (gradient magnitude of the luminance) and
# `hf` (the high-frequency residual). This notebook shows them on real photographs and on
# each offline dataset, their amplitude spectra, and the effect of each operator, mode and
# high-pass radius. It also checks each view against its scikit-image reference.

# %% tags=["parameters"]
profile = "cpu"
datasets = None  # None: the study's datasets (tmkd_core.study.Study)
out_dir = "figures"
n_samples = 6
radii = [0.1, 0.25, 0.5, 0.75]

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from skimage import data as skdata
from matplotlib_inline.backend_inline import set_matplotlib_formats
from skimage.transform import resize

from tmkd_core import priors
from tmkd_core.analysis import energy_kept, radial_energy, reference_agreement, view_mode_statistics
from tmkd_core.config import ViewConfig
from tmkd_core.data import first_of_each_class
from tmkd_core.experiment import Pipeline
from tmkd_core.report import Outputs, enter_project_root
from tmkd_core.study import Study

set_matplotlib_formats("jpeg")  # photographs: inline JPEGs keep the executed notebook a fraction of PNGs' size
root = enter_project_root()
out = Outputs(root / out_dir)
study = Study.of(profile)
datasets = list(datasets or study.datasets)
torch.manual_seed(0)


def show(ax, img, title=None, cmap=None):
    img = img.detach().cpu()
    ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap=cmap or ("gray" if img.shape[0] == 1 else None),
              vmin=0, vmax=1)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


# %% [markdown]
# ## Real photographs
# Four photographs from `skimage.data`, at 128 px.

# %%
names = ["astronaut", "chelsea", "coffee", "rocket"]
photos = torch.from_numpy(np.stack([resize(getattr(skdata, n)(), (128, 128), anti_aliasing=True)
                                    for n in names]).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
cfg = ViewConfig()
views = priors.make_views(photos, cfg)
spectra = torch.stack([priors.amplitude_spectrum(v) for v in views])
fig, axes = plt.subplots(len(names), 6, figsize=(12, 2.1 * len(names)))
for i in range(len(names)):
    for j, name in enumerate(cfg.views):
        show(axes[i, j], views[j, i], name if i == 0 else None)
        axes[i, 3 + j].imshow(spectra[j, i], cmap="magma")
        axes[i, 3 + j].set_axis_off()
        if i == 0:
            axes[i, 3 + j].set_title(f"|FFT| of {name}", fontsize=9)
fig.suptitle("Views (sobel edges, FFT high-pass r=0.25) and their log amplitude spectra")
out.figure(fig, "priors_photos")

# %% [markdown]
# ## Agreement with scikit-image
# Each torch view against its reference on these photographs (maps scaled to [0, 1];
# `analysis.reference_agreement`).

# %%
agreement = reference_agreement(photos)
out.table(agreement.assign(**{c: agreement[c].map("{:.1e}".format) for c in ("max abs diff", "mean abs diff")}),
          "priors_reference_agreement", "Views against scikit-image references")
agreement

# %% [markdown]
# ## Operators, modes and the high-pass radius

# %%
photo = photos[1:2]
edge_ops = ["sobel", "scharr", "laplacian", "canny"]
fig, axes = plt.subplots(3, max(len(edge_ops), len(radii) + 1), figsize=(12, 7.5))
for j, op in enumerate(edge_ops):
    show(axes[0, j], priors.edge_map(photo, op)[0], f"edge: {op}")
for j, r in enumerate(radii):
    show(axes[1, j], priors.hf_map(photo, "fft", radius=r)[0], f"hf fft r={r}")
show(axes[1, len(radii)], priors.hf_map(photo, "gaussian", sigma=1.0)[0], "hf gaussian s=1")
enh = ViewConfig(edge_mode="enhance", hf_mode="enhance", enhance_lambda=0.5)
for j, (name, c) in enumerate([("rgb", cfg), ("edge map", cfg), ("hf map", cfg), ("edge enhance", enh),
                               ("hf enhance", enh)]):
    show(axes[2, j], priors.view(photo, name.split()[0], c)[0], name)
for ax in axes.flat:
    ax.set_axis_off()
fig.suptitle("Edge operators (row 1), high-pass radius and filter (row 2), map vs enhance mode (row 3)")
out.figure(fig, "priors_operators")

# %% [markdown]
# ## The offline datasets
# Samples of each dataset's training split as the profile's multi-view teacher sees them:
# the image, each prior map and, in the `enhance` mode, the enhanced view beside its prior
# (`priors.view_panels`). Then the mean radial power spectrum of each prior map over 512
# training images.

# %%
samples, energy_rows, spectra_rows, mode_rows = {}, [], {}, []
for name in datasets:
    pipe = Pipeline(study.dataset_config(name))
    splits = pipe.splits
    x = splits.train.images[:512].float() / 255
    first_of_class = first_of_each_class(splits.train.labels, n_samples)
    panels = priors.view_panels(splits.train.load(first_of_class).float() / 255, pipe.cfg.views)
    samples[name] = (panels, [splits.class_names[c] for c in range(n_samples)])
    for r in radii:
        energy_rows.append({"dataset": name, "radius": r, "energy kept (%)": 100 * energy_kept(x, r)})
    spectra_rows[name] = {v: radial_energy(priors.view(x, v, cfg)).numpy() for v in cfg.views}
    mode_rows += [{"dataset": name, **row} for row in view_mode_statistics(x)]  # enhance, detail

n_rows = sum(len(panels) for panels, _ in samples.values())
fig, axes = plt.subplots(n_rows, n_samples, figsize=(1.6 * n_samples, 1.75 * n_rows), layout="constrained",
                         squeeze=False)
row = 0
for name, (panels, labels) in samples.items():
    for k, (title, imgs) in enumerate(panels):
        for j in range(n_samples):
            show(axes[row, j], imgs[j], labels[j] if k == 0 else None)
        axes[row, 0].text(-0.08, 0.5, f"{name}\n{title}" if k == 0 else title, transform=axes[row, 0].transAxes,
                          rotation=90, va="center", ha="right", fontsize=7)
        row += 1
fig.suptitle("Training samples: the image, each prior map and the view built from it, per dataset")
out.figure(fig, "priors_datasets")

# %% [markdown]
# ## `enhance` against `detail`
# `enhance` adds a prior scaled to [0, 1], so it brightens the image and clips pixels;
# `detail` adds a zero-mean residual (an unsharp mask for `hf`), which sharpens without a
# brightness shift (docs/method.md §1). Over the same 512 training images per dataset, and
# on one photograph: what each mode does to the image, and how close the view stays to
# RGB (the pilot of docs/protocol.md decides between them for the cpu profile). Pixels
# already at 0 or 1 in the image count as clipped too.

# %%
view_modes = pd.DataFrame(mode_rows)
out.table(view_modes, "view_modes", "What each view mode does to the training images (512 per dataset)")
fig, axes = plt.subplots(1, 5, figsize=(10, 2.4))
for ax, (title, v, mode) in zip(axes, [("rgb", "rgb", "map"), ("edge enhance", "edge", "enhance"),
                                       ("edge detail", "edge", "detail"), ("hf enhance", "hf", "enhance"),
                                       ("hf detail", "hf", "detail")]):
    show(ax, priors.view(photo, v, ViewConfig(edge_mode=mode, hf_mode=mode))[0], title)
    ax.set_axis_off()
out.figure(fig, "priors_modes")
view_modes

fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3), squeeze=False)
for ax, name in zip(axes[0], datasets):
    for v, power in spectra_rows[name].items():
        ax.semilogy(np.linspace(0, 1, len(power)), power, label=v)
    ax.set_title(name)
    ax.set_xlabel("radial frequency / max")
axes[0, 0].set_ylabel("mean power")
axes[0, 0].legend()
out.figure(fig, "priors_spectra")

energy = pd.DataFrame(energy_rows).pivot(index="dataset", columns="radius", values="energy kept (%)").reset_index()
energy.columns = ["dataset"] + [f"r={r}" for r in radii]
out.table(energy, "priors_energy_kept", "Share of non-DC spectral energy the FFT high-pass keeps, by radius")
energy

# %% tags=["nbval-check"]
# NBVAL_CHECK_OUTPUT
edges_agree = bool(agreement["max abs diff"][:3].max() < 1e-3)
print("views:", tuple(views.shape), "max |diff| to skimage < 1e-3:", edges_agree)
assert edges_agree, f"edge maps differ from scikit-image:\n{agreement[:3].to_string()}"

# %%
out.results_json("01_priors", {"reference_agreement": agreement.to_dict("records"),
                               "energy_kept": energy_rows, "datasets": datasets})  # no student runs here
