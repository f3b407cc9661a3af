"""Training-engine benchmark: this project's training steps side by side with the loop a
researcher would otherwise write, and against the CPU's own matrix-multiply peak.

    python -m tmkd_core.bench [--profile cpu] [--dataset cifar10] [--steps 10] [--rounds 3]

One process, one batch size, the same training images for every row:

- `reference loop (<arch>)`: what a user of mdistiller or RepDistiller runs, a
  torch.utils.data.DataLoader (2 workers) over uint8 images with torchvision's
  RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize; float32, SGD
  with momentum, cross-entropy; for the student's and for the teacher's architecture.
- `CE`, `KD (online)`, `TMKD (online)`, `TMKD (cached)`: the student's step as `fit`
  takes it (`train.prepare_batch` + `train.train_step`, data loading included);
  `teacher (train)`: the profile's teacher architecture trained on RGB with CE.
- levers, measured rather than assumed: the online teachers compiled
  (`teacher_compile`), the CE step under torch.compile, and CE under bf16 autocast.

Rows are timed in interleaved rounds (every row once per round), so that a noisy
neighbour on the machine slows every row alike; `step_ms` is the median step. FLOPs per
step are counted by torch.utils.flop_counter (convolutions and matrix products, forward
and backward, teacher included) and compared with the peak matmul GFLOP/s of the row's
precision, measured in the same run. Output: figures/tables/bench.{csv,md,tex} (the rows),
bench_goals (the engine's targets as ratios), bench_ops (where the CE and TMKD (online)
steps spend their time, by operator category), figures/results/bench.json (all of it, with
the CPU model and thread count) and figures/bench_scaling.png (step time against batch
size and image size for CE and TMKD (cached)).
"""
from __future__ import annotations

import argparse
import itertools
import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .config import dataset_config, method_config
from .data import AugmentPlan, ImageSet, hash_seed, to_float
from .experiment import AUGMENT_SEED, Pipeline
from .models import build_model
from .report import Outputs, find_root
from .train import Batch, make_optimizer, prepare_batch, supervised_loss, train_step
from .utils import cpu_has_native_bf16

VARIANTS = {  # label: (method, teacher_outputs); `teacher (train)` is built apart
    "CE": ("CE", "online"),
    "KD (online)": ("KD", "online"),
    "TMKD (online)": ("TMKD", "online"),
    "TMKD (cached)": ("TMKD", "cached"),
}
TEACHER = "teacher (train)"
LEVERS = ("compiled teacher", "torch.compile", "bf16")
COLUMNS = ["variant", "precision", "step_ms", "img_per_s", "x_reference", "gflops_per_s", "fraction_of_peak",
           "compile_s"]


# --- the machine's peak ----------------------------------------------------------------------

def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, budget_s: float = 1.0) -> dict:
    """Peak GFLOP/s of a square matmul on `device` (all threads): the size grows until one
    product takes 0.1 s (at most 8192), then the best of repeated products within `budget_s`."""

    def timed(a, b) -> float:
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        return time.perf_counter() - t0

    n = 256
    while True:
        a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
        timed(a, b)
        one = timed(a, b)
        if one > 0.1 or n >= 8192:
            break
        n *= 2
    best, spent = one, 0.0
    while spent < budget_s:
        dt = timed(a, b)
        best, spent = min(best, dt), spent + dt
    return {"gflops_per_s": 2 * n**3 / best / 1e9, "n": n}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- the rows ----------------------------------------------------------------------------------

@dataclass
class Row:
    """One training step to time. `start()` gives the step of a round (the reference loop
    starts its workers afresh each round), which runs it once, data loading included;
    `flops` is one step's count; `reference` names the row its img/s is compared with."""

    label: str
    start: Callable[[], Callable[[], None]]
    precision: str
    reference: str
    flops: float = math.nan
    compile_s: float = math.nan
    times: list[float] = field(default_factory=list)


def shuffled_batches(train: ImageSet, batch_size: int, seed: int = 0) -> Iterator:
    """Endless (idx, uint8 images, labels) batches, a new seeded order each pass."""
    for epoch in itertools.count():
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(hash_seed(seed, epoch)))
        yield from train.batches(batch_size, order, drop_last=True)


def engine_row(label: str, module, loss_fn, params, pipe: Pipeline, batch_size: int, reference: str, *,
               dtype: torch.dtype | None = None, resize: int | None = None) -> Row:
    """A step of this project's engine: `prepare_batch` then `train_step`, as `fit` runs them
    (images upsampled by nearest neighbour to `resize` px for the scaling figure)."""
    device = pipe.device
    memory_format = torch.channels_last if pipe.channels_last else torch.contiguous_format
    module.to(device=device, memory_format=memory_format).train()
    opt, _ = make_optimizer(params, pipe.cfg.student.optim, 100)
    plan = AugmentPlan.draw(len(pipe.splits.train), AUGMENT_SEED, 0)
    stream = shuffled_batches(pipe.splits.train, batch_size)

    def step():
        idx, images, labels = next(stream)
        if resize is not None and resize != images.shape[-1]:
            images = F.interpolate(images, size=(resize, resize), mode="nearest")
        x = prepare_batch(images, idx, plan, device, memory_format)
        train_step(loss_fn, opt, Batch(x, labels.to(device), idx, 0.0, 0), dtype)
        sync(device)

    return Row(label, lambda: step, "bf16" if dtype is not None else "float32", reference)


def distiller_row(label: str, pipe: Pipeline, batch_size: int, **kwargs) -> Row:
    teacher = pipe.frozen_teacher()
    distiller = pipe.student_distiller(teacher, pipe.train_or_load_teacher_cache(teacher))
    return engine_row(label, distiller, distiller.forward_train, distiller.trainable_parameters(), pipe, batch_size,
                      **kwargs)


def teacher_row(label: str, pipe: Pipeline, batch_size: int, reference: str) -> Row:
    splits = pipe.splits
    model = build_model(pipe.cfg.teacher.arch, splits.num_classes, splits.in_channels)
    return engine_row(label, model, supervised_loss(model), list(model.parameters()), pipe, batch_size, reference)


class _TorchvisionImages(torch.utils.data.Dataset):
    """uint8 HWC arrays through a torchvision transform, one PIL image at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_row(arch: str, pipe: Pipeline, batch_size: int, workers: int = 2) -> Row:
    """The loop of mdistiller / RepDistiller: DataLoader + torchvision transforms, float32,
    contiguous tensors, SGD with momentum, CE. Timed from batch to batch, so that waiting
    for the workers counts."""
    import torchvision.transforms as T

    splits = pipe.splits
    images = splits.train.load(torch.arange(len(splits.train))).permute(0, 2, 3, 1).numpy()
    images = images[..., 0] if images.shape[-1] == 1 else images  # PIL wants (H, W) for grey
    c, size = splits.in_channels, images.shape[1]
    mean, std = (0.5071, 0.4865, 0.4409)[:c], (0.2673, 0.2564, 0.2762)[:c]
    transform = T.Compose([T.RandomCrop(size, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(mean, std)])
    dataset = _TorchvisionImages(images, splits.train.labels.numpy(), transform)
    torch.manual_seed(0)
    model = build_model(arch, splits.num_classes, c).to(pipe.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)

    def start():
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                             drop_last=True)
        stream = itertools.chain.from_iterable(itertools.repeat(loader))  # a new pass when one ends

        def step():
            x, y = next(stream)
            loss = F.cross_entropy(model(x.to(pipe.device))[0], y.to(pipe.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sync(pipe.device)

        return step

    label = f"reference loop ({arch})"
    return Row(label, start, "float32", label)


# --- timing -------------------------------------------------------------------------------------

def count_flops(row: Row) -> float:
    step = row.start()
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def time_round(row: Row, steps: int, warmup: int = 2) -> None:
    """`warmup` untimed steps, then `steps` timed ones, appended to row.times. The reference
    starts its loader afresh each round and is timed between consecutive batches."""
    step = row.start()
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
        now = time.perf_counter()
        row.times.append(now - t0)
        t0 = now


def compile_step(row: Row) -> Row:
    """Compile what the row's step calls at its first step; the seconds it took (the first step
    less a later one) are kept as compile_s."""
    step = row.start()
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()
    row.compile_s = max(0.0, first - (time.perf_counter() - t0))
    return row


# Where a step's time goes: profiler op names -> a category (exact names; `_foreach_*` by
# prefix; the rest is "other").
OP_CATEGORIES = (
    ("convolution backward", {"aten::convolution_backward"}),
    ("convolution forward", {"aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
                             "aten::conv2d", "aten::cudnn_convolution"}),
    ("batch norm", {"aten::native_batch_norm", "aten::native_batch_norm_backward", "aten::batch_norm",
                    "aten::_batch_norm_impl_index", "aten::_native_batch_norm_legit"}),
    ("relu", {"aten::relu", "aten::relu_", "aten::threshold_backward", "aten::clamp_min", "aten::clamp_min_"}),
    ("residual add / elementwise", {"aten::add", "aten::add_", "aten::mul", "aten::mul_", "aten::addcmul",
                                    "aten::div", "aten::div_", "aten::sub"}),
    ("matmul (fc, heads)", {"aten::addmm", "aten::mm", "aten::bmm", "aten::linear"}),
    ("optimizer", {"aten::_foreach_"}),
    ("data (load, crop, flip, to float)", {"aten::index", "aten::constant_pad_nd", "aten::pad", "aten::copy_",
                                           "aten::_to_copy"}),
)


def op_category(name: str) -> str:
    return next((c for c, names in OP_CATEGORIES
                 if name in names or ("aten::_foreach_" in names and name.startswith("aten::_foreach_"))), "other")


def op_breakdown(row: Row, steps: int = 3) -> list[dict]:
    """Self CPU time per category of operator over `steps` steps of a row (torch.profiler,
    CPU activity only): what bounds the step on a CPU. Shares sum to 1 over the profiled
    operators."""
    from torch.profiler import ProfilerActivity, profile

    step = row.start()
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        category = op_category(event.key)
        totals[category] = totals.get(category, 0.0) + event.self_cpu_time_total
    whole = sum(totals.values())
    order = [c for c, _ in OP_CATEGORIES] + ["other"]
    return [{"variant": row.label, "category": c, "ms_per_step": totals[c] / steps / 1000, "share": totals[c] / whole}
            for c in order if c in totals]


# How far a compiled teacher may stray from the eager one, relative to the outputs' scale, by
# the precision both run in (`Pipeline.teacher_dtype`): float32 rounding, or bf16's 8-bit
# significand (2^-8 relative per rounding; fused and reordered kernels round differently,
# so a few of those).
COMPILE_TOLERANCE = {None: 1e-4, torch.bfloat16: 2 ** -6}


def check_compiled_teacher(eager: Pipeline, compiled: Pipeline, n: int = 16) -> None:
    """The compiled teacher must give the eager teacher's outputs before its speed is worth a
    row: |got − want| <= tol · max(1, max |want|), tol the COMPILE_TOLERANCE of the precision
    the frozen teacher runs in (1e-4 in float32, 2^-6 in bf16). `make bench` stops otherwise."""
    splits = eager.splits
    x, labels = to_float(splits.train.load(torch.arange(n)), eager.device), splits.train.labels[:n].to(eager.device)
    want, got = eager.frozen_teacher()(x, labels), compiled.frozen_teacher()(x, labels)
    tol = COMPILE_TOLERANCE[eager.teacher_dtype]
    for name in ("logits", "weights"):
        if name not in want:
            continue
        bound = tol * max(1.0, want[name].abs().max().item())
        error = (got[name] - want[name]).abs().max().item()
        if error > bound:
            precision = str(eager.teacher_dtype or torch.float32).removeprefix("torch.")
            raise RuntimeError(f"teacher_compile=True changes the teacher's {name} by {error:.2e} (> {bound:.2e}, "
                               f"the {precision} tolerance): do not use it here")


def build_rows(base, batch_size: int, levers: tuple[str, ...]) -> list[Row]:
    pipes = {label: Pipeline(method_config(base, method, {"student.teacher_outputs": outputs}))
             for label, (method, outputs) in VARIANTS.items()}
    ce = pipes["CE"]
    student_ref, teacher_ref = (f"reference loop ({a})" for a in (base.student.arch, base.teacher.arch))
    rows = [reference_row(arch, ce, batch_size) for arch in dict.fromkeys((base.student.arch, base.teacher.arch))]
    rows += [distiller_row(label, pipe, batch_size, reference=student_ref) for label, pipe in pipes.items()]
    rows.append(teacher_row(TEACHER, ce, batch_size, teacher_ref))
    for row in rows:  # FLOPs counted on the eager steps, before any compiled row shares them
        row.flops = count_flops(row)
    flops = {row.label: row.flops for row in rows}
    if "compiled teacher" in levers:
        for label in ("KD (online)", "TMKD (online)"):
            pipe = pipes[label].with_overrides({"teacher_compile": True})
            check_compiled_teacher(pipes[label], pipe)
            row = compile_step(distiller_row(f"{label}, compiled teacher", pipe, batch_size, reference=student_ref))
            row.flops = flops[label]
            rows.append(row)
    if "torch.compile" in levers:
        distiller = ce.student_distiller()
        row = compile_step(engine_row("CE, torch.compile", distiller, torch.compile(distiller.forward_train),
                                      distiller.trainable_parameters(), ce, batch_size, student_ref))
        row.flops = flops["CE"]
        rows.append(row)
    if "bf16" in levers:
        distiller = ce.student_distiller()
        row = engine_row("CE, bf16 autocast", distiller, distiller.forward_train, distiller.trainable_parameters(),
                         ce, batch_size, student_ref, dtype=torch.bfloat16)
        row.flops = flops["CE"]
        rows.append(row)
    return rows


def scaling(base, batch_sizes: list[int], sizes: list[int], steps: int) -> list[dict]:
    """Step time of CE and TMKD (cached) against batch size and image size (nearest-upsampled
    training images; the cached teacher outputs do not depend on the student's input size)."""
    points = []
    for label in ("CE", "TMKD (cached)"):
        method, outputs = VARIANTS[label]
        pipe = Pipeline(method_config(base, method, {"student.teacher_outputs": outputs}))
        for size, batch_size in itertools.product(sizes, batch_sizes):
            row = distiller_row(label, pipe, batch_size, reference="", resize=size)
            time_round(row, steps, warmup=1)
            step_s = statistics.median(row.times)
            points.append({"variant": label, "image_px": size, "batch_size": batch_size, "step_ms": 1000 * step_s,
                           "img_per_s": batch_size / step_s})
            print(f"scaling {label:14s} {size:3d} px batch {batch_size:4d}: {1000 * step_s:8.1f} ms/step", flush=True)
    return points


def scaling_figure(points: list[dict]):
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(points)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    for (label, size), part in df.groupby(["variant", "image_px"]):
        style = dict(marker="o", linestyle="-" if label == "CE" else "--", label=f"{label}, {size} px")
        axes[0].plot(part["batch_size"], part["step_ms"], **style)
        axes[1].plot(part["batch_size"], part["img_per_s"], **style)
    for ax, ylabel in zip(axes, ("step time (ms)", "images / s")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(df["batch_size"].unique()), [str(b) for b in sorted(df["batch_size"].unique())])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    fig.suptitle("Training-step cost against batch size and image size (resnet student)")
    return fig


def goals(table) -> list[dict]:
    """The engine's targets as ratios of rows of one run: (goal, ratio, at least / at most)."""
    by = table.set_index("variant")
    step = by["step_ms"]
    rows = [("CE img/s over the reference loop", by.loc["CE", "x_reference"], ">=", 3.0),
            (f"{TEACHER} img/s over its reference loop", by.loc[TEACHER, "x_reference"], ">=", 3.0),
            ("TMKD (online) step over KD (online) step", step["TMKD (online)"] / step["KD (online)"], "<=", 1.5),
            ("TMKD (cached) step over CE step", step["TMKD (cached)"] / step["CE"], "<=", 1.1)]
    return [{"goal": goal, "ratio": ratio, "target": f"{op} {bound}",
             "met": bool(ratio >= bound if op == ">=" else ratio <= bound)} for goal, ratio, op, bound in rows]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # the quick profile: the cpu profile's teacher and student architectures, with teachers
    # that train in minutes (a step's time does not depend on what the weights learned)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (every row once per round)")
    parser.add_argument("--levers", nargs="*", default=list(LEVERS), choices=LEVERS)
    parser.add_argument("--scaling-batches", type=int, nargs="*", default=[64, 128, 256, 512])
    parser.add_argument("--scaling-sizes", type=int, nargs="*", default=[32, 64])
    parser.add_argument("--scaling-steps", type=int, default=3)
    parser.add_argument("--out-dir", default="figures")
    args = parser.parse_args(argv)
    import pandas as pd

    base = dataset_config(args.profile, args.dataset, {"progress": False})
    device = Pipeline(base).device
    peaks = {"float32": matmul_peak_gflops(torch.float32, device), "bf16": matmul_peak_gflops(torch.bfloat16, device)}
    print("matmul peak: " + ", ".join(f"{k} {v['gflops_per_s']:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    rows = build_rows(base, args.batch_size, tuple(args.levers))
    for r in range(args.rounds):
        for row in rows:
            # emulated bf16 (no native bf16 on this CPU) costs many float32 steps: a few suffice
            slow = row.precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16()
            time_round(row, max(1, args.steps // 4) if slow else args.steps)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{row.label} {1000 * statistics.median(row.times):.0f} ms"
                                                          for row in rows), flush=True)
    records = []
    for row in rows:
        step_s = statistics.median(row.times)
        records.append({"variant": row.label, "precision": row.precision, "step_ms": 1000 * step_s,
                        "img_per_s": args.batch_size / step_s, "gflops_per_s": row.flops / step_s / 1e9,
                        "compile_s": row.compile_s, "reference": row.reference, "flops_per_step": row.flops,
                        "steps_timed": len(row.times)})
    table = pd.DataFrame(records)
    img_per_s = table.set_index("variant")["img_per_s"]
    table["x_reference"] = [ips / img_per_s[ref] for ips, ref in zip(table["img_per_s"], table["reference"])]
    table["fraction_of_peak"] = [g / peaks[p]["gflops_per_s"] for g, p in zip(table["gflops_per_s"],
                                                                              table["precision"])]
    out = Outputs(find_root() / args.out_dir)
    pipe = Pipeline(base)
    machine = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "cpu_capability":
               torch.backends.cpu.get_cpu_capability(), "native_bf16": cpu_has_native_bf16(),
               "device": pipe.device.type, "python": platform.python_version()}
    caption = (f"Training step, batch {args.batch_size}, {base.student.arch} student, {base.teacher.arch} teacher, "
               f"{args.dataset} ({base.data.image_size} px), {pipe.device.type}, {machine['threads']} threads; "
               f"median over {args.rounds} interleaved rounds; peak matmul "
               + ", ".join(f"{k} {v['gflops_per_s']:.0f} GFLOP/s" for k, v in peaks.items())
               + ("" if machine["native_bf16"] or device.type != "cpu" else "; this CPU has no native bf16: bf16 "
                  "is emulated and its matmul peak is no roof for its convolutions"))
    out.table(table[COLUMNS], "bench", caption)
    goal_table = pd.DataFrame(goals(table))
    out.table(goal_table, "bench_goals", "The engine's goals as ratios measured in one run of make bench")
    points = scaling(base, args.scaling_batches, args.scaling_sizes, args.scaling_steps) \
        if args.scaling_batches and args.scaling_sizes else []
    if points:
        out.figure(scaling_figure(points), "bench_scaling")
    ops = [entry for row in rows if row.label in ("CE", "TMKD (online)") for entry in op_breakdown(row)]
    out.table(pd.DataFrame(ops), "bench_ops", "Where a training step's time goes: self CPU time by operator "
                                              "category (torch.profiler)")
    out.results_json("bench", {"rows": records, "ops": ops, "peaks": peaks, "machine": machine, "goals": goal_table.to_dict("records"),
                               "scaling": points, "dataset": args.dataset, "batch_size": args.batch_size,
                               "rounds": args.rounds, "steps": args.steps, "precision": pipe.precision()}, base)
    with pd.option_context("display.width", 200):
        print(table[COLUMNS].to_string(index=False))
        print(goal_table.to_string(index=False))


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    main()
