"""Shared fixtures. Tests read real data (the CIFAR-10 mirror in ../shared/data, skimage's
photographs) and never touch the network."""
from __future__ import annotations

import os
import socket
from contextlib import contextmanager
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


@contextmanager
def network_blocked():
    """Any attempt to open a socket fails with AssertionError. The Hugging Face hub is not
    told to stay offline: a library that reaches for it must fail here, not be excused."""

    def guard(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guard)
        patch.setattr(socket, "create_connection", guard)
        yield


@pytest.fixture
def no_network():
    """The test runs with the network blocked (`network_blocked`)."""
    with network_blocked():
        yield
