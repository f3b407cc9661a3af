"""Command line: the pipeline's stages from a shell or a job scheduler.

    python -m tmkd_core student  --profile cpu --dataset cifar10 --method TMKD --seed 1 --set fusion.tau_w=0.3
    python -m tmkd_core teachers --profile cpu --dataset cifar10        # train (or load) them, then report
    python -m tmkd_core report   --profile cpu --dataset cifar10 --split val   # reads teachers, trains nothing
    python -m tmkd_core switches                                         # every switch and its values
    tmkd ...                                                             # the same, as a console script

Under torchrun (`torchrun --nproc_per_node=N -m tmkd_core student ...`) every rank runs
the command; training is data-parallel (tmkd_core/distributed.py) and rank 0 alone writes
files and the JSON line.

`--set key=value` (repeatable) takes the library's dotted keys, validated the same way
(a value is read as JSON when it parses, else as a string: `--set views.views='["rgb","edge"]'`,
`--set student.cache_replicas=null`). The result is one JSON line on stdout; progress bars
and messages go to stderr. Runs use the same caches under `data/` as the notebooks, keyed
the same way, so that a cluster can fill `data/runs/` and the notebooks then only read it.
A bad setting exits with status 2 and the library's message naming it.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import distributed
from .config import METHODS, PROFILES, dataset_config, method_config, switches
from .settings import ConfigError


def parse_set(items: list[str]) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a.b': 1, 'c': 'x'}: JSON where it parses, else the string."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set fusion.tau_w=0.3")
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def _config(args):
    """The configuration the arguments name; the subcommands that need a method get TMKD's
    (the multi-view teacher) unless --method says otherwise."""
    overrides = parse_set(args.set)
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    base = dataset_config(args.profile, args.dataset, overrides)
    return method_config(base, getattr(args, "method", None) or "TMKD", overrides)


def cmd_student(args) -> dict:
    pipe = args.pipe
    record = pipe.run_student(force=args.force)
    return {"command": "student", "method": args.method, "dataset": args.dataset, "profile": args.profile,
            "seed": record["seed"], "val_acc": record["val_acc"], "test_acc": record["test_acc"],
            "train_time_s": record["train_time_s"], "run_key": record["run_key"], "record": str(pipe.run_path),
            "stage_keys": record["stage_keys"]}


def cmd_teachers(args) -> dict:
    pipe = args.pipe
    pipe.train_or_load_teachers()
    return {"command": "teachers", "dataset": args.dataset, "profile": args.profile, **pipe.teacher_report(args.split)}


def cmd_report(args) -> dict:
    return {"command": "report", "dataset": args.dataset, "profile": args.profile,
            **args.pipe.teacher_report(args.split)}


def cmd_switches(args) -> dict:
    return {"command": "switches", "switches": {k: list(v) for k, v in switches().items()},
            "methods": list(METHODS), "profiles": list(PROFILES)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmkd", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, method: bool = False):
        p.add_argument("--profile", default="cpu", choices=list(PROFILES))
        p.add_argument("--dataset", help="default: the profile's first dataset (cifar100 for paper)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a setting by its dotted key (repeatable)")
        if method:
            p.add_argument("--method", required=True, choices=list(METHODS))
            p.add_argument("--seed", type=int, help="the student's seed (same as --set seed=N)")
        return p

    p = common(sub.add_parser("student", help="train (or read back) one student run"), method=True)
    p.add_argument("--force", action="store_true", help="retrain, overwriting the run's record")
    p.set_defaults(func=cmd_student)
    p = common(sub.add_parser("teachers", help="train (or load) the RGB, multi-view and control teachers"))
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.set_defaults(func=cmd_teachers)
    p = common(sub.add_parser("report", help="the teachers' accuracies; trains nothing"))
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.set_defaults(func=cmd_report)
    sub.add_parser("switches", help="every switch, method and profile").set_defaults(func=cmd_switches)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    distributed.init()  # launched by torchrun: join its process group (gloo on CPU, nccl on CUDA)
    if args.command != "switches":
        from .experiment import Pipeline
        from .study import Study

        args.dataset = args.dataset or Study.of(args.profile).datasets[0]
        try:  # every setting is checked here, and what the Pipeline checks, before anything trains
            args.cfg = _config(args)
            args.pipe = Pipeline(args.cfg)
        except (ConfigError, KeyError, ValueError) as exc:
            print(f"tmkd {args.command}: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
    # progress and library messages on stderr: stdout carries the one JSON line
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        result = args.func(args)
    finally:
        sys.stdout = stdout
    if distributed.is_main():  # one JSON line per job, not per rank
        print(json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
