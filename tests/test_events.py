"""Live training curves (tmkd_core.events): TensorBoard reads every scalar of a smoke run's
teachers and student, and writing them changes no number."""
from __future__ import annotations

import shutil

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tmkd_core.config import OptimConfig, method_config, with_overrides
from tmkd_core.data import load_splits
from tmkd_core.experiment import Pipeline
from tmkd_core.models import build_model
from tmkd_core.train import evaluate, fit, supervised_loss
from tmkd_core.utils import load_checkpoint

EVERY_EPOCH = {"lr": "lr", "accuracy/train": "train_acc", "time/epoch_s": "time_s"}


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `folder`, as TensorBoard reads them: tag -> [(step, value)]."""
    events = EventAccumulator(str(folder)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _check(folder, history: list[dict], val: bool, extra: tuple[str, ...] = ()) -> dict:
    """The curves in `folder` hold each epoch of `history` once, for every scalar."""
    scalars = _scalars(folder)
    steps = [h["epoch"] for h in history]
    losses = {f"loss/{k.removeprefix('loss_')}" for k in history[0] if k.startswith("loss_")}
    assert set(scalars) == {*EVERY_EPOCH, "throughput/images_per_s", *losses, *(["accuracy/val"] if val else []),
                            *extra}
    for tag, points in scalars.items():
        assert [step for step, _ in points] == steps, tag
    for tag in losses | set(EVERY_EPOCH):
        field = EVERY_EPOCH.get(tag, "loss_" + tag.removeprefix("loss/"))
        assert [v for _, v in scalars[tag]] == pytest.approx([h[field] for h in history], rel=1e-6), tag
    assert all(v > 0 for _, v in scalars["throughput/images_per_s"])
    assert all(0.0 <= v <= 1.0 for _, v in scalars.get("accuracy/val", []))
    return scalars


def test_a_smoke_runs_teachers_and_student_write_every_scalar_tensorboard_reads(cifar_cfg):
    cfg = method_config(with_overrides(cifar_cfg, {
        "data.train_size": 100, "data.val_size": 50, "data.test_size": 50, "teacher.optim.epochs": 1,
        "teacher.optim.batch_size": 50, "teacher.multiview_optim.batch_size": 50, "student.optim.epochs": 2,
        "student.optim.batch_size": 50}), "TMKD", {"seed": 931, "teacher.seed": 931})
    pipe = Pipeline(cfg)
    for stage in ("rgb_teacher", "multiview_teacher", "student"):  # trained afresh, whatever an earlier test left
        pipe.artefact(stage).unlink(missing_ok=True)
        pipe.partial_checkpoint(stage).unlink(missing_ok=True)
        shutil.rmtree(pipe.events_dir(stage), ignore_errors=True)
    record = pipe.run_student()
    assert pipe.events_dir("student") == pipe.run_path.with_suffix(".tb")  # beside its record, under its key
    student = _check(pipe.events_dir("student"), record["history"], val=True)
    assert {"loss/ce", "loss/kd"} < set(student)  # TMKD's terms too, whatever they are
    assert [v for _, v in student["accuracy/val"]] == pytest.approx([h["val_acc"] for h in record["history"]])
    for stage in ("rgb_teacher", "multiview_teacher"):  # beside its checkpoint; its validation for the curves only
        folder = pipe.events_dir(stage)
        assert folder.parent == pipe.artefact(stage).parent and pipe.key(stage) in folder.name
        history = load_checkpoint(pipe.artefact(stage))["info"]["history"]
        assert "val_acc" not in history[0]
        _check(folder, history, val=True)
    rgb = pipe.train_or_load_rgb_teacher()[0]  # the last epoch's validation point is the finished teacher's
    assert _scalars(pipe.events_dir("rgb_teacher"))["accuracy/val"][-1][1] == pytest.approx(
        evaluate(rgb, pipe.splits.val))


def test_writing_curves_changes_no_number(cifar_cfg, tmp_path):
    splits = load_splits(with_overrides(cifar_cfg, {"data.train_size": 200, "data.val_size": 100}).data)
    optim = OptimConfig(epochs=2, lr=0.05, batch_size=50)
    runs = []
    for events in (None, tmp_path / "curves"):
        torch.manual_seed(0)
        model = build_model("resnet8", 10)
        history = fit(model, supervised_loss(model), splits.train, optim, seed=3, augment_seed=5, progress=False,
                      val=splits.val, eval_fn=lambda m, d: evaluate(m, d), events=events,
                      watch=lambda m: {"val_again": evaluate(m, splits.val)})
        runs.append((model, history))
    (plain, plain_history), (watched, history) = runs
    assert [{k: v for k, v in h.items() if k != "time_s"} for h in history] == \
        [{k: v for k, v in h.items() if k != "time_s"} for h in plain_history]
    for (name, a), b in zip(plain.state_dict().items(), watched.state_dict().values()):
        assert torch.equal(a, b), name
    scalars = _check(tmp_path / "curves", history, val=True, extra=("accuracy/val_again",))
    assert [v for _, v in scalars["accuracy/val_again"]] == pytest.approx([h["val_acc"] for h in history])
