"""Small shared helpers: atomic checkpoints, seeds, devices, run metadata."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch



TEACHER_PRECISIONS = ("auto", "fp32", "bf16")  # autocast of the frozen teacher's forward


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: mkstemp creates files 0600, the rename should give what open() would


def _atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """`write(tmp)` to a temporary file in the same folder, then rename: never a torn file.
    The file gets the permissions a plain `open(path, "w")` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save, atomically."""
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_copy(src: str | Path, path: str | Path) -> Path:
    """A copy of `src` at `path`, atomically."""
    return _atomic_write(path, lambda tmp: shutil.copyfile(src, tmp))


def atomic_write_text(text: str, path: str | Path) -> Path:
    return _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(obj: Any, path: str | Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


class DamagedArtifact(RuntimeError):
    """A cached file (checkpoint, cache, run record) that exists but cannot be read."""


def damaged(path: str | Path, exc: BaseException | str) -> DamagedArtifact:
    """The error for a file that exists but cannot be read: which file, why, and the fix.
    Nothing is overwritten: the file may hold hours of work, so the user decides."""
    path = Path(path).resolve()
    return DamagedArtifact(f"{path} is damaged or truncated ({exc}). Delete it (rm -r '{path}') and rerun: "
                           "it is rebuilt from its settings.")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by atomic_save; tensors and plain containers only."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, OSError
        raise damaged(path, exc) from exc


def read_json(path: str | Path) -> Any:
    """json.loads of a file, naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise damaged(path, exc) from exc


@contextlib.contextmanager
def file_lock(path: str | Path, acquire: Callable[[Callable[[], bool]], None] | None = None) -> Iterator[None]:
    """An exclusive advisory lock on `<path>.lock` (fcntl.flock), held for the block.

    Every artefact under data/ is built inside the lock of its own path: a second process
    that wants the same artefact waits, then finds it finished instead of building it
    again into the same files. The lock dies with its process, so a killed run never
    leaves a stale lock behind. `acquire(try_once)` replaces the blocking wait (torchrun
    ranks poll together, see distributed.build_once).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    with open(lock, "a") as handle:
        if acquire is None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        else:
            def try_once() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    return False

            acquire(try_once)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_once(path: str | Path, build: Callable[[], Any], load: Callable[[Path], Any]) -> Any:
    """`load(path)` if the artefact is there, else `build()` (which writes it) under its lock."""
    path = Path(path)
    if path.exists():
        return load(path)
    with file_lock(path):
        if path.exists():  # another process finished it while this one waited
            return load(path)
        build()
    return load(path)


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


def train_dtype(amp: bool, cpu_amp: bool, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training: bf16 with `amp` on CUDA or `cpu_amp` on CPU, else None (float32).

    `cpu_amp` on a CPU without native bf16 is an error: bf16 is emulated there, many times
    slower than float32 (`make bench`'s "CE (bf16 autocast)" row shows how much)."""
    if device.type == "cuda":
        return torch.bfloat16 if amp else None
    if device.type != "cpu" or not cpu_amp:
        return None
    if not cpu_has_native_bf16():
        raise ValueError("cpu_amp=True needs a CPU with native bf16 (AVX512-BF16 or AMX); this one "
                         f"({torch.backends.cpu.get_cpu_capability()}) has none: set cpu_amp=False")
    return torch.bfloat16


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def git_dirty() -> bool | None:
    """True when tracked files other than what a run itself rewrites (figures/ and the executed
    notebooks) differ from the commit: the results then come from code that is not in git."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!figures",
                              ":!notebooks/executed"],
                             capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parent).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return bool(out.strip())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_metadata(precision: dict | None = None) -> dict:
    """What a results file needs to be traced back: commit (and whether the tree was dirty),
    packages, machine, threads, and the precision each part ran in."""
    packages = {}
    for name in ("torch", "torchvision", "numpy", "open-clip-torch", "sentence-transformers", "scikit-image",
                 "transformers", "tokenizers"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "packages": packages,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "cpu_model": cpu_model(),
        "cpu_native_bf16": cpu_has_native_bf16(),
        "torch_threads": torch.get_num_threads(),
        **({"precision": precision} if precision is not None else {}),
    }
