"""The cost model of a plan: floating-point operations per stage (`stage_flop`, from each
architecture's forward pass counted once, `forward_flops`) and this machine's rate
(`measure_worker_rate`), from which `scheduler.Progress` estimates the time left. Thread
counts: each worker runs with the machine's threads // jobs (`worker_threads`): on 2 cores,
two one-thread runs side by side trained 1.48x as many images per second as one two-thread
run for resnet8, 1.15x for resnet14.
"""
from __future__ import annotations

import multiprocessing as mp
import time
from functools import lru_cache

import torch

from .experiment import Pipeline


@lru_cache(maxsize=None)
def forward_flops(arch: str, num_classes: int, in_channels: int, size: int) -> float:
    """Floating-point operations of one image's forward pass (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models import build_model

    model = build_model(arch, num_classes, in_channels).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(2, in_channels, size, size))
    return counter.get_total_flops() / 2


def stage_flop(pipe: Pipeline, stage: str) -> float:
    """Operations a stage computes (training = 3 forward passes: forward and backward)."""
    cfg, splits = pipe.cfg, pipe.splits
    n, size = len(splits.train), splits.train.images.shape[-1]

    def f(arch):
        return forward_flops(arch, splits.num_classes, splits.in_channels, size)

    views = len(cfg.views.views)
    if stage == "rgb_teacher":
        return 0.0 if cfg.teacher.checkpoint else cfg.teacher.optim.epochs * n * 3 * f(cfg.teacher.arch)
    if stage == "multiview_teacher":
        return cfg.teacher.multiview_optim.epochs * n * views * 3 * f(cfg.teacher.arch)
    # the teacher's forward passes per image: one per view, or one per averaged RGB teacher
    teacher_views = views if cfg.student.teacher == "multi" else len(pipe.ensemble_members) or 1
    if stage == "teacher_cache":
        return pipe.replicas * n * teacher_views * f(cfg.teacher.arch)
    online = cfg.student.distiller != "ce" and cfg.student.teacher_outputs == "online"
    per_image = 3 * f(cfg.student.arch) + (teacher_views * f(cfg.teacher.arch) if online else 0.0)
    evals = (len(splits.val) * cfg.student.optim.epochs + len(splits.val) + len(splits.test)) * f(cfg.student.arch)
    return cfg.student.optim.epochs * n * per_image + evals


def stage_epochs(cfg, stage: str) -> int | None:
    """The epochs a training stage runs (its resumable checkpoint holds how many are done);
    None for the teacher-output cache, which counts replicas."""
    return {"rgb_teacher": cfg.teacher.optim.epochs, "multiview_teacher": cfg.teacher.multiview_optim.epochs,
            "student": cfg.student.optim.epochs}.get(stage)


def measure_rate(threads: int, seconds: float = 2.0) -> float:
    """FLOP/s of resnet8 training steps (batch 128) at `threads` threads on this machine."""
    import torch.nn.functional as F

    from .models import build_model

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model("resnet8", 10, 3).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (128,))
        steps, start = 0, None
        while start is None or time.perf_counter() - start < seconds:
            if steps == 2:
                start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x)[0], y).backward()
            opt.step()
            steps += 1
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(before)
    return (steps - 2) * 128 * 3 * forward_flops("resnet8", 10, 3, 32) / elapsed


def worker_threads(jobs: int) -> int:
    """Threads per worker: this process's threads shared out over the workers."""
    return max(1, torch.get_num_threads() // jobs)


def measure_worker_rate(threads: int, jobs: int, seconds: float = 3.0) -> float:
    """FLOP/s of one worker while `jobs` workers run side by side, as the plan runs them:
    the mean of `jobs` concurrent `measure_rate`s (one alone overstates a shared core)."""
    if jobs == 1:
        return measure_rate(threads, seconds)
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        rates = list(pool.map(measure_rate, [threads] * jobs, [seconds] * jobs))
    return sum(rates) / len(rates)
