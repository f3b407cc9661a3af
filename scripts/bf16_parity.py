"""Parity check of bf16 autocast training against float32 (the gate before `cpu_amp` can
become a default): the cpu profile's CIFAR-10 students, same seeds, validation accuracy.

    .venv/bin/python scripts/bf16_parity.py [--methods CE TMKD] [--seeds 0 1 2]

The float32 runs are the pipeline's own (read from data/runs, trained if missing). The bf16
runs train the same student through the same code with the training precision set to bf16
and are written to figures/results/bf16_parity.json only, never under a float32 run key. On
a CPU without native bf16 they are emulated: the same rounding, many times slower.
"""
import argparse
import statistics

import pandas as pd
import torch

from tmkd_core.config import dataset_config, method_config
from tmkd_core.experiment import Pipeline
from tmkd_core.report import Outputs, find_root
from tmkd_core.utils import cpu_has_native_bf16


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--methods", nargs="*", default=["CE", "TMKD"])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    args = parser.parse_args(argv)
    out = Outputs(find_root() / "figures")
    partial = out.results / "bf16_parity.partial.json"
    rows = pd.read_json(partial).to_dict("records") if partial.exists() else []  # resumable
    done = {(r["method"], r["seed"]) for r in rows}
    base = dataset_config(args.profile, args.dataset, {"progress": False})
    for method in args.methods:
        for seed in args.seeds:
            if (method, seed) in done:
                continue
            pipe = Pipeline(method_config(base, method, {"seed": seed}))
            fp32 = pipe.run_student()
            pipe.train_dtype = torch.bfloat16  # this object only; its records are never written
            bf16 = pipe._train_student(checkpoint=None, on_epoch_end=None)  # no checkpoint, no record
            rows.append({"method": method, "seed": seed, "val_fp32": fp32["val_acc"], "val_bf16": bf16["val_acc"],
                         "train_s_fp32": fp32["train_time_s"], "train_s_bf16": bf16["train_time_s"]})
            print(rows[-1], flush=True)
            pd.DataFrame(rows).to_json(partial)
    df = pd.DataFrame(rows)
    df["diff"] = df["val_bf16"] - df["val_fp32"]
    summary = []
    for method, part in df.groupby("method", sort=False):
        summary.append({"method": method, "seeds": len(part),
                        "val_fp32_mean": 100 * part["val_fp32"].mean(), "val_fp32_sd": 100 * part["val_fp32"].std(),
                        "val_bf16_mean": 100 * part["val_bf16"].mean(), "val_bf16_sd": 100 * part["val_bf16"].std(),
                        "diff_mean": 100 * part["diff"].mean(), "diff_sd": 100 * part["diff"].std()})
    table = pd.DataFrame(summary)
    out.table(table, "bf16_parity", f"Validation accuracy (%), {args.dataset}, {args.profile} profile: float32 vs "
                                    f"bf16 autocast training, same seeds ({', '.join(map(str, args.seeds))})")
    out.results_json("bf16_parity", {"runs": rows, "summary": summary,
                                     "native_bf16": cpu_has_native_bf16()}, base)
    partial.unlink()
    print(table.to_string(index=False))
    print("per-seed sd of fp32 val:", statistics.pstdev(df["val_fp32"]) * 100)


if __name__ == "__main__":
    main()
