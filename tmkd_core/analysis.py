"""What the notebooks look at: fusion weights over a split, Grad-CAM maps, spectra."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .data import to_float
from .priors import frequency_radius, luminance, make_views

if TYPE_CHECKING:
    from .experiment import Pipeline


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
