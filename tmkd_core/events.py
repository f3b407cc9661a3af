"""Live training curves: TensorBoard event files written by `train.fit`, one folder per run.

Every teacher and student run writes its per-epoch scalars next to its artefact, under its
stage key (`Pipeline.events_dir`):

    data/checkpoints/rgb_teacher_<key>.tb/          an RGB teacher
    data/checkpoints/multiview_teacher_<key>.tb/    a multi-view teacher (or its RGB control)
    data/runs/<key>.tb/                             a student run, beside data/runs/<key>.json

    tensorboard --logdir data/            # every run of every plan, live (refreshes itself)

The scalars of epoch e (step e, 1-based): `loss/<term>` for each loss term, `lr` (the
learning rate at the epoch's end), `accuracy/train`, `accuracy/val` (a student's
validation accuracy, as its history records it; a teacher's, computed for the curves
only), `throughput/images_per_s` and `time/epoch_s`. The events are for watching: the run
record and the checkpoint's history stay the record, and writing them changes no number
(the validation pass of a teacher runs in eval mode, under no_grad, after the epoch's
timing, and draws no random number). A resumed run hides what an earlier attempt wrote
from its resumed epoch on (`purge_step`), so each step shows once.
"""
from __future__ import annotations

import warnings
from pathlib import Path

SCALARS = ("lr", "accuracy/train", "throughput/images_per_s", "time/epoch_s")  # every epoch of every run


def epoch_scalars(record: dict, images: int, extra: dict[str, float] | None = None) -> dict[str, float]:
    """The scalars of one epoch's history `record` (`train.fit`), of which `images` trained."""
    out = {f"loss/{k.removeprefix('loss_')}": v for k, v in record.items() if k.startswith("loss_")}
    out.update({"lr": record["lr"], "accuracy/train": record["train_acc"],
                "throughput/images_per_s": images / max(record["time_s"], 1e-9), "time/epoch_s": record["time_s"]})
    if "val_acc" in record:
        out["accuracy/val"] = record["val_acc"]
    out.update({f"accuracy/{k}": v for k, v in (extra or {}).items()})
    return out


class EpochEvents:
    """The TensorBoard writer of one run, from epoch `start` + 1 on (the epochs before it
    were logged by the attempt that checkpointed them). Without TensorBoard installed, a
    warning and nothing else: the curves never stop a run."""

    def __init__(self, folder: str | Path, start: int = 0):
        self.folder, self.writer = Path(folder), None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # pinned in pyproject.toml; a bare notebook environment may lack it
            warnings.warn(f"no training curves in {self.folder}: {exc} (pip install tensorboard)", stacklevel=2)
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # purge_step: events of an earlier attempt at steps >= start + 1 are hidden
        self.writer = SummaryWriter(str(self.folder), purge_step=start + 1, flush_secs=30)

    def epoch(self, record: dict, images: int, extra: dict[str, float] | None = None) -> None:
        if self.writer is None:
            return
        for tag, value in epoch_scalars(record, images, extra).items():
            self.writer.add_scalar(tag, float(value), global_step=record["epoch"])
        self.writer.flush()  # an epoch shows as soon as it ends

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
