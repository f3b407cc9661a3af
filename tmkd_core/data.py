"""Datasets: offline mirrors first, torchvision downloads when asked, one clear error else.

`load_splits(cfg.data)` returns train / val / test `ImageSet`s of uint8 images
(N, C, H, W). The validation split is carved from the training set with a fixed seed,
so that tuning never touches the test set. Small datasets are decoded once and kept as
a tensor file under `data/cache/`; ImageFolder datasets are decoded lazily per batch.

Augmentation (random crop with 4 px padding, horizontal flip) is an `AugmentPlan`: the
crop offsets and flips of every training sample for one *replica* (an epoch's worth of
augmentation) are drawn from (seed, replica) alone, so that a teacher-output cache of
that replica is exact.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from .config import DataConfig
from .registry import Registry
from .utils import atomic_save, file_lock, load_checkpoint, sha256_file

MIRROR_FILES = {
    "cifar10": ("cifar10-jpeg.tar.gz", "d877bdec11f54282b92da36e9f045bd305d663b1223e3822baff39ca9ff6690a"),
    "imagenette64": ("imagenette-64-jpeg.tar.gz", "53efd8a0e3ccf0806abe7862c0fe85931f271f0fff72e167724edee622ad4562"),
    "cifar100": ("cifar100-png.tar.gz", "64045149576da92976cf94912e2726e315bea9644b5906f9aac5e039ada8bb74"),
}
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGENETTE_CLASSES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}
FASHION_CLASSES = ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "ankle boot"]
FASHION_DIRS = ("/usr/share/datasets/fashion-mnist",)


class DatasetNotFound(FileNotFoundError):
    pass


@dataclass
class ImageSet:
    """Images in memory: uint8 (N, C, H, W), labels int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[indices], self.labels[indices], self.class_names)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]

    def batches(self, batch_size: int, order: torch.Tensor | None = None,
                drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (indices, uint8 images, labels) in `order` (default: 0..N-1)."""
        order = torch.arange(len(self)) if order is None else order
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            yield idx, self.load(idx), self.labels[idx]


class FolderImageSet(torch.utils.data.Dataset):
    """An ImageFolder-style dataset decoded lazily (ImageNet scale), resized to `size`."""

    def __init__(self, files: Sequence[str], labels: Sequence[int], class_names: list[str], size: int,
                 num_workers: int = 0):
        self.files, self.labels, self.class_names, self.size = list(files), torch.as_tensor(labels), class_names, size
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: torch.Tensor) -> "FolderImageSet":
        idx = indices.tolist()
        return FolderImageSet([self.files[i] for i in idx], self.labels[indices].tolist(), self.class_names, self.size,
                              self.num_workers)

    def __getitem__(self, i: int):
        return decode_image(self.files[i], self.size, channels=3)

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([self[i] for i in indices.tolist()])

    def batches(self, batch_size: int, order: torch.Tensor | None = None, drop_last: bool = False):
        """As ImageSet.batches, decoding in `num_workers` worker processes."""
        order = torch.arange(len(self)) if order is None else order
        sampler = torch.utils.data.BatchSampler(order.tolist(), batch_size, drop_last)
        loader = torch.utils.data.DataLoader(_BatchDecoder(self), sampler=sampler, batch_size=None,
                                             num_workers=self.num_workers)
        for idx, images in loader:
            yield idx, images, self.labels[idx]


class _BatchDecoder(torch.utils.data.Dataset):
    def __init__(self, images: FolderImageSet):
        self.images = images

    def __getitem__(self, indices):
        idx = torch.as_tensor(indices)
        return idx, self.images.load(idx)


def decode_image(source: str | Path | BinaryIO, size: int | None, channels: int) -> torch.Tensor:
    """An image file (a path, or an open binary file such as an upload) as the datasets hold
    images: uint8 (C, H, W), resized on its short side to `size` and centre-cropped."""
    try:
        with Image.open(source) as im:
            im = im.convert("RGB" if channels == 3 else "L")
            if size is not None and im.size != (size, size):
                im = _resize_center_crop(im, size)
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # name the file: a corrupt image among thousands is otherwise a hunt
        name = Path(source).resolve() if isinstance(source, (str, Path)) else getattr(source, "name", "from bytes")
        raise ValueError(f"cannot decode image {name}: {exc}") from exc
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _resize_center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    scale = size / min(w, h)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


# --- sources ------------------------------------------------------------------------------

SOURCES: Registry = Registry("dataset")


def _mirror_archive(cfg: DataConfig, name: str) -> Path:
    """The absolute path of a mirror archive: error messages must say where to put it from any folder."""
    return (Path(cfg.mirror) / MIRROR_FILES[name][0]).resolve()


def _torchvision_root(cfg: DataConfig) -> Path:
    return (Path(cfg.root) / "torchvision").resolve()


def _extract_mirror(cfg: DataConfig, name: str) -> Path | None:
    """Extract the verified mirror archive into data/<name>/; None when no archive is there.

    Under the lock of data/<name>: a second process waits, then finds the stamp. The archive
    is extracted into a temporary sibling renamed into place when complete, so that no one
    ever reads a half-extracted folder.
    """
    digest = MIRROR_FILES[name][1]
    archive = _mirror_archive(cfg, name)
    target = Path(cfg.root).resolve() / name
    stamp = target / ".extracted"
    if stamp.exists():
        return target
    if not archive.exists():
        return None
    with file_lock(target):
        if stamp.exists():  # another process extracted it while this one waited
            return target
        actual = sha256_file(archive)
        if actual != digest:
            raise ValueError(f"checksum mismatch for {archive}: expected sha256 {digest}, got {actual}; "
                             "the archive is corrupt or not the one the mirror README lists")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.", suffix=".tmp"))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(staging, filter="data")
            staging.chmod(0o755)  # mkdtemp makes it private
            if target.exists():  # no stamp: an extraction that was interrupted
                shutil.rmtree(target)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        stamp.write_text(digest)
    return target


def _find_split_dir(root: Path, split: str) -> Path:
    hits = [p for p in root.rglob(split) if p.is_dir() and any(c.is_dir() for c in p.iterdir())]
    if not hits:
        raise DatasetNotFound(f"no '{split}/<class>/' folder under {root.resolve()}")
    return min(hits, key=lambda p: len(p.parts))


def _decode_folder(split_dir: Path, class_dirs: list[str], size: int | None, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, cls in enumerate(class_dirs):
        for path in sorted((split_dir / cls).iterdir()):
            images.append(decode_image(str(path), size, channels))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


def _cached_tensors(cfg: DataConfig, key: str, build) -> dict:
    """Decode once; later loads read data/cache/<key>.pt (weights_only).

    Decoding runs under the file's lock: a second process waits, then reads the finished file.
    """
    path = Path(cfg.root) / "cache" / f"{key}.pt"
    if path.exists():
        return load_checkpoint(path)
    with file_lock(path):
        if path.exists():  # another process decoded it while this one waited
            return load_checkpoint(path)
        tensors = build()
        atomic_save(tensors, path)
    return tensors


def _not_found(name: str, tried: list[str], how: str) -> DatasetNotFound:
    return DatasetNotFound(f"dataset {name!r} not found. Tried: {'; '.join(tried)}. {how}")


def _mirror_dataset(cfg: DataConfig, name: str, test_split: str, classes: list[str] | None,
                    class_names: list[str] | None):
    """classes=None: the sorted subfolders of the train split, which are also the class names
    (kept in the cache, so that a cached load needs no extracted folder)."""
    def build():  # reached only when the archive or its extraction is there
        root = _extract_mirror(cfg, name)
        train_dir = _find_split_dir(root, "train")
        folders = classes or sorted(p.name for p in train_dir.iterdir() if p.is_dir())
        out = {} if classes else {"class_names": folders}
        for split, split_dir in (("train", train_dir), ("test", _find_split_dir(root, test_split))):
            out[f"{split}_images"], out[f"{split}_labels"] = _decode_folder(split_dir, folders, cfg.image_size, 3)
        return out

    key = f"{name}_{cfg.image_size or 'native'}"
    path = Path(cfg.root) / "cache" / f"{key}.pt"
    if path.exists() or _mirror_archive(cfg, name).exists() or (Path(cfg.root) / name / ".extracted").exists():
        t = _cached_tensors(cfg, key, build)
        names = class_names or t["class_names"]
        return (ImageSet(t["train_images"], t["train_labels"], names),
                ImageSet(t["test_images"], t["test_labels"], names))
    return None


def _fetch(cfg: DataConfig, name: str, make, instead: str | None = None):
    """make() a torchvision dataset. With data.download=True a failed download (no network, a
    file that fails its checksum) becomes one line saying where to put the files instead of
    torchvision's chained urllib tracebacks; `instead` defaults to "<mirror archive> at <mirror>"."""
    try:
        return make()
    except (OSError, RuntimeError) as exc:
        if not cfg.download:
            raise
        instead = instead or f"{MIRROR_FILES[name][0]} at {_mirror_archive(cfg, name).parent}"
        detail = " ".join(str(exc).split())  # one line even when torchvision's message has several
        raise DatasetNotFound(f"dataset {name!r}: download failed, no network? ({exc.__class__.__name__}: {detail}). "
                              f"Put {instead} or torchvision's files at {_torchvision_root(cfg)} instead.") from None


def _torchvision_sets(cls, cfg: DataConfig, name: str, class_names=None, instead: str | None = None, **kwargs):
    root = _torchvision_root(cfg)
    sets = []
    for train in (True, False):
        ds = _fetch(cfg, name, lambda: cls(str(root), train=train, download=cfg.download, **kwargs), instead)
        data = torch.as_tensor(np.asarray(ds.data))
        images = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)
        sets.append(ImageSet(images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64),
                             class_names or list(ds.classes)))
    return tuple(sets)


@SOURCES.register("cifar10")
def cifar10(cfg: DataConfig):
    found = _mirror_dataset(cfg, "cifar10", "test", CIFAR10_CLASSES, CIFAR10_CLASSES)
    if found:
        return found
    from torchvision.datasets import CIFAR10
    try:
        return _torchvision_sets(CIFAR10, cfg, "cifar10", CIFAR10_CLASSES)
    except RuntimeError as exc:
        raise _not_found("cifar10", [str(_mirror_archive(cfg, "cifar10")), str(_torchvision_root(cfg))],
                         "Put the mirror archive there, or set data.download=True on a machine with a network.") from exc


@SOURCES.register("imagenette64")
def imagenette64(cfg: DataConfig):
    wnids = sorted(IMAGENETTE_CLASSES)
    names = [IMAGENETTE_CLASSES[w] for w in wnids]
    found = _mirror_dataset(cfg, "imagenette64", "val", wnids, names)
    if found:
        return found
    if not cfg.download:
        raise _not_found("imagenette64", [str(_mirror_archive(cfg, "imagenette64"))],
                         "Put the mirror archive there, or set data.download=True to fetch Imagenette "
                         "(160 px) through torchvision and resize it to 64 px.")
    from torchvision.datasets import Imagenette

    def build():
        out = {}
        for split, tv_split in (("train", "train"), ("test", "val")):
            ds = _fetch(cfg, "imagenette64", lambda: Imagenette(str(_torchvision_root(cfg)), split=tv_split,
                                                                size="160px", download=True))
            files, labels = zip(*ds._samples)
            folder = FolderImageSet(files, labels, names, cfg.image_size or 64)
            out[f"{split}_images"] = folder.load(torch.arange(len(folder)))
            out[f"{split}_labels"] = torch.tensor(labels)
        return out

    t = _cached_tensors(cfg, f"imagenette64_tv_{cfg.image_size or 64}", build)
    return ImageSet(t["train_images"], t["train_labels"], names), ImageSet(t["test_images"], t["test_labels"], names)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@SOURCES.register("fashion_mnist")
def fashion_mnist(cfg: DataConfig):
    for folder in FASHION_DIRS:
        d = Path(folder)
        if (d / "train-images-idx3-ubyte.gz").exists():
            sets = []
            for prefix in ("train", "t10k"):
                images = torch.from_numpy(_read_idx(d / f"{prefix}-images-idx3-ubyte.gz").copy()).unsqueeze(1)
                labels = torch.from_numpy(_read_idx(d / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
                sets.append(ImageSet(images, labels, FASHION_CLASSES))
            return tuple(sets)
    from torchvision.datasets import FashionMNIST
    try:
        return _torchvision_sets(FashionMNIST, cfg, "fashion_mnist", FASHION_CLASSES,
                                 instead=f"the IDX files (train-images-idx3-ubyte.gz, ...) at {FASHION_DIRS[0]}")
    except RuntimeError as exc:
        raise _not_found("fashion_mnist", [f"{d}/train-images-idx3-ubyte.gz" for d in FASHION_DIRS]
                         + [str(_torchvision_root(cfg))],
                         "Install the Debian package dataset-fashion-mnist, or set data.download=True.") from exc


@SOURCES.register("cifar100")
def cifar100(cfg: DataConfig):
    found = _mirror_dataset(cfg, "cifar100", "test", None, None)  # class folders sort into labels 0-99
    if found:
        return found
    from torchvision.datasets import CIFAR100
    try:
        return _torchvision_sets(CIFAR100, cfg, "cifar100")
    except RuntimeError as exc:
        raise _not_found("cifar100", [str(_mirror_archive(cfg, "cifar100")), str(_torchvision_root(cfg))],
                         "Put the mirror archive there, set data.download=True on a machine with a network, "
                         "or place torchvision's cifar-100-python folder there.") from exc


@SOURCES.register("imagefolder")
def imagefolder(cfg: DataConfig):
    """Any ImageNet-style folder: <folder>/train/<class>/*, <folder>/val/<class>/* (or test/)."""
    if not cfg.folder:
        raise ValueError("data.name='imagefolder' needs data.folder=<root with train/ and val/ inside>")
    root = Path(cfg.folder).resolve()  # absolute in errors, whatever folder the run started in
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise _not_found("imagefolder", [str(root / "train"), str(root / "val"), str(root / "test")],
                         "Point data.folder at a folder holding train/<class>/ and val/<class>/ (or test/).")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    sets = []
    for split_dir in (root / "train", test_dir):
        files, labels = [], []
        for label, cls in enumerate(classes):
            for path in sorted((split_dir / cls).iterdir()):
                files.append(str(path))
                labels.append(label)
        sets.append(FolderImageSet(files, labels, classes, cfg.image_size or 224, cfg.num_workers))
    return tuple(sets)


# --- splits ---------------------------------------------------------------------------------

@dataclass
class Splits:
    train: ImageSet
    val: ImageSet
    test: ImageSet
    class_names: list[str]

    @property
    def in_channels(self) -> int:
        return int(self.train.load(torch.tensor([0])).shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def stratified_order(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """A permutation whose every prefix is as class-balanced as possible (round robin)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    shuffled = labels[perm]
    rank = torch.empty_like(perm)
    for c in shuffled.unique():
        pos = (shuffled == c).nonzero().flatten()
        rank[pos] = torch.arange(len(pos))
    # Sort by (rank within class, random tie-break): classes interleave.
    key = rank.double() + torch.rand(len(perm), generator=g, dtype=torch.float64) * 0.5
    return perm[torch.argsort(key)]


def first_of_each_class(labels: torch.Tensor, n: int) -> torch.Tensor:
    """idx[c] = min{i : labels[i] = c} for the classes c = 0..n-1: the sample of each class
    the notebooks show (n,). ValueError naming a class that has no sample."""
    found = [(labels == c).nonzero() for c in range(n)]
    missing = [c for c, hits in enumerate(found) if len(hits) == 0]
    if missing:
        raise ValueError(f"classes {missing} have no sample among {len(labels)} labels")
    return torch.stack([hits[0, 0] for hits in found])


def load_splits(cfg: DataConfig) -> Splits:
    train_full, test = SOURCES.get(cfg.name)(cfg)
    if cfg.val_size >= len(train_full):
        raise ValueError(f"val_size={cfg.val_size} leaves no training images (train set has {len(train_full)})")
    order = stratified_order(train_full.labels, cfg.split_seed)
    val_idx, train_idx = order[:cfg.val_size], order[cfg.val_size:]
    if cfg.train_size is not None:
        train_idx = train_idx[:cfg.train_size]
    if cfg.test_size is not None:
        test = test.subset(stratified_order(test.labels, cfg.split_seed)[:cfg.test_size].sort().values)
    return Splits(train_full.subset(train_idx.sort().values), train_full.subset(val_idx.sort().values),
                  test, train_full.class_names)


# --- augmentation -----------------------------------------------------------------------

@dataclass
class AugmentPlan:
    """Crop offsets (0..2*pad) and flips of every training sample for one replica."""

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    pad: int = 4

    @classmethod
    def draw(cls, n: int, seed: int, replica: int, pad: int = 4) -> "AugmentPlan":
        g = torch.Generator().manual_seed(hash_seed(seed, replica))
        return cls(torch.randint(0, 2 * pad + 1, (n,), generator=g),
                   torch.randint(0, 2 * pad + 1, (n,), generator=g),
                   torch.rand(n, generator=g) < 0.5, pad)

    def apply(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Crop-and-flip a batch x (B, C, H, W), uint8 or float, whose samples have dataset indices idx."""
        b, _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy, dx, flip = (t[idx.cpu()].to(x.device) for t in (self.dy, self.dx, self.flip))
        rows = dy[:, None] + torch.arange(h, device=x.device)[None]
        cols = dx[:, None] + torch.arange(w, device=x.device)[None]
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        bi = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2).contiguous()


def hash_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") >> 1


def to_float(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (B, C, H, W) -> float in [0, 1] on `device`."""
    return images.to(device, non_blocking=True).float().div_(255.0)
