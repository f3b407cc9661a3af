"""An interactive view-and-weight explorer for a trained multi-view teacher.

Pick a dataset and an image (or upload one), the edge operator, the high-pass filter and
radius, the view mode and lambda, `tau_w` and whether the weights condition on the label
or on the teacher's prediction: the panel redraws the prior maps, the views, their
amplitude spectra and the fusion weights at once (`analysis.explain_views`). Nothing is
retrained: the teacher is the cached one, seeing views built with other switches.

    explorer = ViewExplorer({"cifar10": Pipeline(dataset_config("cpu", "cifar10"))})
    explorer.draw("cifar10", index=3, tau_w=0.05)   # a static figure (papermill, nbval, HTML)
    explorer.widget()                               # the same figure under ipywidgets controls
"""
from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from .analysis import explain_views
from .fusion import CONDITIONS
from .priors import EDGE_OPERATORS, HF_FILTERS, VIEW_MODES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .experiment import Pipeline
    from .teachers import FusedTeacher

VIEW_SWITCHES = ("edge_operator", "hf_filter", "hf_radius", "mode", "enhance_lambda")
FUSION_SWITCHES = ("tau_w", "condition")


def image_from_bytes(content: bytes, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """An uploaded image file as the dataset's images are: (1, C, H, W) in [0, 1]."""
    from PIL import Image

    img = Image.open(io.BytesIO(content)).convert("RGB" if channels == 3 else "L")
    img = img.resize((size[1], size[0]), Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    x = torch.from_numpy(arr)
    return (x.permute(2, 0, 1) if x.ndim == 3 else x[None])[None].contiguous()


class ViewExplorer:
    """Views and fusion weights of the cached multi-view teachers of some pipelines."""

    def __init__(self, pipes: Mapping[str, Pipeline], split: str = "val"):
        if not pipes:
            raise ValueError("ViewExplorer needs at least one pipeline")
        self.pipes, self.split = dict(pipes), split
        self._teachers: dict[str, FusedTeacher] = {}

    def teacher(self, dataset: str) -> FusedTeacher:
        if dataset not in self.pipes:
            raise KeyError(f"no pipeline for dataset {dataset!r}; available: {', '.join(self.pipes)}")
        if dataset not in self._teachers:  # trains nothing: TeacherNotTrained names notebook 02
            self._teachers[dataset] = self.pipes[dataset].fused_teacher(train=False)
        return self._teachers[dataset]

    def defaults(self, dataset: str) -> dict[str, Any]:
        """The switches the teacher was trained and distils with."""
        t = self.teacher(dataset)
        v, f = t.view_cfg, t.fusion.cfg
        return {"edge_operator": v.edge_operator, "hf_filter": v.hf_filter, "hf_radius": v.hf_radius,
                "mode": v.edge_mode, "enhance_lambda": v.enhance_lambda, "tau_w": f.tau_w, "condition": f.condition}

    def image(self, dataset: str, index: int) -> tuple[torch.Tensor, int]:
        data = getattr(self.pipes[dataset].splits, self.split)
        if not 0 <= index < len(data):
            raise IndexError(f"image index {index} outside the {len(data)} {self.split} images of {dataset}")
        return data.images[index:index + 1].float() / 255, int(data.labels[index])

    def explain(self, dataset: str, x: torch.Tensor, label: int, **switches) -> dict:
        unknown = set(switches) - set(VIEW_SWITCHES) - set(FUSION_SWITCHES)
        if unknown:
            raise TypeError(f"unknown switches {sorted(unknown)}; available: {', '.join(VIEW_SWITCHES + FUSION_SWITCHES)}")
        s = {**self.defaults(dataset), **switches}
        teacher = self.teacher(dataset)
        views = dataclasses.replace(teacher.view_cfg, edge_operator=s["edge_operator"], hf_filter=s["hf_filter"],
                                    hf_radius=float(s["hf_radius"]), edge_mode=s["mode"], hf_mode=s["mode"],
                                    enhance_lambda=float(s["enhance_lambda"]))
        fusion = dataclasses.replace(teacher.fusion.cfg, tau_w=float(s["tau_w"]), condition=s["condition"])
        return {**explain_views(teacher, x, torch.tensor([label]), views, fusion), "switches": s}

    def draw(self, dataset: str, index: int = 0, image: torch.Tensor | None = None, label: int | None = None,
             **switches) -> Figure:
        """One image's prior maps, views, spectra and weights; `image` (1, C, H, W) replaces
        the split's image `index` (an upload), with `label` its class for label conditioning."""
        import matplotlib.pyplot as plt

        if image is None:
            image, true_label = self.image(dataset, index)
            label = true_label if label is None else label
        elif label is None:
            raise ValueError("an uploaded image needs a label (a class index) to condition on")
        e = self.explain(dataset, image, label, **switches)
        names = self.teacher(dataset).view_names
        classes = self.pipes[dataset].splits.class_names
        grey = image.shape[1] == 1
        fig, axes = plt.subplots(3, len(names) + 1, figsize=(2.3 * (len(names) + 1), 6.6),
                                 gridspec_kw={"width_ratios": [1] * len(names) + [1.4]})
        for v, name in enumerate(names):
            for row, (key, title) in enumerate((("priors", "prior"), ("views", "view"))):
                axes[row, v].imshow(e[key][v, 0].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(),
                                    cmap="gray" if grey else None, vmin=0, vmax=1)
                head = "rgb: the image (no prior)" if (row, v) == (0, 0) else f"{name} {title}"
                weight = f"\nw={e['weights'][v, 0]:.2f}  s={e['scores'][v, 0]:.2f}" if row == 1 else ""
                axes[row, v].set_title(head + weight, fontsize=8)
            axes[2, v].imshow(e["spectra"][v, 0].numpy(), cmap="magma")
            axes[2, v].set_title(f"|FFT| of the {name} view", fontsize=8)
        for ax in axes[:, :-1].flat:
            ax.set_axis_off()
        probs = torch.softmax(e["logits"][0], -1)
        top = probs.topk(min(3, len(classes)))
        c = int(e["classes"][0])
        lines = [f"label: {classes[label]}", f"weights condition on: {classes[c]} ({e['switches']['condition']})",
                 "fused teacher's top classes:"] + [f"  {classes[int(i)]}: {p:.2f}" for p, i in zip(top.values, top.indices)]
        axes[0, -1].text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
        axes[0, -1].set_axis_off()
        axes[1, -1].bar(names, e["weights"][:, 0].tolist(), color="tab:blue")
        axes[1, -1].axhline(1 / len(names), color="gray", ls=":", lw=1)
        axes[1, -1].set_ylim(0, 1)
        axes[1, -1].set_title(f"fusion weights (tau_w={e['switches']['tau_w']})", fontsize=8)
        view_probs = torch.softmax(e["view_logits"][:, 0], -1)[:, c]
        axes[2, -1].bar(names, view_probs.tolist(), color="tab:orange")
        axes[2, -1].set_ylim(0, 1)
        axes[2, -1].set_title(f"each view's p({classes[c]})", fontsize=8)
        s = e["switches"]
        fig.suptitle(f"{dataset}: edge {s['edge_operator']}, hf {s['hf_filter']} r={s['hf_radius']}, "
                     f"mode {s['mode']} (lambda={s['enhance_lambda']})", fontsize=9)
        fig.tight_layout()
        return fig

    def widget(self, dataset: str | None = None):
        """The explorer under ipywidgets controls, for JupyterLab (the last expression of a
        cell shows it); redraws on every change."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        dataset = dataset or next(iter(self.pipes))
        d = self.defaults(dataset)
        c = {"dataset": w.Dropdown(options=list(self.pipes), value=dataset, description="dataset"),
             "index": w.BoundedIntText(value=0, min=0, max=len(getattr(self.pipes[dataset].splits, self.split)) - 1,
                                       description=f"{self.split} image"),
             "edge_operator": w.Dropdown(options=list(EDGE_OPERATORS), value=d["edge_operator"], description="edge"),
             "hf_filter": w.Dropdown(options=list(HF_FILTERS), value=d["hf_filter"], description="high-pass"),
             "hf_radius": w.FloatSlider(value=d["hf_radius"], min=0.05, max=1.0, step=0.05, description="radius"),
             "mode": w.Dropdown(options=list(VIEW_MODES), value=d["mode"], description="view mode"),
             "enhance_lambda": w.FloatSlider(value=d["enhance_lambda"], min=0.0, max=2.0, step=0.1, description="lambda"),
             "tau_w": w.FloatLogSlider(value=d["tau_w"], base=10, min=-2, max=0.3, step=0.05, description="tau_w"),
             "condition": w.ToggleButtons(options=list(CONDITIONS), value=d["condition"], description="condition")}
        upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        label = w.Dropdown(options=[], description="its class")
        out = w.Output()

        def set_classes(name: str):
            label.options = [(c, i) for i, c in enumerate(self.pipes[name].splits.class_names)]
            label.value = 0

        def redraw(*_):
            with out:
                out.clear_output(wait=True)
                name = c["dataset"].value
                switches = {k: c[k].value for k in VIEW_SWITCHES + FUSION_SWITCHES}
                if upload.value:
                    data = self.pipes[name].splits.train
                    x = image_from_bytes(bytes(upload.value[0]["content"]), data.images.shape[1],
                                         tuple(data.images.shape[-2:]))
                    fig = self.draw(name, image=x, label=label.value, **switches)
                else:
                    fig = self.draw(name, int(c["index"].value), **switches)
                display(fig)
                plt.close(fig)  # shown once, in the panel

        def on_dataset(change):
            c["index"].max = len(getattr(self.pipes[change["new"]].splits, self.split)) - 1
            set_classes(change["new"])
            upload.value = ()

        set_classes(dataset)
        c["dataset"].observe(on_dataset, names="value")
        for widget in (*c.values(), upload, label):
            widget.observe(redraw, names="value")
        controls = w.HBox([w.VBox([c["dataset"], c["index"], upload, label]),
                           w.VBox([c[k] for k in ("edge_operator", "hf_filter", "hf_radius", "mode")]),
                           w.VBox([c["enhance_lambda"], c["tau_w"], c["condition"]])])
        redraw()
        return w.VBox([controls, out])

