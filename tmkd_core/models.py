"""Backbones and the multi-view teacher (docs/method.md §2).

Every backbone takes images in [0, 1] and returns `(logits, feats)` with
`feats["pooled"]` the pooled feature `h` (B, d) and `feats["stages"]` the stage outputs.
`MODELS.get(name)(num_classes=..., in_channels=...)` builds one; an unknown name lists
the available ones.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import Registry

MODELS: Registry = Registry("model")
VIEW_BN = ("per_view", "shared")  # BatchNorm of the multi-view teacher: one per view, or one for all


# Input normalisation of [0, 1] images: this project's fixed map, or the per-channel
# statistics of the codebases whose checkpoints can be imported (RepDistiller, mdistiller).
INPUT_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fixed": ((0.5,), (0.25,)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
}


class InputNorm(nn.Module):
    """(x - mean) / std on [0, 1] inputs, one map for every view. Not part of the state
    dict: it is a setting (`input_norm`), and checkpoints stay loadable across it."""

    def __init__(self, name: str = "fixed", in_channels: int = 3):
        super().__init__()
        if name not in INPUT_NORMS:
            raise KeyError(f"unknown input_norm {name!r}; available: {', '.join(INPUT_NORMS)}")
        mean, std = INPUT_NORMS[name]
        if len(mean) not in (1, in_channels):
            raise ValueError(f"input_norm {name!r} has {len(mean)} channels; the images have {in_channels}")
        self.name = name
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Backbone(nn.Module):
    """stem -> stages -> (final activation) -> global average pool -> fc."""

    norm: nn.Module
    stem: nn.Module
    stages: nn.ModuleList
    fc: nn.Linear
    feature_dim: int

    def final(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def features(self, x):
        out = self.stem(self.norm(x))
        stages = []
        for stage in self.stages:
            out = stage(out)
            stages.append(out)
        return torch.flatten(F.adaptive_avg_pool2d(self.final(out), 1), 1), stages

    def forward(self, x):
        pooled, stages = self.features(x)
        return self.fc(pooled), {"pooled": pooled, "stages": stages}


class CifarResNet(Backbone):
    """ResNet-(6n+2) for 32 px images (He et al. 2016), widths as in CRD / mdistiller."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3,
                 input_norm: str = "fixed"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.norm = InputNorm(input_norm, in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            blocks = [BasicBlock(cin if j == 0 else w, w, stride=(1 if i == 0 or j > 0 else 2)) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)
        _init_weights(self)


class WideBlock(nn.Module):
    """Pre-activation wide block (Zagoruyko & Komodakis 2016)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(Backbone):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3, input_norm: str = "fixed"):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.norm = InputNorm(input_norm, in_channels)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        stages, cin = [], widths[0]
        for i, w in enumerate(widths[1:]):
            stages.append(nn.Sequential(*[WideBlock(cin if j == 0 else w, w, (1 if i == 0 or j > 0 else 2))
                                          for j in range(n)]))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(widths[-1])
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)
        _init_weights(self)

    def final(self, out):
        return F.relu(self.bn(out))  # pre-activation blocks end without one


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _register_resnet(name, depth, widths):
    MODELS.register(name)(lambda num_classes, in_channels=3, input_norm="fixed":
                          CifarResNet(depth, widths, num_classes, in_channels, input_norm))


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _register_resnet(f"resnet{_depth}", _depth, (16, 16, 32, 64))
_register_resnet("resnet8x4", 8, (32, 64, 128, 256))
_register_resnet("resnet32x4", 32, (32, 64, 128, 256))
for _depth, _widen in ((16, 1), (16, 2), (40, 1), (40, 2)):
    MODELS.register(f"wrn_{_depth}_{_widen}")(
        lambda num_classes, in_channels=3, input_norm="fixed", d=_depth, k=_widen:
        WideResNet(d, k, num_classes, in_channels, input_norm))


def build_model(arch: str, num_classes: int, in_channels: int = 3, input_norm: str = "fixed") -> nn.Module:
    return MODELS.get(arch)(num_classes=num_classes, in_channels=in_channels, input_norm=input_norm)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- multi-view teacher ----------------------------------------------------------------

class ViewBatchNorm2d(nn.Module):
    """One BatchNorm per view over a batch laid out view-major: (V*B, C, H, W).

    The convolutions stay shared; only normalisation statistics and affine parameters
    are per view (`view_bn = per_view`).
    """

    def __init__(self, bn: nn.BatchNorm2d, num_views: int):
        super().__init__()
        self.bns = nn.ModuleList(copy.deepcopy(bn) for _ in range(num_views))

    def forward(self, x):
        if not self.training:
            return self._eval_affine(x)
        chunks = x.chunk(len(self.bns), dim=0)
        return torch.cat([bn(c) for bn, c in zip(self.bns, chunks)], dim=0)

    def _eval_affine(self, x):
        """Eval-mode BN is y = a_v * x + b_v per view and channel: one broadcast multiply-add
        on the (V, B, ...) view of the batch, instead of V BatchNorm calls and a concat,
        which showed up among the largest costs of an online TMKD step in a CPU profile."""
        scale = torch.stack([bn.weight / torch.sqrt(bn.running_var + bn.eps) for bn in self.bns])
        shift = torch.stack([bn.bias for bn in self.bns]) - torch.stack([bn.running_mean for bn in self.bns]) * scale
        shape = (len(self.bns), 1, -1, 1, 1)  # (V, 1, C, 1, 1) against (V, B, C, H, W)
        views = x.unflatten(0, (len(self.bns), -1))
        return torch.addcmul(shift.view(shape).to(x.dtype), views, scale.view(shape).to(x.dtype)).flatten(0, 1)


def split_batchnorm_per_view(module: nn.Module, num_views: int) -> nn.Module:
    """Replace every BatchNorm2d by a ViewBatchNorm2d initialised from it (in place)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, ViewBatchNorm2d(child, num_views))
        else:
            split_batchnorm_per_view(child, num_views)
    return module


class MultiViewTeacher(nn.Module):
    """Backbone f shared across views, classifier W shared, a text head P_v per view.

    forward(views) with views (V, B, C, H, W) runs ONE batched backbone call on the
    (V*B) stack and returns
      logits (V, B, K) = W h_v,  pooled (V, B, d) = h_v,  text (V, B, D) = P_v h_v.
    """

    def __init__(self, backbone: nn.Module, view_names: tuple[str, ...], text_dim: int, view_bn: str = "per_view"):
        super().__init__()
        self.view_names = tuple(view_names)
        self.backbone = split_batchnorm_per_view(backbone, len(view_names)) if view_bn == "per_view" else backbone
        self.text_heads = nn.ModuleList(nn.Linear(backbone.feature_dim, text_dim) for _ in view_names)

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def pooled(self, views: torch.Tensor) -> torch.Tensor:
        """h_v for views (V, B, C, H, W): one batched backbone call -> (V, B, d)."""
        v, b = views.shape[:2]
        if v != len(self.view_names):
            raise ValueError(f"teacher expects {len(self.view_names)} views {self.view_names}, got {v}")
        pooled, _ = self.backbone.features(views.flatten(0, 1))
        return pooled.view(v, b, -1)

    def heads(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits W h_v and text-space projections P_v h_v from pooled features (V, B, d)."""
        text = torch.stack([head(h) for head, h in zip(self.text_heads, pooled)])
        return {"logits": self.backbone.fc(pooled), "pooled": pooled, "text": text}

    def forward(self, views: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.pooled(views))
