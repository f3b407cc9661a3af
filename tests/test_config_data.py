"""Configuration switches and the data layer's splits and errors."""
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tmkd_core.config import (METHODS, ConfigError, DataConfig, config_hash, make_config, method_config, switches,
                              with_overrides)
from tmkd_core.data import DatasetNotFound, FolderImageSet, first_of_each_class, load_splits, stratified_order


def test_every_switch_validates_and_lists_its_values():
    from tmkd_core.distillers import DISTILLERS
    from tmkd_core.fusion import WEIGHTINGS
    from tmkd_core.priors import EDGE_OPERATORS, VIEWS

    cfg = make_config("smoke")
    found = switches()
    # read from the registries, not repeated by hand
    assert found["views.edge_operator"] == tuple(EDGE_OPERATORS.names())
    assert found["fusion.weights"] == tuple(WEIGHTINGS.names()) and found["views.views"] == tuple(VIEWS.names())
    assert found["student.distiller"] == tuple(DISTILLERS.names())
    assert {"views.hf_mode", "teacher.view_bn", "text.prompts", "fusion.condition", "student.vlc",
            "student.teacher_outputs", "text.backend", "data.name", "teacher_precision"} <= set(found)
    for path, values in found.items():
        if path == "views.views":
            continue
        section, _, name = path.rpartition(".")
        for value in values:
            try:
                changed = with_overrides(cfg, {path: value})
            except ConfigError as exc:  # a value another setting rules out, said at build time
                assert "needs" in str(exc), exc
                continue
            node = changed
            for part in path.split("."):
                node = getattr(node, part)
            assert node == value
        with pytest.raises(ValueError, match=f"{path}: invalid value 'bogus'; valid values: " + ", ".join(values)):
            with_overrides(cfg, {path: "bogus"})


@pytest.mark.parametrize("override, message", [
    ({"student.optim.epochs": "2"}, r"student.optim.epochs: expected int, got '2'"),
    ({"student.optim.epochs": 0}, r"student.optim.epochs: must be >= 1"),
    ({"teacher.optim.batch_size": -4}, r"teacher.optim.batch_size: must be >= 1"),
    ({"views.hf_radius": 2.0}, r"views.hf_radius: must be < 1.41"),
    ({"views.hf_sigma": 0}, r"views.hf_sigma: must be > 0"),
    ({"data.val_size": -1}, r"data.val_size: must be >= 1"),
    ({"fusion.tau_w": float("nan")}, r"fusion.tau_w: must be finite"),
    ({"student.alpha": True}, r"student.alpha: expected float, got True"),
    ({"student.distiller": "fitnet"}, r"valid values: ce, dkd, kd, tmkd"),
    ({"student.teacher": "single", "student.vlc": "teacher_text"}, r"needs the fused teacher's text embedding"),
    ({"views.edge_mode": "sharpen"}, r"valid values: map, enhance, detail"),
    ({"fusion.score": "raw"}, r"valid values: cosine, class_prob"),
    ({"data": 3}, r"data is a section"),
    ({"teacher.optim": "sgd"}, r"teacher.optim is a section"),
    ({"views.views": ["rgb", "fourier"]}, r"views.views: invalid value 'fourier'; valid values: edge, hf, rgb"),
    ({"text.sha256": "abc"}, r"expected 64 hex digits"),
    ({"fusion.weights": "clip_image"}, r"needs CLIP's image tower"),
    ({"device": "gpu0"}, r"device"),
])
def test_bad_settings_fail_when_the_configuration_is_built(override, message):
    with pytest.raises(ConfigError, match=message):
        make_config("smoke", override)


def test_numbers_are_normalised_so_equal_settings_hash_equal():
    a, b = make_config("smoke", {"fusion.tau_w": 1}), make_config("smoke", {"fusion.tau_w": 1.0})
    assert a == b and isinstance(a.fusion.tau_w, float) and config_hash(a) == config_hash(b)
    assert make_config("smoke", {"views.views": ["rgb", "hf"]}).views.views == ("rgb", "hf")


def test_unknown_settings_and_profiles_say_what_is_valid():
    cfg = make_config("cpu")
    with pytest.raises(KeyError, match="tau_w"):
        with_overrides(cfg, {"fusion.tau": 1.0})
    with pytest.raises(KeyError, match="smoke, quick, cpu, paper"):
        make_config("laptop")
    with pytest.raises(KeyError, match="TMKD"):
        method_config(cfg, "FitNet")
    with pytest.raises(ValueError, match="start with 'rgb'"):
        with_overrides(cfg, {"views.views": ["edge", "hf"]})


def test_profiles_and_methods():
    smoke, quick, cpu, paper = (make_config(p) for p in ("smoke", "quick", "cpu", "paper"))
    assert smoke.data.train_size < quick.data.train_size and cpu.data.train_size is None  # cpu: the full set
    assert paper.data.name == "cifar100" and paper.text.backend == "open_clip"
    assert paper.teacher.arch == "resnet32x4" and paper.student.arch == "resnet8x4"
    tmkd = method_config(cpu, "TMKD + DKD")
    assert tmkd.student.distiller == "tmkd" and tmkd.student.kd_term == "dkd"
    assert method_config(cpu, "KD (multi-view, uniform)").fusion.weights == "uniform"
    assert len({config_hash(method_config(cpu, m)) for m in METHODS}) == len(METHODS)


def test_validation_split_is_fixed_disjoint_and_balanced(cifar_cfg):
    a = load_splits(cifar_cfg.data)
    b = load_splits(cifar_cfg.data)
    assert torch.equal(a.val.images, b.val.images)
    assert len(a.val) == 500 and len(a.train) == 1000 and len(a.test) == 1000
    assert a.val.labels.bincount().tolist() == [50] * 10
    train_keys = {img.numpy().tobytes() for img in a.train.images}
    assert not any(img.numpy().tobytes() in train_keys for img in a.val.images)
    other = load_splits(DataConfig(**{**cifar_cfg.data.__dict__, "split_seed": 1}))
    assert not torch.equal(other.val.images, a.val.images)


def test_stratified_order_interleaves_classes():
    labels = torch.arange(4).repeat_interleave(25)
    order = stratified_order(labels, seed=0)
    assert sorted(order.tolist()) == list(range(100))
    assert labels[order[:8]].bincount(minlength=4).tolist() == [2, 2, 2, 2]


def test_first_of_each_class():
    labels = torch.tensor([2, 0, 2, 1, 0, 3])
    assert first_of_each_class(labels, 3).tolist() == [1, 3, 0]  # classes 0, 1, 2; class 3 not asked for
    assert first_of_each_class(labels, 4).tolist() == [1, 3, 0, 5]
    with pytest.raises(ValueError, match=r"classes \[4, 5\] have no sample among 6 labels"):
        first_of_each_class(labels, 6)


def test_corrupt_archive_is_refused(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with tarfile.open(mirror / "cifar10-jpeg.tar.gz", "w:gz"):
        pass
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path / "data"), mirror=str(mirror)))


def test_missing_dataset_names_the_paths_tried(tmp_path, no_network):
    cfg = DataConfig(name="imagenette64", root=str(tmp_path / "data"), mirror=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFound, match=r"nowhere/imagenette-64-jpeg.tar.gz.*download=True"):
        load_splits(cfg)
    with pytest.raises(DatasetNotFound, match=r"cifar10-jpeg.tar.gz"):
        load_splits(DataConfig(name="cifar10", root=str(tmp_path / "data"), mirror=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="data.name: invalid value 'mnist'; valid values: .*fashion_mnist"):
        make_config("smoke", {"data.name": "mnist"})  # at build time, before any data is read


def test_corrupt_image_names_its_file(tmp_path):
    good, bad = tmp_path / "good.png", tmp_path / "bad.jpg"
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad.write_bytes(b"not a jpeg")
    images = FolderImageSet([str(good), str(bad)], [0, 1], ["a", "b"], size=8)
    assert images[0].shape == (3, 8, 8)
    with pytest.raises(ValueError, match="bad.jpg"):
        images.load(torch.tensor([0, 1]))


def test_fashion_mnist_from_the_debian_package():
    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST not installed: `make setup` installs the Debian package dataset-fashion-mnist")
    splits = load_splits(DataConfig(name="fashion_mnist", val_size=1000, train_size=2000))
    assert splits.train.images.shape == (2000, 1, 28, 28) and splits.train.images.dtype == torch.uint8
    assert len(splits.test) == 10000 and splits.class_names[-1] == "ankle boot"
    assert splits.test.labels.bincount().tolist() == [1000] * 10


def test_imagenette_mirror_at_64px(cifar_cfg):
    splits = load_splits(DataConfig(name="imagenette64", root=cifar_cfg.data.root, mirror=cifar_cfg.data.mirror,
                                    val_size=500))
    assert splits.train.images.shape[1:] == (3, 64, 64)
    assert len(splits.train) + len(splits.val) == 9469 and len(splits.test) == 3925
    assert splits.class_names[0] == "tench"


def test_imagefolder_dataset_trains_through_the_same_loop(tmp_path):
    from PIL import Image

    from tmkd_core.config import OptimConfig
    from tmkd_core.models import build_model
    from tmkd_core.train import evaluate, fit, supervised_loss

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for cls in ("ant", "bee"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    splits = load_splits(DataConfig(name="imagefolder", folder=str(tmp_path), image_size=16, val_size=4))
    assert splits.class_names == ["ant", "bee"] and len(splits.train) == 20 and len(splits.test) == 8
    assert splits.train.load(torch.tensor([0, 5])).shape == (2, 3, 16, 16)
    model = build_model("resnet8", 2)
    history = fit(model, supervised_loss(model), splits.train, OptimConfig(epochs=1, batch_size=5), seed=0,
                  augment_seed=0, progress=False)
    assert len(history) == 1 and 0 <= evaluate(model, splits.test) <= 1
    with pytest.raises(DatasetNotFound, match="train/<class>"):
        load_splits(DataConfig(name="imagefolder", folder=str(tmp_path / "nothing")))


def test_teacher_precision_resolves_per_device(monkeypatch):
    from tmkd_core import utils

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert utils.teacher_dtype("fp32", cuda) is None and utils.teacher_dtype("bf16", cpu) is torch.bfloat16
    assert utils.teacher_dtype("auto", cuda) is torch.bfloat16
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: native)
        assert utils.teacher_dtype("auto", cpu) is expected
    with pytest.raises(ValueError, match="valid values: auto, fp32, bf16"):
        make_config("smoke", {"teacher_precision": "fp16"})


def test_a_dict_for_a_section_sets_those_fields_and_keeps_the_profiles_others():
    cfg = make_config("smoke", {"student.optim": {"epochs": 3}, "data": {"train_size": 300}})
    assert cfg.student.optim.epochs == 3 and cfg.student.optim.batch_size == 100  # the profile's batch size
    assert cfg.data.train_size == 300 and cfg.data.val_size == 500
    with pytest.raises(ConfigError, match="views.views must start with 'rgb'"):
        make_config("smoke", {"views.views": ["edge", "rgb"]})
