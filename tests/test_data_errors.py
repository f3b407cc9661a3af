"""Dataset errors a user can act on from any folder, the CIFAR-100 mirror layout, and two
processes loading the same dataset at once. Tiny fake archives stand in for the real mirror."""
from __future__ import annotations

import multiprocessing
import os
import re
import socket
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tmkd_core import data
from tmkd_core.config import DataConfig
from tmkd_core.data import DatasetNotFound, load_splits, sha256_file
from tmkd_core.utils import DamagedArtifact

# Created in this order on purpose: the labels must follow the sorted folder names instead.
TINY_CLASSES = ["whale", "apple", "maple_tree"]


def pixel_value(label: int, index: int) -> int:
    """Every image is one flat colour that encodes its class and its number in the class."""
    return 40 * label + index


def make_tiny_cifar100(mirror: Path, per_class: int = 2) -> tuple[str, str]:
    """A cifar100-png.tar.gz of the mirror's layout (train/<class>/NNNN.png, test/<class>/NNNN.png)
    with 3 classes; returns its MIRROR_FILES entry."""
    src = mirror.parent / "tiny-src"
    for label, cls in enumerate(sorted(TINY_CLASSES)):
        for split, first in (("train", 0), ("test", 500)):
            (src / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = np.full((32, 32, 3), pixel_value(label, i), np.uint8)
                Image.fromarray(img).save(src / split / cls / f"{first + i:04d}.png")
    mirror.mkdir(parents=True, exist_ok=True)
    archive = mirror / "cifar100-png.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(src / split, arcname=split)
    return archive.name, sha256_file(archive)


def _load_in_child(cfg: DataConfig, mirror_entry: tuple[str, str], barrier, out: str, decode_log: str) -> None:
    """Runs in a spawned process: the parent's monkeypatch of MIRROR_FILES is not inherited.
    The checksum is slowed down so that, without the locks, both processes would extract and
    decode; every folder decode is logged to count them."""
    data.MIRROR_FILES["cifar100"] = mirror_entry
    real_sha256, real_decode_folder = data.sha256_file, data._decode_folder

    def slow_sha256(path, *args, **kwargs):
        time.sleep(0.5)
        return real_sha256(path, *args, **kwargs)

    def logged_decode_folder(split_dir, *args, **kwargs):
        with open(decode_log, "a") as log:
            log.write(f"{os.getpid()} {Path(split_dir).name}\n")
        return real_decode_folder(split_dir, *args, **kwargs)

    data.sha256_file, data._decode_folder = slow_sha256, logged_decode_folder
    barrier.wait(timeout=60)
    splits = load_splits(cfg)
    torch.save({"train": splits.train.images, "train_labels": splits.train.labels,
                "test": splits.test.images, "test_labels": splits.test.labels,
                "class_names": splits.class_names}, out)


def test_cifar100_mirror_labels_follow_the_sorted_class_folders(tmp_path, monkeypatch, no_network):
    monkeypatch.setitem(data.MIRROR_FILES, "cifar100", make_tiny_cifar100(tmp_path / "mirror"))
    cfg = DataConfig(name="cifar100", root=str(tmp_path / "data"), mirror=str(tmp_path / "mirror"), val_size=2)
    splits = load_splits(cfg)
    assert splits.class_names == ["apple", "maple_tree", "whale"]
    assert len(splits.train) == 4 and len(splits.val) == 2 and splits.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert splits.train.images.shape[1:] == (3, 32, 32) and splits.train.images.dtype == torch.uint8
    for part in (splits.train, splits.val, splits.test):
        colour = part.images[:, 0, 0, 0].long()
        assert torch.equal(colour // 40, part.labels)  # each image carries its class folder's label
    assert (tmp_path / "data" / "cifar100" / ".extracted").exists()
    assert not list((tmp_path / "data").glob(".cifar100.*.tmp"))  # the staging folder was renamed into place
    again = load_splits(cfg)  # from the tensor cache now
    assert again.class_names == splits.class_names and torch.equal(again.test.images, splits.test.images)


def test_missing_dataset_names_absolute_paths(tmp_path, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(name="cifar100", root="rel/data", mirror="rel/mirror")
    with pytest.raises(DatasetNotFound) as err:
        load_splits(cfg)
    message = str(err.value)
    assert str(tmp_path / "rel" / "mirror" / "cifar100-png.tar.gz") in message
    assert str(tmp_path / "rel" / "data" / "torchvision") in message and "download=True" in message
    with pytest.raises(DatasetNotFound, match=re.escape(str(tmp_path / "rel" / "mirror" / "cifar10-jpeg.tar.gz"))):
        load_splits(DataConfig(name="cifar10", root="rel/data", mirror="rel/mirror"))
    with pytest.raises(DatasetNotFound, match=re.escape(str(tmp_path / "rel" / "images" / "train"))):
        load_splits(DataConfig(name="imagefolder", folder="rel/images"))


def test_download_without_network_says_so_in_one_line(tmp_path, monkeypatch):
    def unreachable(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    (tmp_path / "data").mkdir()
    (tmp_path / "mirror").mkdir()
    cfg = DataConfig(name="cifar10", root=str(tmp_path / "data"), mirror=str(tmp_path / "mirror"), download=True)
    with pytest.raises(DatasetNotFound) as err:
        load_splits(cfg)
    message = str(err.value)
    assert "\n" not in message and "download failed" in message and "Network is unreachable" in message
    assert f"cifar10-jpeg.tar.gz at {tmp_path / 'mirror'}" in message and str(tmp_path / "data" / "torchvision") in message


def test_checksum_mismatch_names_the_absolute_archive(tmp_path, monkeypatch, no_network):
    make_tiny_cifar100(tmp_path / "mirror")
    monkeypatch.setitem(data.MIRROR_FILES, "cifar100", ("cifar100-png.tar.gz", "0" * 64))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="checksum mismatch") as err:
        load_splits(DataConfig(name="cifar100", root="data", mirror="mirror", val_size=2))
    assert str(tmp_path / "mirror" / "cifar100-png.tar.gz") in str(err.value)
    assert not (tmp_path / "data" / "cifar100").exists()  # nothing half-extracted is left to be trusted


def test_truncated_tensor_cache_is_named_damaged(tmp_path, no_network):
    cache = tmp_path / "data" / "cache" / "cifar100_native.pt"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DamagedArtifact, match="damaged") as err:
        load_splits(DataConfig(name="cifar100", root=str(tmp_path / "data"), mirror=str(tmp_path / "mirror")))
    assert str(cache.resolve()) in str(err.value)


def test_two_processes_load_the_same_dataset(tmp_path):
    entry = make_tiny_cifar100(tmp_path / "mirror", per_class=4)
    cfg = DataConfig(name="cifar100", root=str(tmp_path / "data"), mirror=str(tmp_path / "mirror"), val_size=3)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [str(tmp_path / f"child{i}.pt") for i in range(2)]
    decode_log = tmp_path / "decodes.log"
    children = [ctx.Process(target=_load_in_child, args=(cfg, entry, barrier, out, str(decode_log))) for out in outs]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    first, second = (torch.load(out, weights_only=True) for out in outs)
    assert first["class_names"] == second["class_names"] == ["apple", "maple_tree", "whale"]
    for key in ("train", "train_labels", "test", "test_labels"):
        assert torch.equal(first[key], second[key])
    assert len(first["test_labels"]) == 12 and len(first["train_labels"]) == 9
    assert not list((tmp_path / "data").glob(".cifar100.*.tmp"))
    decodes = [line.split() for line in decode_log.read_text().splitlines()]
    # Extracted and decoded once, by one process; the other waited and read the finished cache.
    assert sorted(folder for _, folder in decodes) == ["test", "train"] and len({pid for pid, _ in decodes}) == 1
