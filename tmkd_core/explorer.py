"""The reader's figures of views and fusion weights, and an interactive explorer of them.

`ViewExplorer` shows a trained multi-view teacher on one image (from a split, or an upload)
under any edge operator, high-pass filter and radius, view modes and lambda, `tau_w` and
label or prediction conditioning: the prior maps, the views, their amplitude spectra and
the fusion weights (`analysis.explain_views`). Nothing is retrained: the teacher is the
cached one, seeing views built with other switches.

    explorer = ViewExplorer({"cifar10": Pipeline(dataset_config("cpu", "cifar10"))})
    explorer.draw("cifar10", index=3, tau_w=0.05)   # a static figure (papermill, nbval, HTML)
    explorer.widget()                               # the same figure under ipywidgets controls

`draw_step_trace` and `step_trace_tables` show `analysis.tmkd_step_trace` (notebook 04).
"""
from __future__ import annotations

import dataclasses
import io
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd
import torch

from .analysis import explain_views
from .data import decode_image
from .fusion import CONDITIONS, SCORES
from .priors import EDGE_OPERATORS, HF_FILTERS, VIEW_MODES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .experiment import Pipeline
    from .teachers import FusedTeacher

VIEW_SWITCHES = ("edge_operator", "hf_filter", "hf_radius", "edge_mode", "hf_mode", "enhance_lambda", "detail_lambda")
FUSION_SWITCHES = ("score", "tau_w", "condition")


def image_from_bytes(content: bytes, channels: int, size: int) -> torch.Tensor:
    """An uploaded image file prepared as the dataset's images are (short side resized to
    `size`, centre crop, `channels` channels): float (1, C, size, size) in [0, 1]."""
    return decode_image(io.BytesIO(content), size, channels)[None].float() / 255


def _show(ax, img: torch.Tensor, title: str = "") -> None:
    """A (C, H, W) image in [0, 1] on an axis without ticks."""
    ax.imshow(img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray" if img.shape[0] == 1 else None,
              vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


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
            self._teachers[dataset] = self.pipes[dataset].frozen_teacher(train=False)
        return self._teachers[dataset]

    def defaults(self, dataset: str) -> dict[str, Any]:
        """The switches the teacher was trained and distils with."""
        t = self.teacher(dataset)
        v, f = t.view_cfg, t.fusion.cfg
        return {"edge_operator": v.edge_operator, "hf_filter": v.hf_filter, "hf_radius": v.hf_radius,
                "edge_mode": v.edge_mode, "hf_mode": v.hf_mode, "enhance_lambda": v.enhance_lambda,
                "detail_lambda": v.detail_lambda, "score": f.score, "tau_w": f.tau_w, "condition": f.condition}

    def size(self, dataset: str) -> int:
        """The side of the dataset's (square) images, which an upload is brought to."""
        return int(self.image(dataset, 0)[0].shape[-1])

    def image(self, dataset: str, index: int) -> tuple[torch.Tensor, int]:
        data = getattr(self.pipes[dataset].splits, self.split)
        if not 0 <= index < len(data):
            raise IndexError(f"image index {index} outside the {len(data)} {self.split} images of {dataset}")
        idx = torch.tensor([index])
        return data.load(idx).float() / 255, int(data.labels[index])

    def explain(self, dataset: str, x: torch.Tensor, label: int | None, **switches) -> dict:
        """`explain_views` under the given switches (the teacher's own for the others). A
        label of None (an upload of unknown class) conditions on the teacher's prediction."""
        unknown = set(switches) - set(VIEW_SWITCHES) - set(FUSION_SWITCHES)
        if unknown:
            raise TypeError(f"unknown switches {sorted(unknown)}; available: {', '.join(VIEW_SWITCHES + FUSION_SWITCHES)}")
        s = {**self.defaults(dataset), **switches}
        if label is None:
            s["condition"] = "pred"
        teacher = self.teacher(dataset)
        views = dataclasses.replace(teacher.view_cfg, **{k: s[k] for k in VIEW_SWITCHES})
        fusion = dataclasses.replace(teacher.fusion.cfg, score=s["score"], tau_w=float(s["tau_w"]),
                                     condition=s["condition"])
        return {**explain_views(teacher, x, torch.tensor([0 if label is None else label]), views, fusion),
                "switches": s}

    def draw(self, dataset: str, index: int = 0, image: torch.Tensor | None = None, label: int | None = None,
             **switches) -> Figure:
        """One image's prior maps (row 1), views (row 2), spectra (row 3), fusion weights and
        each view's probability of the class. `image` (1, C, H, W) in [0, 1] replaces the
        split's image `index` (an upload); its `label`, if known, is the class to condition on."""
        import matplotlib.pyplot as plt

        if image is None:
            image, label = self.image(dataset, index)
        e = self.explain(dataset, image, label, **switches)
        s, names = e["switches"], self.teacher(dataset).view_names
        classes = self.pipes[dataset].splits.class_names
        fig, axes = plt.subplots(3, len(names) + 1, figsize=(2.3 * (len(names) + 1), 6.6),
                                 gridspec_kw={"width_ratios": [1] * len(names) + [1.4]})
        for v, name in enumerate(names):
            _show(axes[0, v], e["priors"][v, 0], "rgb: the image (no prior)" if v == 0 else f"{name} prior")
            score = f"  s={e['scores'][v, 0]:.2f}" if e["scores"] is not None else ""
            _show(axes[1, v], e["views"][v, 0], f"{name} view\nw={e['weights'][v, 0]:.2f}{score}")
            axes[2, v].imshow(e["spectra"][v, 0].numpy(), cmap="magma")
            axes[2, v].set_title(f"|FFT| of the {name} view", fontsize=8)
            axes[2, v].set_axis_off()
        c = int(e["classes"][0])
        probs = torch.softmax(e["logits"][0], -1)
        top = probs.topk(min(3, len(classes)))
        lines = [f"label: {classes[label] if label is not None else 'unknown (upload)'}",
                 f"weights condition on: {classes[c]} ({s['condition']})", "fused teacher's top classes:"]
        lines += [f"  {classes[int(i)]}: {p:.2f}" for p, i in zip(top.values, top.indices)]
        axes[0, -1].text(0, 1, "\n".join(lines), va="top", fontsize=8, family="monospace")
        axes[0, -1].set_axis_off()
        axes[1, -1].bar(names, e["weights"][:, 0].tolist(), color="tab:blue")
        axes[1, -1].axhline(1 / len(names), color="gray", ls=":", lw=1)
        axes[1, -1].set_ylim(0, 1)
        weighting = e["fusion"].weights
        axes[1, -1].set_title(f"fusion weights ({weighting}" + (f", tau_w={s['tau_w']:g})" if weighting == "text"
                                                               else ")"), fontsize=8)
        axes[2, -1].bar(names, torch.softmax(e["view_logits"][:, 0], -1)[:, c].tolist(), color="tab:orange")
        axes[2, -1].set_ylim(0, 1)
        axes[2, -1].set_title(f"each view's p({classes[c]})", fontsize=8)
        fig.suptitle(f"{dataset}: edge {s['edge_operator']} ({s['edge_mode']}), hf {s['hf_filter']} "
                     f"r={s['hf_radius']:g} ({s['hf_mode']}), lambda={s['enhance_lambda']:g}, "
                     f"detail lambda={s['detail_lambda']:g}", fontsize=9)
        fig.tight_layout()
        return fig

    def widget(self, dataset: str | None = None, index: int = 0):
        """The explorer under ipywidgets controls, for JupyterLab (the last expression of a
        cell shows it); redraws on every change. An upload replaces the split's image until
        the index or the dataset changes; its class is unknown unless chosen."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        dataset = dataset or next(iter(self.pipes))
        slider = dict(continuous_update=False)  # redraw on release: canny and the FFT take a moment
        c = {"dataset": w.Dropdown(options=list(self.pipes), value=dataset, description="dataset"),
             "index": w.BoundedIntText(value=index, min=0, description=f"{self.split} image"),
             "edge_operator": w.Dropdown(options=list(EDGE_OPERATORS), description="edge"),
             "edge_mode": w.Dropdown(options=list(VIEW_MODES), description="edge mode"),
             "hf_filter": w.Dropdown(options=list(HF_FILTERS), description="high-pass"),
             "hf_radius": w.FloatSlider(min=0.05, max=1.0, step=0.05, description="radius", **slider),
             "hf_mode": w.Dropdown(options=list(VIEW_MODES), description="hf mode"),
             "enhance_lambda": w.FloatSlider(min=0.0, max=2.0, step=0.1, description="lambda", **slider),
             "detail_lambda": w.FloatSlider(min=0.0, max=4.0, step=0.1, description="detail lambda", **slider),
             "score": w.Dropdown(options=list(SCORES), description="score"),
             "tau_w": w.FloatLogSlider(base=10, min=-2, max=0.3, step=0.05, description="tau_w", **slider),
             "condition": w.ToggleButtons(options=list(CONDITIONS), description="condition")}
        upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        label = w.Dropdown(description="its class")
        out = w.Output()
        state = {"quiet": False}  # set while several controls change at once: one redraw after

        def reset(name: str):
            state["quiet"] = True
            c["index"].max = len(getattr(self.pipes[name].splits, self.split)) - 1
            for key, value in self.defaults(name).items():
                c[key].value = value
            label.options = [("unknown", None)] + [(cls, i) for i, cls in enumerate(self.pipes[name].splits.class_names)]
            label.value = None
            upload.value = ()
            text_weights = self.teacher(name).fusion.cfg.weights == "text"
            c["tau_w"].disabled = c["condition"].disabled = not text_weights  # no effect on other weightings
            state["quiet"] = False

        def redraw(*_):
            if state["quiet"]:
                return
            with out:
                out.clear_output(wait=True)
                name = c["dataset"].value
                switches = {k: c[k].value for k in VIEW_SWITCHES + FUSION_SWITCHES}
                if upload.value:
                    x = image_from_bytes(bytes(upload.value[0]["content"]), self.pipes[name].splits.in_channels,
                                         self.size(name))
                    fig = self.draw(name, image=x, label=label.value, **switches)
                else:
                    fig = self.draw(name, int(c["index"].value), **switches)
                display(fig)
                plt.close(fig)  # shown once, in the panel

        def on_dataset(change):
            reset(change["new"])
            redraw()

        def on_index(change):
            if upload.value:
                state["quiet"] = True
                upload.value = ()
                state["quiet"] = False

        reset(dataset)
        c["index"].value = index
        c["dataset"].observe(on_dataset, names="value")
        c["index"].observe(on_index, names="value")
        for key, control in c.items():
            if key != "dataset":
                control.observe(redraw, names="value")
        upload.observe(redraw, names="value")
        label.observe(redraw, names="value")
        controls = w.HBox([w.VBox([c["dataset"], c["index"], upload, label]),
                           w.VBox([c[k] for k in ("edge_operator", "edge_mode", "hf_filter", "hf_radius", "hf_mode")]),
                           w.VBox([c["enhance_lambda"], c["detail_lambda"], c["score"], c["tau_w"], c["condition"]])])
        redraw()
        return w.VBox([controls, out])


def draw_step_trace(trace: dict, class_names: Sequence[str], title: str = "") -> Figure:
    """`analysis.tmkd_step_trace` as a figure: per image, its views with the scores and
    weights, the per-view and fused teacher distributions, and teacher vs student p(label)."""
    import matplotlib.pyplot as plt

    n, views = len(trace["labels"]), trace["views"]
    n_views = views.shape[0]
    fig, axes = plt.subplots(n, n_views + 2, figsize=(2.0 * (n_views + 2), 2.0 * n), squeeze=False)
    for i in range(n):
        y = int(trace["labels"][i])
        for v in range(n_views):
            score = f"s={trace['scores'][v, i]:.2f} " if trace["scores"] is not None else ""
            _show(axes[i, v], views[v, i], f"{trace['view_names'][v]}: {score}w={trace['weights'][v, i]:.2f}")
        ax = axes[i, n_views]
        for v in range(n_views):
            ax.plot(torch.softmax(trace["view_logits"][v, i], -1).numpy(), marker=".", lw=0.8,
                    label=trace["view_names"][v])
        ax.plot(torch.softmax(trace["logits"][i], -1).numpy(), color="k", lw=1.5, label="fused z_T")
        ax.axvline(y, color="gray", ls=":")
        ax.set_title(f"teacher p(c), label {class_names[y]}", fontsize=7)
        ax.tick_params(labelsize=6)
        ax = axes[i, n_views + 1]
        ax.bar(["teacher", "student"], [float(torch.softmax(trace[z][i], -1)[y]) for z in ("logits", "student_logits")])
        ax.set_ylim(0, 1)
        ax.set_title(f"p({class_names[y]})", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, n_views].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def step_trace_tables(trace: dict, class_names: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`analysis.tmkd_step_trace` as two tables: per image and view, the weight, the score
    and the view's probability of the label; and each loss term of the step with their sum."""
    per_view = pd.DataFrame([
        {"image": i, "label": class_names[y], "view": name, "weight w": float(trace["weights"][v, i]),
         "score s": float(trace["scores"][v, i]) if trace["scores"] is not None else None,
         "p_view(label)": float(torch.softmax(trace["view_logits"][v, i], -1)[y])}
        for i, y in enumerate(trace["labels"].tolist()) for v, name in enumerate(trace["view_names"])])
    losses = pd.DataFrame([{"term": term, "value": value} for term, value in trace["losses"].items()]
                          + [{"term": "total (what the optimiser sees)", "value": trace["total_loss"]}])
    return per_view, losses
