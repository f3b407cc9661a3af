"""Step-time benchmark: CE, KD (online), TMKD (online) and TMKD (cached) on one student.

    python -m tmkd_core.bench [--profile cpu] [--dataset cifar10] [--steps 20]

Every variant trains the same student on the same batches in one process; the median
step time (forward, backward, optimiser step, teacher work included) and the peak memory
go to figures/tables/bench.{csv,md,tex} and figures/results/bench.json.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from .config import dataset_config, method_config
from .data import AugmentPlan, to_float
from .distillers import build_distiller
from .experiment import AUGMENT_SEED, Pipeline
from .models import build_model
from .report import Outputs, find_root
from .train import Batch, make_optimizer

VARIANTS = {  # label: (method, teacher_outputs)
    "CE": ("CE", "online"),
    "KD (online)": ("KD", "online"),
    "TMKD (online)": ("TMKD", "online"),
    "TMKD (cached)": ("TMKD", "cached"),
}


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: peak allocated during the variant. CPU: the process's peak resident set so far,
    which only grows across variants (they run in one process), so read differences."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_variant(pipe: Pipeline, steps: int, warmup: int = 3) -> dict:
    cfg, splits, device = pipe.cfg, pipe.splits, pipe.device
    teacher = pipe.frozen_teacher()
    cache = pipe.train_or_load_teacher_cache(teacher)
    torch.manual_seed(cfg.seed)
    distiller = build_distiller(build_model(cfg.student.arch, splits.num_classes, splits.in_channels),
                                teacher, cfg.student, cache).to(device)
    memory_format = torch.channels_last if pipe.channels_last else torch.contiguous_format
    distiller.to(memory_format=memory_format).train()
    opt, _ = make_optimizer(distiller.trainable_parameters(), cfg.student.optim, 100)
    plan = AugmentPlan.draw(len(splits.train), AUGMENT_SEED, 0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    batches = splits.train.batches(cfg.student.optim.batch_size, drop_last=True)
    for step, (idx, images, labels) in zip(range(warmup + steps), batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        x = plan.apply(to_float(images, device), idx).contiguous(memory_format=memory_format)
        _, losses = distiller.forward_train(Batch(x, labels.to(device), idx, 0.0, 0))
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    return {"step_ms": 1000 * statistics.median(times), "step_ms_iqr": 1000 * (statistics.quantiles(times, n=4)[2]
                                                                             - statistics.quantiles(times, n=4)[0]),
            "peak_memory_mb": peak_memory_mb(device), "steps": len(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out-dir", default="figures")
    args = parser.parse_args(argv)
    import pandas as pd

    base = dataset_config(args.profile, args.dataset, {"progress": False})
    rows = []
    for label, (method, outputs) in VARIANTS.items():
        r = time_variant(Pipeline(method_config(base, method, {"student.teacher_outputs": outputs})), args.steps)
        rows.append({"variant": label, **r})
        print(f"{label:15s} {r['step_ms']:8.1f} ms/step  peak {r['peak_memory_mb']:.0f} MB", flush=True)
    df = pd.DataFrame(rows)
    ce = df.set_index("variant")["step_ms"]
    df["x CE"] = df["step_ms"] / ce["CE"]
    df["x KD (online)"] = df["step_ms"] / ce["KD (online)"]
    out = Outputs(find_root() / args.out_dir)
    pipe = Pipeline(base)
    device = pipe.device
    memory = "peak CUDA memory" if device.type == "cuda" else "process peak RSS so far (grows across rows)"
    precision = pipe.precision()["frozen_teacher"]
    out.table(df, "bench", f"Median step time (ms), batch {base.student.optim.batch_size}, {base.student.arch} student, "
                           f"{base.teacher.arch} teacher (forward in {precision}), {args.dataset}, {device.type}; "
                           f"memory: {memory}")
    out.results_json("bench", {"rows": rows, "dataset": args.dataset, "teacher_precision": precision}, base)
    print(df.to_string(index=False))


if __name__ == "__main__":
    main()
