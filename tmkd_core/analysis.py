"""What the notebooks look at: the views against their scikit-image references and what
each view mode does to the images, fusion weights over a split (their entropy, under other
switches) and whether they follow the views' accuracy, one image's views and weights taken
apart, one TMKD training step taken apart, Grad-CAM maps, spectra."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .data import first_of_each_class, to_float
from .fusion import ViewFusion, view_scores
from .priors import (ViewConfig, amplitude_spectrum, edge_map, frequency_radius, hf_map, luminance, make_views,
                     prior_map, view)
from .train import Batch

if TYPE_CHECKING:
    from .config import FusionConfig
    from .experiment import Pipeline
    from .teachers import FusedTeacher


def reference_agreement(photos: torch.Tensor) -> pd.DataFrame:
    """Each view of photographs (B, 3, H, W) in [0, 1] against its scikit-image reference, as
    maps scaled to [0, 1]: max and mean |ours - reference| per row. Edge maps (channel 0) are
    divided by their per-image maximum, high-pass maps min-max scaled over the batch. The edge
    and Gaussian rows differ by float rounding only; the FFT disc differs from an order-20
    Butterworth near the cut-off (tests/test_priors.py checks each at its own tolerance)."""
    from skimage import color, filters

    gray = np.stack([color.rgb2gray(p.permute(1, 2, 0).numpy()) for p in photos])
    hwc = [p.permute(1, 2, 0).numpy() for p in photos]

    def scaled(a):
        return a / a.reshape(len(a), -1).max(1)[:, None, None]

    def min_max(a):
        return (a - a.min()) / (a.max() - a.min())

    pairs = {
        "sobel vs skimage.filters.sobel": (edge_map(photos, "sobel")[:, 0].numpy(),
                                           scaled(np.stack([filters.sobel(g) for g in gray]))),
        "scharr vs skimage.filters.scharr": (edge_map(photos, "scharr")[:, 0].numpy(),
                                             scaled(np.stack([filters.scharr(g) for g in gray]))),
        "laplacian vs abs(skimage.filters.laplace)": (edge_map(photos, "laplacian")[:, 0].numpy(),
                                                      scaled(np.stack([np.abs(filters.laplace(g)) for g in gray]))),
        "fft r=0.25 vs butterworth (order 20)": (  # r is a fraction of Nyquist (0.5 cycles/px): 0.125
            hf_map(photos, "fft", radius=0.25).numpy(),
            np.stack([min_max(filters.butterworth(h.astype(float), 0.125, True, 20, channel_axis=-1).transpose(2, 0, 1))
                      for h in hwc])),
        "gaussian s=1 vs x - skimage.filters.gaussian": (
            hf_map(photos, "gaussian", sigma=1.0).numpy(),
            np.stack([min_max(p.numpy() - filters.gaussian(h, sigma=1.0, mode="reflect", channel_axis=-1,
                                                           preserve_range=True).transpose(2, 0, 1))
                      for p, h in zip(photos, hwc)])),
    }
    return pd.DataFrame([{"view": k, "max abs diff": float(np.abs(a - b).max()),
                          "mean abs diff": float(np.abs(a - b).mean())} for k, (a, b) in pairs.items()])


def view_shift(x: torch.Tensor, xv: torch.Tensor) -> dict[str, float]:
    """What a view x_v does to images x (both (N, C, H, W) in [0, 1]):

        brightness shift       mean(x_v) - mean(x)
        pixels clipped (%)     100 * share of x_v's values at 0 or 1 (x's own count too)
        correlation with RGB   Pearson correlation of x_v and x over all values"""
    return {"brightness shift": float(xv.mean() - x.mean()),
            "pixels clipped (%)": 100 * float(((xv <= 0) | (xv >= 1)).float().mean()),
            "correlation with RGB": float(torch.corrcoef(torch.stack([xv.flatten(), x.flatten()]))[0, 1])}


def view_mode_statistics(x: torch.Tensor, modes: Sequence[str] = ("enhance", "detail"),
                         views: Sequence[str] = ("edge", "hf")) -> list[dict]:
    """`view_shift` of each prior view built in each mode (`views.edge_mode` and `hf_mode`),
    otherwise the default switches: one row per (mode, view), modes outer."""
    rows = []
    for mode in modes:
        cfg = ViewConfig(edge_mode=mode, hf_mode=mode)
        for v in views:
            rows.append({"view": v, "mode": mode, **view_shift(x, view(x, v, cfg))})
    return rows


def weight_entropy(w: torch.Tensor) -> float:
    """Mean over samples of H(w) = -sum_v w_v ln w_v for weights w (V, N) (0 ln 0 = 0):
    ln V for uniform weights, 0 when one view takes all."""
    return float(-(w * w.clamp_min(1e-12).log()).sum(0).mean())


def weight_sweep(pipe: Pipeline, settings: dict[str, dict], split: str = "val",
                 max_images: int | None = None) -> list[dict]:
    """For each labelled set of overrides of `pipe` (a `tau_w`, other prompts): the fusion
    weights w (V, N) on the split (`fusion_weights`), one row with their mean per view and
    their `weight_entropy`. Switches of the fusion alone reuse the trained teacher."""
    rows = []
    for label, overrides in settings.items():
        w = fusion_weights(pipe.with_overrides(overrides), split, max_images)["weights"]
        rows.append({"setting": label, **dict(zip(pipe.cfg.views.views, w.mean(1).tolist())),
                     "entropy": weight_entropy(w)})
    return rows


def fusion_weights(pipe: Pipeline, split: str = "val", max_images: int | None = None) -> dict:
    """Fusion weights (V, N), labels (N,), per-view logits (V, N, K) of the fused teacher on a split.

    Weights condition as `fusion.condition` says (labels by default, as in training). The
    multi-view teacher is trained first if it is not there yet.
    """
    data = getattr(pipe.splits, split)
    if max_images is not None:
        data = data.subset(torch.arange(min(max_images, len(data))))
    teacher = pipe.fused_teacher()
    weights, view_logits = [], []
    for _, images, labels in data.batches(256):
        out = teacher(to_float(images, pipe.device), labels.to(pipe.device))  # no_grad inside
        weights.append(out["weights"].cpu())
        view_logits.append(out["view_logits"].cpu())
    return {"weights": torch.cat(weights, 1), "labels": data.labels, "view_logits": torch.cat(view_logits, 1),
            "images": data.images if max_images is not None else None}


def weights_against_views(weights: torch.Tensor, view_logits: torch.Tensor, labels: torch.Tensor,
                          view_names: Sequence[str]) -> dict:
    """Do the fusion weights follow which view is right? Over N samples, with weights w (V, N),
    per-view logits z_v (V, N, K), labels y (N,) and p_v = softmax(z_v)[y]:

        per_view   for each view: its accuracy [argmax z_v = y], mean p_v, mean w_v over all
                   samples, over those it gets right and over those it gets wrong, the Pearson
                   correlation corr(w_v, p_v) over samples (None where either is constant)
        top_view   how often the largest weight falls on the view with the largest p_v
                   (chance: 1/V), and how often it falls on a view that is wrong; how often
                   each view has the largest p_v (`most_confident_share`), and the best rule
                   that ignores the sample: always the largest weight on the one view most
                   often most confident (`one_view_always`, `one_view`), the bar weights that
                   select per sample have to clear
        fused      accuracy of z_T = sum_v w_v z_v for the given weights (`fusion_weights`:
                   the text weights by default, whatever `fusion.weights` gives), for uniform
                   weights 1/V, and for confidence weights w_v = p_v / sum_u p_u (label-
                   conditioned like the default fusion: a reference, not a method),
                   and of the best single view

    The weights are what `fusion_weights` returns, so they condition as the fusion does."""
    weights, view_logits = weights.double(), view_logits.double()
    n_views = weights.shape[0]
    if view_logits.shape[:2] != weights.shape or labels.shape != weights.shape[1:] or len(view_names) != n_views:
        raise ValueError(f"weights {tuple(weights.shape)}, view_logits {tuple(view_logits.shape)}, labels "
                         f"{tuple(labels.shape)} and {len(view_names)} view names do not agree")
    index = labels.view(1, -1, 1).expand(n_views, -1, 1)
    p_true = view_logits.softmax(-1).gather(-1, index).squeeze(-1)           # (V, N)
    correct = view_logits.argmax(-1) == labels.unsqueeze(0)                   # (V, N)

    def corr(a: torch.Tensor, b: torch.Tensor) -> float | None:
        if bool((a == a[0]).all()) or bool((b == b[0]).all()):  # constant: no correlation to speak of
            return None
        a, b = a - a.mean(), b - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    def mean_where(x: torch.Tensor, mask: torch.Tensor) -> float | None:
        return float(x[mask].mean()) if mask.any() else None

    per_view = [{"view": name, "accuracy": 100 * float(correct[v].double().mean()),
                 "mean_p_label": float(p_true[v].mean()), "mean_weight": float(weights[v].mean()),
                 "weight_when_right": mean_where(weights[v], correct[v]),
                 "weight_when_wrong": mean_where(weights[v], ~correct[v]),
                 "corr_weight_p_label": corr(weights[v], p_true[v])}
                for v, name in enumerate(view_names)]
    top, most_confident = weights.argmax(0), p_true.argmax(0)
    samples = torch.arange(len(labels))
    share = {name: float((most_confident == v).double().mean()) for v, name in enumerate(view_names)}
    one_view = max(share, key=share.get)
    top_view = {"top_weight_on_most_confident": float((top == most_confident).double().mean()),
                "top_weight_on_wrong_view": float((~correct[top, samples]).double().mean()),
                "chance": 1 / n_views, "most_confident_share": share,
                "one_view": one_view, "one_view_always": share[one_view]}

    def fused_acc(w: torch.Tensor) -> float:
        return 100 * float(((w.unsqueeze(-1) * view_logits).sum(0).argmax(-1) == labels).double().mean())

    fused = {"fusion_weights": fused_acc(weights), "uniform": fused_acc(torch.full_like(weights, 1 / n_views)),
             "confidence_weights": fused_acc(p_true / p_true.sum(0, keepdim=True)),
             "best_single_view": max(row["accuracy"] for row in per_view)}
    return {"per_view": per_view, "top_view": top_view, "fused": fused}


@torch.no_grad()
def explain_views(teacher: FusedTeacher, x: torch.Tensor, labels: torch.Tensor,
                  views: ViewConfig | None = None, fusion: FusionConfig | None = None) -> dict:
    """A trained multi-view teacher on images x (B, C, H, W) in [0, 1], taken apart:

        view_names   the V views, in order
        priors       p_v(x) (V, B, C, H, W)   the prior map of each view (the image for rgb)
        views        x_v (V, B, C, H, W)      what the teacher sees (`map`, `enhance` or `detail` mode)
        spectra      log(1 + |FFT x_v|) (V, B, H, W)
        view_logits  z_v (V, B, K)
        classes      c (B,)                   the label, or the prediction (`fusion.condition`)
        scores       s_v (V, B) of `fusion.score`; None unless `fusion.weights = text`
        weights      w (V, B): softmax_v(s / tau_w) for `text`
        logits       z_T = sum_v w_v z_v (B, K)

    `views` and `fusion` default to those the teacher was trained and distils with; others
    (an edge operator, a radius, `tau_w`, conditioning on the prediction) show what they
    change without retraining. The view names and the weighting must be the teacher's. The
    backbone runs in the teacher's inference precision, as the distiller's teacher does."""
    views = views or teacher.view_cfg
    if tuple(views.views) != tuple(teacher.view_names):
        raise ValueError(f"views {list(views.views)} are not the teacher's {list(teacher.view_names)}")
    fuse = teacher.fusion
    if fusion is not None:
        if fusion.weights != fuse.cfg.weights:  # `learned` weights are fitted to the teacher's own
            raise ValueError(f"fusion.weights={fusion.weights!r} is not the teacher's {fuse.cfg.weights!r}: "
                             "build the pipeline with that weighting instead")
        fuse = ViewFusion(fusion, teacher.class_text, fuse.image_encoder).to(teacher.class_text.device)
        fuse.view_logits.data.copy_(teacher.fusion.view_logits)
    x, labels = x.to(teacher.class_text.device), labels.to(teacher.class_text.device)
    with teacher.precision(x.device):  # the views too: the distiller's teacher builds them under autocast
        view_images = make_views(x, views)
        pooled = teacher.teacher.pooled(view_images).float()
    view_images = view_images.float()
    out = teacher.teacher.heads(pooled)
    fused = fuse(out, labels, view_images if fuse.cfg.weights == "clip_image" else None)
    classes = fuse.classes(out, labels)
    scores = view_scores(out["text"], teacher.class_text, classes, fuse.cfg).cpu() if fuse.cfg.weights == "text" else None
    return {"view_names": tuple(views.views), "priors": torch.stack([prior_map(x, v, views) for v in views.views]).cpu(),
            "views": view_images.cpu(), "spectra": torch.stack([amplitude_spectrum(v) for v in view_images]).cpu(),
            "view_logits": out["logits"].cpu(), "classes": classes.cpu(), "scores": scores,
            "weights": fused["weights"].cpu(), "logits": fused["logits"].cpu(), "fusion": fuse.cfg}


def tmkd_step_trace(pipe: Pipeline, n_images: int = 4) -> dict:
    """One TMKD training step taken apart, before any update: `explain_views` of the frozen
    fused teacher (views, per-view logits, scores, weights, fused target), the student's
    logits, and each loss term the distiller returns (`losses`, already weighted).

    The batch is the first training image of each of the first n classes, not augmented,
    at epoch 0 (a DKD term is still at zero warm-up there); the teacher runs online (a
    cached run reads the same outputs from its float16 cache). The student is the seeded
    fresh one `run_student` starts from; the teachers must be trained (notebook 02)."""
    if pipe.cfg.student.distiller != "tmkd":
        raise ValueError(f"tmkd_step_trace needs student.distiller='tmkd', got {pipe.cfg.student.distiller!r}")
    teacher = pipe.frozen_teacher(train=False)
    distiller = pipe.student_distiller(teacher).train()
    train = pipe.splits.train
    idx = first_of_each_class(train.labels, min(n_images, pipe.splits.num_classes))
    x, labels = to_float(train.load(idx), pipe.device), train.labels[idx].to(pipe.device)
    parts = explain_views(teacher, x, labels)
    logits, losses = distiller.forward_train(Batch(x, labels, idx, epoch=0.0, replica=None))
    return {**parts, "labels": labels.cpu(), "student_logits": logits.detach().cpu(),
            "losses": {k: float(v.detach()) for k, v in losses.items()},
            "total_loss": float(sum(losses.values()).detach())}


def grad_cam(x: torch.Tensor, target: torch.Tensor, forward, layer: torch.nn.Module,
             num_views: int = 1) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): relu(sum_k alpha_k A_k), alpha_k = mean grad of the
    target logit over A_k's positions. `forward(x)` returns logits (B, K) and runs `layer`
    on num_views*B images view-major (a multi-view teacher); maps of the views are summed.
    Returns (B, H, W) in [0, 1] at the input's resolution."""
    store = {}

    def keep(module, inputs, output):
        # A leaf that needs grad: the teacher is frozen, so no graph reaches this layer otherwise.
        store["act"] = output.detach().requires_grad_(True)
        return store["act"]

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = forward(x)
            act = store["act"]
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, act)[0]
    finally:
        handle.remove()
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * act).sum(1))  # (V*B, h, w)
    cam = cam.view(num_views, x.shape[0], *cam.shape[1:]).sum(0)
    cam = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1).clamp_min(1e-8)
    return (cam / peak[:, None, None]).detach()


def radial_energy(x: torch.Tensor, bins: int = 16) -> torch.Tensor:
    """Mean spectral power of the luminance per radial frequency band (DC excluded): (bins,)."""
    power = torch.fft.fft2(luminance(x.float())[:, 0]).abs() ** 2
    r = frequency_radius(*x.shape[-2:])
    edges = torch.linspace(0, r.max() + 1e-6, bins + 1)
    band = torch.bucketize(r, edges[1:-1])
    mask = r > 0
    return torch.stack([power[:, (band == b) & mask].mean() for b in range(bins)])


def energy_kept(x: torch.Tensor, radius: float) -> float:
    """Fraction of the luminance's non-DC spectral energy outside the disc |f| < radius * 0.5."""
    power = torch.fft.fft2(luminance(x.float())[:, 0]).abs() ** 2
    r = frequency_radius(*x.shape[-2:])
    return float(power[:, r >= radius * 0.5].sum() / power[:, r > 0].sum())


def rgb_teacher_forward(pipe: Pipeline):
    """(forward, layer, num_views) of the RGB teacher for grad_cam."""
    model, _ = pipe.train_or_load_rgb_teacher()
    return (lambda x: model(x)[0]), model.stages[-1], 1


def fused_teacher_forward(pipe: Pipeline, labels: torch.Tensor):
    """(forward, layer, num_views) of the fused multi-view teacher for grad_cam."""
    teacher = pipe.with_overrides({"fusion.condition": "label"}).fused_teacher()

    def forward(x):  # from_pooled runs under no_grad; here the graph must reach the logits
        out = teacher.teacher(make_views(x, teacher.view_cfg))
        return teacher.fusion(out, labels.to(x.device))["logits"]

    return forward, teacher.teacher.backbone.stages[-1], len(teacher.view_names)
