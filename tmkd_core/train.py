"""One training loop for teachers and students, with evaluation, checkpoints and resume.

`fit` trains any module whose `loss_fn(batch)` returns (logits, {term: loss}); the loop
sums the dict, so every term is logged per epoch and can be ablated by setting its weight
to zero. Data order and augmentation depend on (seed, epoch) alone, so a run resumed from
its last checkpoint continues exactly where it stopped.

Augmentation comes from replicas: epoch e crops and flips the training set as replica
`augment_replica(e, K)` does. The loop hands that replica to the loss in the `Batch`, so
a teacher-output cache of K replicas is read at exactly the images the student sees.
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import distributed
from .data import AugmentPlan, ImageSet, hash_seed, to_float
from .events import EpochEvents
from .utils import atomic_save, cpu_model, load_checkpoint

if TYPE_CHECKING:
    from .config import OptimConfig


@dataclass
class Batch:
    """One training step's input: images as augmented (B, C, H, W), labels, their indices in
    the training set, the fractional epoch (for warm-ups), and the augmentation replica
    the images were drawn from (None: not augmented)."""

    x: torch.Tensor
    labels: torch.Tensor
    idx: torch.Tensor
    epoch: float
    replica: int | None


LossFn = Callable[[Batch], tuple[torch.Tensor, dict]]


def augment_replica(epoch: int, replicas: int | None) -> int:
    """The augmentation replica of a 0-based epoch: e mod K, or e itself when K is None.
    The one place that decides it, for the student's images and the teacher cache alike."""
    return epoch if replicas is None else epoch % replicas


def make_optimizer(params, cfg: OptimConfig, steps_per_epoch: int):
    """SGD with momentum and a per-step schedule (linear warm-up, cosine or step decay).

    `foreach`: one multi-tensor kernel per update instead of a Python loop over the
    parameters (PyTorch uses it by default on CUDA only); the same arithmetic."""
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * t))
        if cfg.milestones is not None:  # epochs, as the CIFAR-100 protocol gives them (150/180/210 of 240)
            return 0.1 ** sum(step >= m * steps_per_epoch for m in cfg.milestones)
        return 0.1 ** ((t >= 0.5) + (t >= 0.75))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def trainable_state(module: nn.Module) -> dict:
    """State dict without a frozen teacher: checkpoints hold what training changes."""
    return {k: v for k, v in module.state_dict().items() if not k.startswith("teacher.")}


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device`, or nothing for None (float32)."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def prepare_batch(images: torch.Tensor, idx: torch.Tensor, plan: AugmentPlan | None, device: torch.device,
                  memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """uint8 images (B, C, H, W) of training indices idx -> the float [0, 1] batch a step sees.

    Crop and flip run on the whole uint8 batch (a quarter of float32's memory traffic);
    the zero padding maps to 0.0, so this equals augmenting the float batch exactly."""
    images = plan.apply(images, idx) if plan is not None else images
    return to_float(images, device).contiguous(memory_format=memory_format)


def train_step(loss_fn: LossFn, opt: torch.optim.Optimizer, batch: Batch,
               dtype: torch.dtype | None = None) -> tuple[torch.Tensor, dict]:
    """One optimiser step on sum(losses): forward under autocast(`dtype`), backward, update.
    `fit` and the benchmark both take their steps here."""
    with autocast(batch.x.device, dtype):
        logits, losses = loss_fn(batch)
    total = sum(losses.values())
    if not torch.isfinite(total):  # before the update: the weights stay those of the last finite step
        raise FloatingPointError(f"loss is {total.detach().item()} ({ {k: float(v.detach()) for k, v in losses.items()} })")
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return logits, losses


@torch.enable_grad()  # a caller under no_grad (a notebook cell, an analysis helper) still trains
def fit(module: nn.Module, loss_fn: LossFn, train: ImageSet, optim: OptimConfig, *,
        seed: int, augment_seed: int, replicas: int | None = None, device: torch.device | str = "cpu",
        params=None, checkpoint: str | Path | None = None, val: ImageSet | None = None,
        eval_fn: Callable[[nn.Module, ImageSet], float] | None = None, progress: bool = True,
        desc: str = "train", autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
        sync_batchnorm: bool = False, compile: bool = False,
        on_epoch_end: Callable[[int, dict], None] | None = None, events: str | Path | None = None,
        watch: Callable[[nn.Module], dict[str, float]] | None = None) -> list[dict]:
    """Train `module` for optim.epochs; return per-epoch history (loss terms, accuracies, time).

    `augment_seed` and `replicas` fix the crop/flip of sample i at epoch e (replica
    `augment_replica(e, replicas)`); `seed` fixes the data order; `optim` holds the batch
    size and whether to augment. With `checkpoint`, the state is saved atomically after
    every epoch and a run finds and resumes from it. `autocast_dtype` (None: float32) is the
    precision of the forward pass; `compile` runs the loss through torch.compile (compiled
    at the first step, again for another batch shape). With `events`, each epoch's scalars
    go to TensorBoard event files in that folder (`events.EpochEvents`), with the
    accuracies `watch(module)` returns (e.g. a teacher's on validation): for the curves
    only, never in the history.

    Launched by torchrun (`distributed.init()`), every rank calls `fit` alike: the module
    trains under DistributedDataParallel on its shard of each global batch of
    `optim.batch_size`, metrics are summed over ranks and rank 0 alone writes checkpoints.
    """
    device = torch.device(device)
    group = distributed.current()
    batch_size = optim.batch_size
    params = list(params if params is not None else (p for p in module.parameters() if p.requires_grad))
    steps_per_epoch = len(train) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={batch_size} exceeds the {len(train)} training images")
    opt, sched = make_optimizer(params, optim, steps_per_epoch)
    history: list[dict] = []
    start = 0
    if checkpoint is not None and distributed.broadcast(Path(checkpoint).exists()):
        state = load_checkpoint(checkpoint, map_location=device)
        missing, unexpected = module.load_state_dict(state["model"], strict=False)
        if unexpected or any(not k.startswith("teacher.") for k in missing):
            raise ValueError(f"checkpoint {checkpoint} does not match the module: missing {missing}, "
                             f"unexpected {unexpected}; delete it to start afresh")
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["epoch"], state["history"]
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    module.to(device=device, memory_format=memory_format)
    step_loss = torch.compile(loss_fn) if compile else loss_fn
    step_loss = distributed.data_parallel(module, step_loss, device, sync_batchnorm) if group else step_loss
    curves = EpochEvents(events, start) if events is not None and distributed.is_main() else None
    try:
        for epoch in range(start, optim.epochs):
            module.train()
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(hash_seed(seed, epoch)))
            order, rank_batch = distributed.shard_order(order, batch_size, group)
            replica = augment_replica(epoch, replicas) if optim.augment else None
            plan = AugmentPlan.draw(len(train), augment_seed, replica) if replica is not None else None
            sums: dict[str, float] = {}
            correct = seen = 0
            t0 = time.perf_counter()
            bar = tqdm(train.batches(rank_batch, order, drop_last=True), total=steps_per_epoch,
                       desc=f"{desc} {epoch + 1}/{optim.epochs}", disable=not progress or not distributed.is_main(),
                       leave=False)
            for step, (idx, images, labels) in enumerate(bar):
                x = prepare_batch(images, idx, plan, device, memory_format)
                labels = labels.to(device)
                progress_in_epoch = step * batch_size / len(train)  # of the global batches, on every rank
                try:
                    logits, losses = train_step(step_loss, opt, Batch(x, labels, idx, epoch + progress_in_epoch,
                                                                      replica), autocast_dtype)
                except FloatingPointError as exc:
                    raise FloatingPointError(f"{desc}: {exc} at epoch {epoch + 1}; lower this stage's optim.lr "
                                             f"(now {optim.lr})") from None
                sched.step()
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
                correct += int((logits.argmax(-1) == labels).sum())
                seen += len(idx)
            if group is not None:  # metrics of the global batches
                *totals, correct, seen = distributed.all_sum([*sums.values(), correct, seen])
                sums = dict(zip(sums, totals))
            record = {"epoch": epoch + 1, "train_acc": correct / seen, "time_s": time.perf_counter() - t0,
                      "lr": sched.get_last_lr()[0], **{f"loss_{k}": v / seen for k, v in sums.items()},
                      "cpu_model": cpu_model()}  # a run resumed on another machine is mixed: report.run_cpu
            if val is not None and eval_fn is not None:
                record["val_acc"] = eval_fn(module, val)
            history.append(record)
            if curves is not None:  # before the checkpoint: an epoch rerun after a kill shows once (purge_step)
                curves.epoch(record, seen, watch(module) if watch is not None else None)
            if checkpoint is not None:
                if distributed.is_main():
                    atomic_save({"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                                 "model": trainable_state(module), "optimizer": opt.state_dict(),
                                 "scheduler": sched.state_dict(), "history": history}, checkpoint)
                distributed.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, record)
    finally:
        if curves is not None:
            curves.close()
    module.eval()
    return history


@torch.no_grad()
def predict(forward: Callable[[torch.Tensor], torch.Tensor], data: ImageSet, batch_size: int = 256,
            device: torch.device | str = "cpu") -> torch.Tensor:
    """Concatenated outputs of `forward` on float [0, 1] batches of `data`, in order."""
    outs = [forward(to_float(images, device)).float().cpu() for _, images, _ in data.batches(batch_size)]
    return torch.cat(outs)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy; FloatingPointError if a logit is NaN or infinite (damaged weights or a
    diverged run give no accuracy, rather than a plausible-looking chance level)."""
    bad = int((~torch.isfinite(logits)).any(-1).sum()) if logits.numel() else 0
    if bad:
        raise FloatingPointError(f"{bad} of {logits.shape[0]} samples have NaN or infinite logits: the model's "
                                 "weights are damaged or its training diverged, so no accuracy is computed")
    return float((logits.argmax(-1) == labels).float().mean())


def evaluate(model: nn.Module, data: ImageSet, batch_size: int = 256, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy of a model whose forward returns logits (or (logits, feats))."""
    was_training = model.training
    model.eval()

    def forward(x):
        out = model(x)
        return out[0] if isinstance(out, tuple) else out

    acc = accuracy(predict(forward, data, batch_size, device), data.labels)
    model.train(was_training)
    return acc


def supervised_loss(model: nn.Module) -> LossFn:
    def loss_fn(batch: Batch):
        logits, _ = model(batch.x)
        return logits, {"ce": F.cross_entropy(logits, batch.labels)}

    return loss_fn
