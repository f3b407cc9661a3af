"""Small shared helpers: atomic checkpoints, seeds, devices, run metadata."""
from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TEACHER_PRECISIONS


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save to a temporary file in the same folder, then rename: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def write_json(obj: Any, path: str | Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by atomic_save; tensors and plain containers only."""
    return torch.load(path, map_location=map_location, weights_only=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here; use device='cpu' or 'auto'")
    return device


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 instructions (AVX512-BF16 or AMX), where oneDNN runs
    bf16 convolutions natively; elsewhere bf16 on the CPU is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def teacher_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the frozen teacher's forward: bf16 or None (float32).

    `auto` picks bf16 on CUDA and on CPUs with native bf16 (measured 2x faster for the
    three-view resnet14 forward on a 2-core AMD EPYC with AVX512-BF16,
    docs/exploration/teacher_forward.txt), float32 elsewhere.
    """
    if precision not in TEACHER_PRECISIONS:
        raise ValueError(f"invalid teacher_precision {precision!r}; valid values: {', '.join(TEACHER_PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()) else "fp32"
    return torch.bfloat16 if precision == "bf16" else None


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def run_metadata() -> dict:
    """What a results file needs to be traced back: commit, packages, machine."""
    packages = {}
    for name in ("torch", "torchvision", "numpy", "open-clip-torch", "sentence-transformers", "scikit-image"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "git_commit": git_commit(),
        "packages": packages,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "torch_threads": torch.get_num_threads(),
    }
