"""Visual priors: the views a multi-view teacher sees (docs/method.md §1).

Every view maps an image batch `x` of shape (B, C, H, W) with values in [0, 1] to a batch
of the same shape and range. All are batched torch functions that run on any device,
except Canny, which goes through scikit-image on the CPU (for figures and ablations).

Padding follows scipy.ndimage's `reflect` mode (half-sample symmetric, `d c b a | a b c d`)
so that each view matches its scikit-image reference, borders included.

`VIEWS` is the one registry of views: each entry holds the view's prior function, the
switch that sets its mode and its prompt templates; `ViewConfig` holds every view's
switches. Adding a view touches this file only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .registry import Registry
from .settings import ConfigError, Section, setting

# ITU-R BT.709 luma, as skimage.color.rgb2gray.
LUMA_WEIGHTS = (0.2125, 0.7154, 0.0721)
EPS = 1e-8

EDGE_OPERATORS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("edge operator")
HF_FILTERS: Registry[Callable[..., torch.Tensor]] = Registry("high-pass filter")
# map: the prior alone; enhance: clip(x + lambda * prior, 0, 1) with the prior scaled to
# [0, 1] (it brightens the image); detail: clip(x + lambda_d * r, 0, 1) with a zero-mean
# residual r (an unsharp mask for hf), which sharpens without shifting brightness.
VIEW_MODES = ("map", "enhance", "detail")


@dataclass
class ViewConfig(Section):
    """The views the multi-view teacher sees and every view's switches (docs/method.md §1)."""

    views: tuple[str, ...] = setting(("rgb", "edge", "hf"), choices="tmkd_core.priors:VIEWS")
    edge_operator: str = setting("sobel", choices="tmkd_core.priors:EDGE_OPERATORS")
    edge_mode: str = setting("map", choices=VIEW_MODES)
    hf_filter: str = setting("fft", choices="tmkd_core.priors:HF_FILTERS")
    hf_radius: float = setting(0.25, gt=0.0, lt=math.sqrt(2), doc="disc radius, fraction of the Nyquist radius")
    hf_sigma: float = setting(1.0, gt=0.0, doc="Gaussian high-pass: x - G_sigma * x")
    hf_mode: str = setting("map", choices=VIEW_MODES)
    enhance_lambda: float = setting(0.5, ge=0.0, doc="enhance mode: clip(x + lambda * prior, 0, 1)")
    detail_lambda: float = setting(1.0, ge=0.0, added=True,
                                   doc="detail mode: clip(x + lambda_d * r, 0, 1), r the view's zero-mean residual")

    def check(self):
        if not self.views or self.views[0] != "rgb":
            raise ConfigError(f"ViewConfig.views must start with 'rgb', got {list(self.views)}")
        if len(set(self.views)) != len(self.views):
            raise ConfigError(f"ViewConfig.views repeats a view: {list(self.views)}")


@dataclass(frozen=True)
class ViewSpec:
    """One view: its prior map (None: the image itself), the ViewConfig switch holding its
    mode, the prior-aware prompt templates of the text teacher (docs/method.md §3), and its
    zero-mean residual (the `detail` mode)."""

    prior: Callable[[torch.Tensor, ViewConfig], torch.Tensor] | None
    mode: str | None
    templates: tuple[str, ...]
    residual: Callable[[torch.Tensor, ViewConfig], torch.Tensor] | None = None


VIEWS: Registry[ViewSpec] = Registry("view")


def luminance(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W); a one-channel input is returned as it is."""
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"luminance needs 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def pad_symmetric(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad rows by `pad_h` and columns by `pad_w` with scipy's `reflect` rule."""
    if pad_h > x.shape[-2] or pad_w > x.shape[-1]:
        raise ValueError(f"padding ({pad_h}, {pad_w}) exceeds the image size {tuple(x.shape[-2:])}")
    if pad_h:
        x = torch.cat([x[..., :pad_h, :].flip(-2), x, x[..., -pad_h:, :].flip(-2)], dim=-2)
    if pad_w:
        x = torch.cat([x[..., :pad_w].flip(-1), x, x[..., -pad_w:].flip(-1)], dim=-1)
    return x


def _conv2d_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel of x with a 2-D kernel (odd sizes), symmetric padding."""
    c = x.shape[1]
    k = kernel.to(dtype=x.dtype, device=x.device)
    weight = k.expand(c, 1, *k.shape)
    return F.conv2d(pad_symmetric(x, k.shape[0] // 2, k.shape[1] // 2), weight, groups=c)


def scale_by_max(m: torch.Tensor) -> torch.Tensor:
    """Scale each image of a non-negative map to [0, 1] by its own maximum."""
    peak = m.flatten(1).amax(dim=1).view(-1, *([1] * (m.dim() - 1)))
    return m / (peak + EPS)


def scale_min_max(m: torch.Tensor) -> torch.Tensor:
    """Map each image to [0, 1] by its own minimum and maximum."""
    flat = m.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (m.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (m.dim() - 1)))
    return (m - lo) / (hi - lo + EPS)


def _gradient_magnitude(gray: torch.Tensor, smooth: tuple[float, ...]) -> torch.Tensor:
    """sqrt((g_y^2 + g_x^2) / 2) with a separable derivative/smoothing pair, as skimage."""
    s = torch.tensor(smooth) / sum(smooth)
    d = torch.tensor([1.0, 0.0, -1.0])
    ky = torch.outer(d, s)  # derivative along rows, smoothing along columns
    kx = torch.outer(s, d)
    gy = _conv2d_same(gray, ky)
    gx = _conv2d_same(gray, kx)
    return torch.sqrt((gy**2 + gx**2) / 2)


@EDGE_OPERATORS.register("sobel")
def sobel_edges(gray: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude (skimage.filters.sobel)."""
    return _gradient_magnitude(gray, (1.0, 2.0, 1.0))


@EDGE_OPERATORS.register("scharr")
def scharr_edges(gray: torch.Tensor) -> torch.Tensor:
    """Scharr gradient magnitude (skimage.filters.scharr)."""
    return _gradient_magnitude(gray, (3.0, 10.0, 3.0))


@EDGE_OPERATORS.register("laplacian")
def laplacian_edges(gray: torch.Tensor) -> torch.Tensor:
    """|4-neighbour Laplacian| (skimage.filters.laplace, ksize=3)."""
    k = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]])
    return _conv2d_same(gray, k).abs()


@EDGE_OPERATORS.register("canny")
def canny_edges(gray: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Binary Canny edges through skimage.feature.canny (CPU, per image)."""
    from skimage.feature import canny

    arr = gray.detach().float().cpu().numpy()
    out = np.stack([canny(img[0], sigma=sigma)[None] for img in arr]).astype(np.float32)
    return torch.from_numpy(out).to(device=gray.device, dtype=gray.dtype)


def edge_map(x: torch.Tensor, operator: str = "sobel") -> torch.Tensor:
    """Edge magnitude of the luminance, scaled to [0, 1] per image, repeated to C channels."""
    edges = scale_by_max(EDGE_OPERATORS.get(operator)(luminance(x)))
    return edges.expand(-1, x.shape[1], -1, -1).contiguous()


def frequency_radius(h: int, w: int, device=None) -> torch.Tensor:
    """Radius of each 2-D FFT bin in cycles per pixel (the Nyquist radius is 0.5)."""
    fy = torch.fft.fftfreq(h, device=device)
    fx = torch.fft.fftfreq(w, device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


@HF_FILTERS.register("fft")
def fft_highpass(x: torch.Tensor, radius: float = 0.25, sigma: float = 1.0) -> torch.Tensor:
    """Ideal high-pass: zero the centred disc |f| < radius * 0.5 cycles/pixel, inverse FFT."""
    if not 0.0 < radius < math.sqrt(2):
        raise ValueError(f"hf_radius must lie in (0, sqrt(2)), got {radius}")
    spectrum = torch.fft.fft2(x.float())
    keep = frequency_radius(*x.shape[-2:], device=x.device) >= radius * 0.5
    return torch.fft.ifft2(spectrum * keep).real.to(x.dtype)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """The 1-D Gaussian of scipy.ndimage.gaussian_filter (radius = int(truncate*sigma+0.5))."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel, symmetric padding, truncated at 4 sigma."""
    k = gaussian_kernel1d(sigma)
    return _conv2d_same(_conv2d_same(x, k[None, :]), k[:, None])


@HF_FILTERS.register("gaussian")
def gaussian_highpass(x: torch.Tensor, radius: float = 0.25, sigma: float = 1.0) -> torch.Tensor:
    """Difference to a Gaussian blur: x - G_sigma * x."""
    if sigma <= 0:
        raise ValueError(f"hf_sigma must be > 0, got {sigma}")
    return x - gaussian_blur(x, sigma)


def hf_map(x: torch.Tensor, filter: str = "fft", radius: float = 0.25, sigma: float = 1.0) -> torch.Tensor:
    """High-frequency residual of every channel, mapped to [0, 1] per image."""
    return scale_min_max(HF_FILTERS.get(filter)(x, radius=radius, sigma=sigma))


def enhance(x: torch.Tensor, prior: torch.Tensor, lam: float) -> torch.Tensor:
    """Prior-enhanced image: clip(x + lambda * prior, 0, 1)."""
    return (x + lam * prior).clamp(0.0, 1.0)


def edge_residual(x: torch.Tensor, operator: str = "sobel") -> torch.Tensor:
    """The edge map less its per-image mean, r = e - mean(e): edges brighten and flat
    regions darken by as much, so x + lambda * r keeps the image's mean brightness."""
    e = edge_map(x, operator)
    return e - e.mean(dim=(1, 2, 3), keepdim=True)


def hf_residual(x: torch.Tensor, filter: str = "fft", radius: float = 0.25, sigma: float = 1.0) -> torch.Tensor:
    """The high-pass residual itself, unscaled (zero mean: the fft filter removes the DC
    bin, the Gaussian one subtracts a blur), so that x + lambda * r is an unsharp mask."""
    return HF_FILTERS.get(filter)(x, radius=radius, sigma=sigma)


VIEWS.register("rgb")(ViewSpec(
    prior=None, mode=None,
    templates=("a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}.")))
VIEWS.register("edge")(ViewSpec(
    prior=lambda x, cfg: edge_map(x, cfg.edge_operator), mode="edge_mode",
    templates=("an edge map of a {}.", "a line drawing of a {}.", "a sketch of the outline of a {}."),
    residual=lambda x, cfg: edge_residual(x, cfg.edge_operator)))
VIEWS.register("hf")(ViewSpec(
    prior=lambda x, cfg: hf_map(x, cfg.hf_filter, cfg.hf_radius, cfg.hf_sigma), mode="hf_mode",
    templates=("the fine texture details of a {}.", "a high-pass filtered photo of a {}.",
               "the sharp edges and fine texture of a {}."),
    residual=lambda x, cfg: hf_residual(x, cfg.hf_filter, cfg.hf_radius, cfg.hf_sigma)))


def prior_map(x: torch.Tensor, name: str, cfg: ViewConfig | None = None) -> torch.Tensor:
    """The prior of a view alone (what the `map` mode shows); the image itself for `rgb`."""
    spec = VIEWS.get(name)
    return x if spec.prior is None else spec.prior(x, cfg or ViewConfig())


def view_panels(x: torch.Tensor, cfg: ViewConfig) -> list[tuple[str, torch.Tensor]]:
    """What each view adds, for figures: the image, then every prior map and, where its mode
    is `enhance` or `detail`, the view beside it (in `map` mode the view is the prior)."""
    panels = [("rgb", x)]
    for name in cfg.views[1:]:
        panels.append((f"{name} prior", prior_map(x, name, cfg)))
        mode = getattr(cfg, VIEWS.get(name).mode)
        if mode == "enhance":
            panels.append((f"{name} view (x + {cfg.enhance_lambda:g} prior)", view(x, name, cfg)))
        elif mode == "detail":
            panels.append((f"{name} view (x + {cfg.detail_lambda:g} residual)", view(x, name, cfg)))
    return panels


def view(x: torch.Tensor, name: str, cfg: ViewConfig | None = None) -> torch.Tensor:
    """One view of the batch, with the operator and mode of `cfg`."""
    cfg = cfg or ViewConfig()
    spec = VIEWS.get(name)
    if spec.prior is None:
        return x
    mode = getattr(cfg, spec.mode)
    if mode == "detail":
        return (x + cfg.detail_lambda * spec.residual(x, cfg)).clamp(0.0, 1.0)
    prior = spec.prior(x, cfg)
    return enhance(x, prior, cfg.enhance_lambda) if mode == "enhance" else prior


@torch.no_grad()
def make_views(x: torch.Tensor, cfg: ViewConfig) -> torch.Tensor:
    """All configured views stacked: (V, B, C, H, W), in the order of `cfg.views`."""
    return torch.stack([view(x, name, cfg) for name in cfg.views])


def amplitude_spectrum(x: torch.Tensor) -> torch.Tensor:
    """log(1 + |FFT|) of the luminance, zero frequency centred: (B, H, W), for figures."""
    spec = torch.fft.fftshift(torch.fft.fft2(luminance(x.float())[:, 0]), dim=(-2, -1))
    return torch.log1p(spec.abs())
