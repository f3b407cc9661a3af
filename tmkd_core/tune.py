"""Validation-only tuning of TMKD and of its KD baseline, then one test-split evaluation.

    python -m tmkd_core.tune [--profile cpu] [--dataset cifar10] [--trials 16] [--seeds 0 1 2]

Random search (fixed by --search-seed) over `SEARCH_SPACES`, each trial scored by its
mean validation accuracy over --trial-seeds (one seed alone moves the score by about a
point at this scale, as much as the settings do). KD gets the same number of trials over
its own settings, so that the comparison stays fair. TMKD's space includes teacher-side
settings (view modes, lambda_a, multi-view epochs): a trial that changes them trains its
own multi-view teacher, cached by hash. Every configuration tried and its validation
accuracy go to figures/tables/tuning_<dataset>.csv; the best of each method is then run
on the test split with every seed of --seeds: figures/tables/tuned_<dataset>.{csv,md,tex}.
"""
from __future__ import annotations

import argparse
import random

import pandas as pd

from .config import dataset_config, method_config
from .experiment import Pipeline
from .report import Outputs, find_root, method_table, run_record

SEARCH_SPACES: dict[str, dict[str, list]] = {
    "KD": {"student.alpha": [0.5, 1.0, 2.0, 4.0], "student.tau": [1.0, 2.0, 4.0, 8.0]},
    "TMKD": {"student.alpha": [0.5, 1.0, 2.0, 4.0], "student.tau": [1.0, 2.0, 4.0, 8.0],
             "student.beta": [0.0, 0.5, 1.0, 2.0], "student.gamma": [0.0, 0.25, 0.5, 1.0],
             "fusion.tau_w": [0.03, 0.1, 0.3, 1.0], "student.vlc": ["class_text", "teacher_text", "both"],
             # teacher side: each distinct combination trains one multi-view teacher
             "views.edge_mode": ["map", "enhance"], "views.hf_mode": ["map", "enhance"],
             "teacher.lambda_a": [0.0, 0.5, 1.0], "teacher.multiview_optim.epochs": [2, 4]},
}


def sample_trials(space: dict[str, list], trials: int, seed: int) -> list[dict]:
    """`trials` distinct settings drawn from the grid (the default setting first)."""
    rng = random.Random(seed)
    chosen, seen = [{}], {()}
    grid_size = 1
    for values in space.values():
        grid_size *= len(values)
    while len(chosen) < min(trials, grid_size + 1):  # + the default
        setting = {k: rng.choice(v) for k, v in space.items()}
        key = tuple(sorted(setting.items()))
        if key not in seen:
            seen.add(key)
            chosen.append(setting)
    return chosen


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="test-split seeds")
    parser.add_argument("--trial-seeds", type=int, nargs="+", default=[0, 1], help="seeds per validation trial")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--out-dir", default="figures")
    args = parser.parse_args(argv)
    base = dataset_config(args.profile, args.dataset)
    out = Outputs(find_root() / args.out_dir)
    rows, best, records = [], {}, []
    for method, space in SEARCH_SPACES.items():
        for trial, setting in enumerate(sample_trials(space, args.trials, args.search_seed)):
            results = [Pipeline(method_config(base, method, {**setting, "seed": s})).run_student()
                       for s in args.trial_seeds]
            records += [run_record(args.dataset, method, r, f"trial {trial}: {setting}") for r in results]
            val = [r["val_acc"] for r in results]
            score = sum(val) / len(val)
            rows.append({"method": method, "trial": trial, **{k: str(v) for k, v in setting.items()},
                         **{f"val_acc seed {s}": 100 * a for s, a in zip(args.trial_seeds, val)},
                         "val_acc": 100 * score})
            print(f"{method} trial {trial}: {setting} val {100 * score:.2f}", flush=True)
            if method not in best or score > best[method][1]:
                best[method] = (setting, score)
    search = pd.DataFrame(rows)
    search.to_csv(out.tables / f"tuning_{args.dataset}.csv", index=False)
    runs = {f"{m} (tuned)": [Pipeline(method_config(base, m, {**best[m][0], "seed": s})).run_student()
                                  for s in args.seeds]
            for m in SEARCH_SPACES}
    runs.update({f"{m} (default)": [Pipeline(method_config(base, m, {"seed": s})).run_student() for s in args.seeds]
                 for m in SEARCH_SPACES})
    table = method_table(runs, reference="KD (tuned)").drop(columns=["mean", "sd"])
    table["chosen on val"] = [str(best[m.split(" (")[0]][0]) if "tuned" in m else "" for m in runs]
    out.table(table, f"tuned_{args.dataset}", f"Test accuracy (%) of the settings chosen on validation, "
                                              f"{args.dataset}, seeds {args.seeds}")
    records += [run_record(args.dataset, m, r, "test of the chosen setting" if "tuned" in m else "")
                for m, rs in runs.items() for r in rs]
    out.results_json(f"tuning_{args.dataset}", {"search": rows, "trial_seeds": args.trial_seeds,
                                                "best": {m: b[0] for m, b in best.items()},
                                                "test": table.to_dict("records")}, base, args.seeds, runs=records)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
