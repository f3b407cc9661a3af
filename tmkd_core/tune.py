"""Validation-only tuning of TMKD and of its KD baseline on an Optuna study, then one test-split evaluation.

    python -m tmkd_core.tune [--profile cpu] [--dataset cifar10] [--trials 16] [--sampler tpe]
                             [--storage sqlite:///data/tuning.db] [--seeds 0 1 2]

Each method has its own study in a SQLite database under data/ (`--storage`, any SQLAlchemy
URL works, e.g. a PostgreSQL server shared by several machines). A trial draws a setting
from `SEARCH_SPACES` (random or TPE sampler, seeded by --search-seed; the profile's own
setting is the first trial) and scores it by the mean validation accuracy over
--trial-seeds (one seed alone moves the score by about a point at this scale). KD gets
the same number of trials as TMKD over its own settings, so that the comparison stays
fair. `--trials N` is the number of completed trials a study should hold: a search killed
at any point and started again continues where it stopped (a trial left running by a
killed process is retried once its heartbeat is stale), and several processes started on
the same storage share the work. Student runs are cached by key under data/runs, so a
retried or repeated setting costs nothing.

Every trial's settings and score are queryable in the study
(`optuna.load_study(study_name=..., storage=...)`) and exported to
figures/tables/tuning_<dataset>.csv; the best setting of each method is then run on the
test split with every seed of --seeds: figures/tables/tuned_<dataset>.{csv,md,tex}.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from .config import ExperimentConfig, config_hash, dataset_config, method_config, unkeyed_paths
from .experiment import Pipeline, get_path
from .report import Outputs, find_root, method_table, run_record
from .settings import leaf_paths

SEARCH_SPACES: dict[str, dict[str, list]] = {
    "KD": {"student.alpha": [0.5, 1.0, 2.0, 4.0], "student.tau": [1.0, 2.0, 4.0, 8.0]},
    "TMKD": {"student.alpha": [0.5, 1.0, 2.0, 4.0], "student.tau": [1.0, 2.0, 4.0, 8.0],
             "student.beta": [0.0, 0.5, 1.0, 2.0], "student.gamma": [0.0, 0.25, 0.5, 1.0],
             "fusion.tau_w": [0.03, 0.1, 0.3, 1.0], "student.vlc": ["class_text", "teacher_text", "both"],
             # teacher side: each distinct combination trains one multi-view teacher
             "views.edge_mode": ["map", "enhance"], "views.hf_mode": ["map", "enhance"],
             "teacher.lambda_a": [0.0, 0.5, 1.0], "teacher.multiview_optim.epochs": [2, 4]},
}
SAMPLERS = ("tpe", "random")
HEARTBEAT_S = 60  # a trial whose process sent no heartbeat for 2x this long is retried


def open_study(method: str, base, space: dict[str, list], storage: str, sampler: str, seed: int,
               trial_seeds: list[int]):
    """The method's study on `storage`, created if new. Its name carries a hash of what its
    scores mean (configuration, search space, trial seeds), so a changed setup opens a new one."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; available: {', '.join(SAMPLERS)}")
    cfg = method_config(base, method)
    unkeyed = unkeyed_paths(cfg)  # where files live, and settings added later at their defaults
    config = {path: get_path(cfg, path) for path, _ in leaf_paths(ExperimentConfig) if path not in unkeyed}
    identity = config_hash({"config": config, "space": space, "trial_seeds": trial_seeds}, length=8)
    name = f"{base.profile}-{base.data.name}-{method}-{identity}"
    with warnings.catch_warnings():  # heartbeats and their retry are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        store = RDBStorage(storage, heartbeat_interval=HEARTBEAT_S,
                           heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3))
    chosen = (optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(study_name=name, storage=store, sampler=chosen, direction="maximize",
                                load_if_exists=True)
    if not study.trials:  # the profile's own setting first, where the space holds it
        default = {k: get_path(cfg, k) for k in space}
        outside = {k: v for k, v in default.items() if v not in space[k]}
        if outside:
            print(f"tune {method}: the profile's setting {outside} is outside the search space; "
                  "it is not tried first", file=sys.stderr)
        else:
            study.enqueue_trial(default)
    return study


def objective(method: str, base, space: dict[str, list], trial_seeds: list[int]):
    def score(trial) -> float:
        setting = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
        results = [Pipeline(method_config(base, method, {**setting, "seed": s})).run_student() for s in trial_seeds]
        for s, r in zip(trial_seeds, results):
            trial.set_user_attr(f"val_acc seed {s}", r["val_acc"])
            trial.set_user_attr(f"run_key seed {s}", r["run_key"])
        value = sum(r["val_acc"] for r in results) / len(results)
        print(f"{method} trial {trial.number}: {setting} val {100 * value:.2f}", flush=True)
        return value

    return score


def search(method: str, base, space: dict[str, list], trials: int, storage: str, sampler: str = "tpe",
           seed: int = 0, trial_seeds: list[int] = (0, 1)):
    """Run the method's study until it holds `trials` completed trials; return the study."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    study = open_study(method, base, space, storage, sampler, seed, list(trial_seeds))
    done = len(study.get_trials(states=(TrialState.COMPLETE,)))
    if done < trials:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study.optimize(objective(method, base, space, list(trial_seeds)), n_trials=trials - done,
                       callbacks=[MaxTrialsCallback(trials, states=(TrialState.COMPLETE,))])
    return study


def trials_table(method: str, study) -> pd.DataFrame:
    df = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "datetime_start",
                                       "duration"))
    df.insert(0, "method", method)
    df = df.rename(columns={"number": "trial", "value": "val_acc"})
    df["val_acc"] = 100 * df["val_acc"]
    return df


def default_storage(base) -> str:
    path = Path(base.data.root) / "tuning.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--methods", nargs="+", default=list(SEARCH_SPACES), choices=list(SEARCH_SPACES))
    parser.add_argument("--trials", type=int, default=16, help="completed trials each study should hold")
    parser.add_argument("--sampler", default="tpe", choices=SAMPLERS)
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: sqlite:///<data.root>/tuning.db)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="test-split seeds (none: skip)")
    parser.add_argument("--trial-seeds", type=int, nargs="+", default=[0, 1], help="seeds per validation trial")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--out-dir", default="figures")
    args = parser.parse_args(argv)
    base = dataset_config(args.profile, args.dataset)
    storage = args.storage or default_storage(base)
    out = Outputs(find_root() / args.out_dir)
    studies = {m: search(m, base, SEARCH_SPACES[m], args.trials, storage, args.sampler, args.search_seed,
                         args.trial_seeds) for m in args.methods}
    trials = pd.concat([trials_table(m, s) for m, s in studies.items()], ignore_index=True)
    trials.to_csv(out.tables / f"tuning_{args.dataset}.csv", index=False)
    best = {m: s.best_trial.params for m, s in studies.items()}
    payload = {"storage": storage, "studies": {m: s.study_name for m, s in studies.items()}, "best": best,
               "trial_seeds": args.trial_seeds, "sampler": args.sampler,
               "search": trials.astype(str).to_dict("records")}
    records = []
    if args.seeds:
        runs = {f"{m} (tuned)": [Pipeline(method_config(base, m, {**best[m], "seed": s})).run_student()
                                 for s in args.seeds] for m in studies}
        runs.update({f"{m} (default)": [Pipeline(method_config(base, m, {"seed": s})).run_student()
                                        for s in args.seeds] for m in studies})
        reference = "KD (tuned)" if "KD" in studies else None
        table = method_table(runs, reference=reference).drop(columns=["mean", "sd"])
        table["chosen on val"] = [str(best[m.split(" (")[0]]) if "tuned" in m else "" for m in runs]
        out.table(table, f"tuned_{args.dataset}", f"Test accuracy (%) of the settings chosen on validation, "
                                                  f"{args.dataset}, seeds {args.seeds}")
        records = [run_record(args.dataset, m, r, "test of the chosen setting" if "tuned" in m else "")
                   for m, rs in runs.items() for r in rs]
        payload["test"] = table.to_dict("records")
        print(table.to_string(index=False))
    out.results_json(f"tuning_{args.dataset}", payload, base, args.seeds, runs=records)


if __name__ == "__main__":
    main()
