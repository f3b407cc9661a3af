"""Shared fixtures. Tests read real data (the CIFAR-10 mirror in ../shared/data, skimage's
photographs) and never touch the network."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("TMKD_MIRROR", ROOT.parent / "shared" / "data"))
DATA_ROOT = Path(os.environ.get("TMKD_DATA", ROOT / "data"))


@pytest.fixture(scope="session")
def photos() -> torch.Tensor:
    """Four real photographs from skimage.data, 96x96 RGB in [0, 1]: (4, 3, 96, 96)."""
    from skimage import data
    from skimage.transform import resize

    imgs = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    arr = np.stack([resize(im, (96, 96), anti_aliasing=True) for im in imgs]).astype(np.float32)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="session")
def cifar_cfg():
    """A small but real CIFAR-10 configuration (smoke profile) under the project's data/."""
    from tmkd_core.config import make_config

    if not (MIRROR / "cifar10-jpeg.tar.gz").exists() and not (DATA_ROOT / "cifar10" / ".extracted").exists():
        pytest.fail(f"CIFAR-10 mirror not found at {MIRROR}; set TMKD_MIRROR to the folder holding cifar10-jpeg.tar.gz")
    return make_config("smoke", {"data.root": str(DATA_ROOT), "data.mirror": str(MIRROR), "device": "cpu"})


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test."""

    def guard(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", guard)
    monkeypatch.setattr(socket, "create_connection", guard)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
