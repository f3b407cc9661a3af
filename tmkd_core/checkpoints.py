"""Teachers trained elsewhere: RepDistiller / mdistiller CIFAR checkpoints as this project's models.

The CIFAR ResNets and WRNs of `models.py` have exactly the layers of those codebases' models
(same parameter counts); only the names differ. A checkpoint (`{"model": state_dict, ...}`,
as both save it) loads after a key rename, with the input normalisation those codebases
train with (`input_norm="cifar100"`, set by the caller through `teacher.input_norm`):

    ResNet   conv1 -> stem.0   bn1 -> stem.1   layerI.J -> stages.{I-1}.J   downsample -> shortcut
    WRN      conv1 -> stem     bn1 -> bn       blockI.layer.J -> stages.{I-1}.J   convShortcut -> shortcut

The file is checked against its sha256 before it is read, and read with weights_only=True.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn as nn

from .models import WideResNet
from .utils import sha256_file

RESNET_RENAMES = ((r"^conv1\.", "stem.0."), (r"^bn1\.", "stem.1."),
                  (r"^layer(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}."), (r"\.downsample\.", ".shortcut."))
WRN_RENAMES = ((r"^conv1\.", "stem."), (r"^bn1\.", "bn."),
               (r"^block(\d+)\.layer\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
               (r"\.convShortcut\.", ".shortcut."))


def peer_state_dict(path: str | Path, sha256: str) -> dict[str, torch.Tensor]:
    """The state dict inside a RepDistiller / mdistiller checkpoint, its checksum verified."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher.checkpoint {path.resolve()} does not exist; give the path of a local "
                                f"RepDistiller/mdistiller checkpoint (e.g. resnet32x4_vanilla/ckpt_epoch_240.pth)")
    actual = sha256_file(path)
    if actual != sha256.lower():
        raise ValueError(f"teacher.checkpoint {path}: sha256 is {actual}, teacher.checkpoint_sha256 says {sha256}; "
                         f"the file is not the one named (or the checksum is wrong)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"teacher.checkpoint {path}: no state dict found (expected {{'model': state_dict, ...}})")
    return {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel too


def rename_peer_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    rules = WRN_RENAMES if isinstance(model, WideResNet) else RESNET_RENAMES
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def load_peer_checkpoint(model: nn.Module, path: str | Path, sha256: str) -> nn.Module:
    """Load a peer checkpoint into `model` (built with the peer's architecture and input
    normalisation); a layer that does not match is named, never skipped."""
    state = rename_peer_keys(peer_state_dict(path, sha256), model)
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"teacher.checkpoint {path} does not fit teacher.arch ({type(model).__name__}, "
                         f"{sum(p.numel() for p in model.parameters())} parameters): missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}, shapes {wrong[:4]}; check teacher.arch and the dataset's "
                         f"number of classes")
    model.load_state_dict(state)
    return model
