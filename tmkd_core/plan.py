"""A study's plan: every teacher, teacher-output cache and student run its notebooks read,
run by the scheduler's workers in dependency order, with live progress and an estimate of
the time left for the whole plan.

    python -m tmkd_core.plan --profile cpu --jobs 2        # what `make reproduce` runs first
    python -m tmkd_core.plan --profile cpu --dry-run       # the tasks and their estimated cost
    python -m tmkd_core.plan --study mine.json --dry-run   # a study declared in a file (study.py)

What runs is the study's (`study.Study`: the runs of its pilot, notebook 04, the ablations,
the teacher study and the confirmatory comparisons); the notebooks ask the same object, so
that after the plan has run they find every artefact and train nothing. Here the runs become
tasks (`plan_tasks`: one stage of one configuration each, `Pipeline.BUILT_STAGES`), marked
`primary` when a pre-registered comparison reads them and `later` when only a comparison
pre-registered to run after the rest reads them (1: the secondary confirmatory comparison; 2:
the ensemble follow-up, after it; 3: the factorial follow-up, last); the scheduler (scheduler.py) runs
them, the store (store.py) keeps what finished, the cost model (costs.py) estimates the time.
Whenever the primary comparison's pairs have all finished, docs/protocol.md's widening rule
(`protocol.widen_pairs`) may add pairs, which the plan runs next (`widened_pairs`).

Where a task runs is the executor's (`executors.py`): worker processes of this machine
(`--executor local`, the default), or the workers of a Dask cluster (`--executor dask`: a
LocalCluster here, Slurm or PBS worker jobs with `--cluster slurm|pbs`, or a running
scheduler with `--scheduler`; docs/cluster.md). Each teacher and student run writes its
training curves as TensorBoard event files next to its checkpoint or record (`events.py`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable

from . import executors
from .config import PROFILE_PLANS, ExperimentConfig, method_config
from .costs import measure_worker_rate, stage_flop, worker_threads
from .data import DatasetNotFound
from .experiment import Pipeline
from .protocol import pilot_progress, pilot_summary, write_pilot_report, write_primary_report
from .scheduler import Progress, Task, hms, needed, run_plan
from .store import plan_wall_time, restore_artefacts, stale_partials, stored_copy
from .study import PilotNotSettled, Study, StudyError
from .teacher_report import (DecisionMismatch, check_confirmatory_decisions, check_factorial_decisions,
                             check_follow_up_decisions, check_secondary_decisions)


def _title(stage: str, cfg: ExperimentConfig) -> str:
    t = f"{cfg.data.name} teacher seed {cfg.teacher.seed}"
    if stage == "rgb_teacher":
        return f"RGB teacher ({t})"
    if stage == "multiview_teacher":
        kind = "RGB fine-tuned control" if list(cfg.views.views) == ["rgb"] else "multi-view teacher"
        modes = f", {cfg.views.edge_mode}/{cfg.views.hf_mode}" if len(cfg.views.views) > 1 else ""
        prompts = f", {cfg.text.prompts} prompts" if cfg.text.prompts != "prior_aware" else ""
        epochs = cfg.teacher.multiview_optim.epochs
        how = f", {epochs} epoch{'s' * (epochs > 1)}" + (" from scratch" if cfg.teacher.teacher_init == "scratch" else "")
        return f"{kind} ({t}, views {'/'.join(cfg.views.views)}{modes}{prompts}{how})"
    if stage == "teacher_cache":
        epochs = cfg.teacher.multiview_optim.epochs
        members = ", ".join(f"{cfg.teacher.seed + k}" for k in cfg.teacher.ensemble)
        teacher = ("RGB" if cfg.student.teacher == "single" else f"RGB ensemble (teacher seeds {members})"
                   if cfg.student.teacher == "ensemble" else f"RGB fine-tuned ({epochs} epochs)"
                   if list(cfg.views.views) == ["rgb"] else
                   f"multi-view ({cfg.views.edge_mode}/{cfg.views.hf_mode}, {epochs} epochs)")
        replicas = cfg.student.cache_replicas or cfg.student.optim.epochs
        return f"{teacher} teacher-output cache ({t}, {replicas} replicas)"
    raise KeyError(stage)


def plan_tasks(study: Study, parts: Iterable[str] = ("pilot", "main", "ablations"), costs: bool = True) -> list[Task]:
    """Every stage the chosen parts of the plan need, once each: the runs `in_plan_order`,
    each task's dependencies just before it, then the teachers no run reads. `costs`
    False leaves `cost_flop` 0 and reads no dataset."""
    configs: list[ExperimentConfig] = []
    parts = list(parts)
    if set(PARTS[1:]) & set(parts) and not study.pilot_settled:
        raise study.unsettled()
    teachers = study.teacher_study if "teachers" in parts else None
    conf = study.confirmatory if "confirmatory" in parts else None
    if conf is not None:
        check_confirmatory_decisions(conf, study.teacher_study, [study.store] if study.store else [])
    # the comparisons after the rest read the confirmatory comparison's decisions: not planned before them
    decided = study.confirmatory is not None and study.confirmatory.chosen and study.confirmatory.fusion_settled
    secondary = study.secondary_confirmatory if "secondary" in parts and decided else None
    follow_up = study.ensemble_follow_up if "follow_up" in parts and decided else None
    factorial = study.factorial_follow_up if "factorial" in parts and decided else None
    for comparison, check in ((secondary, check_secondary_decisions), (follow_up, check_follow_up_decisions),
                              (factorial, check_factorial_decisions)):
        if comparison is not None:
            check(comparison, study.confirmatory)
    # each runs after what docs/protocol.md puts before it, which must be in the plan to keep that order
    # (the follow-ups reuse the confirmatory comparison's runs: without it they would wait behind the rest)
    declared = {"teachers": study.teacher_study, "confirmatory": study.confirmatory,
                "secondary": study.secondary_confirmatory, "follow_up": study.ensemble_follow_up}
    for comparison, before in ((secondary, ["teachers"]), (follow_up, ["teachers", "confirmatory", "secondary"]),
                               (factorial, ["teachers", "confirmatory", "secondary", "follow_up"])):
        missing = [b for b in before if declared[b] is not None and b not in parts]
        if comparison is not None and missing:
            raise DecisionMismatch(f"the {comparison.label} comparison runs after {', '.join(before)} "
                                   f"(docs/protocol.md): add {' '.join(missing)} to --parts (what has trained is "
                                   "skipped)")
    if "main" in parts:
        for cfg in study.teacher_configs():  # notebook 02: both teachers and the control
            configs += [cfg, method_config(cfg, "TMKD")]
            if len(cfg.views.views) > 1:
                configs.append(method_config(cfg, "TMKD", {"views.views": ["rgb"]}))
        # notebook 03 compares the first dataset's weights with those of generic prompts, whose
        # text heads need a multi-view teacher of their own
        first = study.dataset_config(study.datasets[0])
        if len(first.views.views) > 1:
            configs.append(method_config(first, "TMKD", {"text.prompts": "generic"}))
    specs = (study.pilot_runs() if "pilot" in parts else []) + (study.main_runs() if "main" in parts else [])
    if "ablations" in parts:
        kd, tmkd = study.ablation_runs()
        specs += kd + tmkd
    confirmatory = conf.runs(conf.widened_teacher_seeds()) if conf else []
    if conf and teachers and not conf.fusion_settled:  # the fusion candidate's student check, until settled
        confirmatory += conf.fusion_check_runs(dict(teachers.teacher_seeds)[conf.dataset])
    specs = study.in_plan_order(specs + confirmatory)
    tasks: dict[str, Task] = {}

    def add(pipe: Pipeline, stage: str, title: str | None = None, primary: bool = False, later: int = 0) -> str:
        key = f"{stage}:{pipe.key(stage)}"
        needs = [add(p, s, primary=primary, later=later) for p, s in pipe.builds_on(stage)]
        if key not in tasks:
            tasks[key] = Task(stage, pipe.cfg, title or _title(stage, pipe.cfg), key, pipe.artefact(stage), needs,
                              stage_flop(pipe, stage) if costs else 0.0, pipe.partial_checkpoint(stage), primary,
                              pipe.events_dir(stage), later=later)
        tasks[key].primary |= primary  # a teacher a secondary run listed first is the primary's too
        tasks[key].later = min(tasks[key].later, later)  # what earlier work reads too is not left for later
        return key

    def decides(key: str) -> None:
        """A pending decision reads this task: it, and what it is built from, go first."""
        tasks[key].decides = True
        for need in tasks[key].needs:
            decides(need)

    # the confirmatory comparison, and the teachers its choice reads, go first as the primary's do
    first = set(confirmatory)
    checking = set(conf.fusion_check_runs(dict(teachers.teacher_seeds)[conf.dataset])) if conf and teachers else set()
    for spec in specs:
        key = add(Pipeline(study.config(spec)), "student", spec.title, study.is_primary(spec) or spec in first)
        if spec in checking and not conf.fusion_settled:  # TMKD's final runs wait on the fusion check
            decides(key)
    if conf is not None and conf.chosen and not conf.fusion_settled:
        # TMKD's teachers and their caches do not depend on the fusion setting: they train
        # while it is being checked, so that TMKD's runs can start as soon as it is settled
        for spec in conf.tmkd_teacher_runs(conf.widened_teacher_seeds()):
            decides(add(Pipeline(study.config(spec)), "teacher_cache", primary=True))  # its runs: not planned yet
    deciding = conf.choice_reads(teachers) if conf and teachers else []  # until TMKD's teacher is chosen
    for teacher in teachers.teachers() if teachers else []:
        # a teacher the comparison reads is primary through its runs above; the rest of the
        # study (its rows and nothing else) waits until the comparison's work is taken
        for i, cfg in enumerate(teacher.configs):  # an ensemble's second teacher is titled as an RGB teacher
            key = add(Pipeline(cfg), teacher.variant.stage, None if i else teacher.title, primary=teacher in deciding)
            if teacher in deciding:
                decides(key)
    for cfg in configs:  # teachers no run reads come last: notebook 02's control, notebook 03's generic prompts
        pipe = Pipeline(cfg)
        add(pipe, "multiview_teacher" if pipe.uses("multiview_teacher") else "rgb_teacher")
    # the comparisons after everything else, in their order: what the rest of the plan reads keeps its place
    for order, comparison in enumerate((secondary, follow_up, factorial), start=1):
        if comparison is not None:
            specs = comparison.all_runs(comparison.teacher_seeds)
            for spec in study.in_plan_order(specs):
                add(Pipeline(study.config(spec)), "student", spec.title, later=order)
    # each dependency just before the first task that needs it: plan order is the order of need
    return list(tasks.values())


def restore(study: Study, parts: Iterable[str]) -> int:
    """Copy into the data root what the study's store keeps of `parts` and the data root
    lacks (its finished teachers and runs, `store.restore_artefacts`), as a plan does first:
    for a report or a notebook on a fresh clone, before anything is read. How many were copied."""
    if study.store is None:
        return 0
    return restore_artefacts(plan_tasks(study, parts, costs=False), study.store)


def default_parts(study: Study) -> list[str]:
    """The parts a plan runs unless told: all once the pilot has settled, else the pilot."""
    return list(PARTS) if study.pilot_settled else ["pilot"]


def whole_plan(study: Study) -> list[Task]:
    """Every task of the study's plan (`default_parts`), without costs: what
    `--prune-store` judges the store's checkpoints against."""
    return plan_tasks(study, default_parts(study), costs=False)


def widened_pairs(study: Study, parts: list[str]) -> Callable[[], list[Task]] | None:
    """For `run_plan(more=...)`: the plan's tasks again once a widening rule has added pairs
    (the primary comparison's) or teachers (the confirmatory comparison's) since the last
    call, else none (None: the parts have neither comparison)."""
    rules = []
    if "main" in parts and study.primary:
        rules.append(("the primary interval's half-width exceeds 0.5 point: {n} pairs now (docs/protocol.md, "
                      "'Sizing the interval')", study.primary_seeds))
    conf = study.confirmatory if "confirmatory" in parts else None
    if conf is not None:
        rules.append(("the confirmatory interval's half-width exceeds 0.5 point: {n} teachers now (docs/protocol.md, "
                      "'Amendment: powerful teachers')", conf.widened_teacher_seeds))
    if not rules:
        return None
    seen = [now() for _, now in rules]

    def more() -> list[Task]:
        widened = False
        for i, (message, now) in enumerate(rules):
            seeds = now()
            if seeds != seen[i]:
                print("[plan] " + message.format(n=len(seeds)), flush=True)
                seen[i], widened = seeds, True
        return plan_tasks(study, parts) if widened else []
    return more


def _study_reports(study: Study, out_dir: str | None, teachers: bool, confirmatory: bool) -> int:
    """--teacher-report and --confirmatory-report: 0 when written, 1 when a part is missing."""
    from .teacher_report import write_confirmatory_report, write_teacher_report

    out_dir, store = out_dir or study.figures_dir, study.store
    teacher_study, conf = study.teacher_study, study.confirmatory
    if (teachers and teacher_study is None) or (confirmatory and conf is None):
        print(f"[plan] the {study.name} study has no {'teacher study' if teachers else 'confirmatory comparison'}",
              file=sys.stderr)
        return 2
    if store is not None:  # a fresh clone: the stored teachers and runs into data/
        try:
            restore(study, ["teachers", "confirmatory", "secondary", "follow_up", "factorial"])
        except (PilotNotSettled, DecisionMismatch) as exc:
            print(f"[plan] {exc}", file=sys.stderr)
            return 2
    code = 0
    if teachers:
        payload = write_teacher_report(teacher_study, out_dir, [store] if store is not None else [], conf)
        for t in payload["missing"]:
            print(f"[plan] not trained yet: {t}", file=sys.stderr)
        if conf is not None and not conf.chosen:  # the choice reads validation alone: so does its reader
            print("[plan] the confirmatory comparison's teacher is not chosen yet: the choice below reads validation "
                  f"accuracies only; the test accuracies are in {out_dir}/tables/teacher_study.md")
        else:
            print((Path(out_dir) / "tables" / "teacher_study.md").read_text())
        for key in ("choice", "fusion_screen", "fusion_check"):
            if payload.get(key) is not None:
                print(f"{key}: {json.dumps(payload[key])}")
        print(f"written: {out_dir}/tables/teacher_study.md, {out_dir}/teacher_study.png, "
              f"{out_dir}/results/teacher_study.json")
        code = int(bool(payload["missing"]))
        if code:
            print(f"[plan] the teacher study is incomplete: {len(payload['missing'])} teacher(s) not trained yet "
                  "(exit status 1; the files above hold what has trained)", file=sys.stderr)
    for comparison in study.confirmatory_comparisons if confirmatory else ():
        report = write_confirmatory_report(comparison, out_dir)
        if isinstance(report, list):
            print(f"[plan] the {comparison.label} comparison waits for {len(report)} run(s): " + "; ".join(report[:3])
                  + ("; ..." if len(report) > 3 else ""), file=sys.stderr)
            code = 1
            continue
        table = report[0]  # one row (transposed to read) or one row per effect (the factorial follow-up)
        print(table.T.to_string(header=False) if len(table) == 1 else table.to_string(index=False))
        print(f"written: {out_dir}/tables/{comparison.name}.md, {out_dir}/results/{comparison.name}.json")
    return code


PARTS = ("pilot", "main", "ablations", "teachers", "confirmatory", "secondary", "follow_up", "factorial")
LATER_NAMES = {0: "the rest", 1: "the secondary comparison", 2: "the ensemble follow-up", 3: "the factorial follow-up"}


def main(argv=None) -> int:
    try:
        return _main(argv)
    except DatasetNotFound as exc:  # its message names the paths tried and the fix: the traceback adds nothing
        print(f"[plan] {exc}", file=sys.stderr)
        return 2


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tmkd_core.plan", description=__doc__.split("\n\n")[0],
        epilog="Without --dry-run, --prune-store or a --*-report flag it trains (the cpu profile: hours). Exit "
               "status: 0 all done, 1 a task failed or a report is incomplete, 2 refused (the pilot has not settled, a "
               "setting departs from docs/protocol.md, a dataset is missing), "
               "3 the pilot finished and waits to be settled, 4 another plan of the profile is running on this data "
               "root, 130 interrupted.")
    parser.add_argument("--profile", default="cpu", choices=list(PROFILE_PLANS),
                        help="the built-in study whose plan runs (config.PROFILE_PLANS; default: cpu, the evidence "
                             "of docs/protocol.md)")
    parser.add_argument("--study", default=None, metavar="FILE.json",
                        help="a study declared in a JSON file of PROFILE_PLANS's keys, instead of --profile "
                             "(tmkd_core.study: its \"profile\" names the configuration profile its runs start from)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("TMKD_JOBS", "2")),
                        help="worker processes (default 2, or $TMKD_JOBS)")
    parser.add_argument("--parts", nargs="+", default=None, choices=PARTS,
                        help="pilot: the validation pilot; main: the teachers and notebook 04's runs (the primary "
                             "comparison first); ablations: notebook 05's runs; teachers: the teacher study; "
                             "confirmatory: the CIFAR-100 confirmatory comparison (KD's side until TMKD's teacher "
                             "is chosen); secondary: the secondary CIFAR-10 confirmatory comparison, after the rest; "
                             "follow_up: KD from the RGB ensemble against the confirmatory comparison's runs, after "
                             "the secondary; factorial: the confirmatory comparison crossed (KD from its multi-view "
                             "teacher, TMKD from its RGB teacher), after the follow-up. "
                             "Default: all, or the pilot alone while it has not settled")
    parser.add_argument("--pilot-report", action="store_true",
                        help="the pilot's validation table and what the protocol's rules decide from it, "
                             "written to <out-dir>/tables/pilot.md and <out-dir>/results/pilot.json (for cpu: the "
                             "committed figures/, overwritten); the pilot's stored artefacts are restored to data/")
    parser.add_argument("--primary-report", action="store_true",
                        help="the primary comparison of docs/protocol.md once all its pairs have finished (the "
                             "widening rule applied), before the rest of the plan: written to <out-dir>/tables/"
                             "primary.md and <out-dir>/results/primary.json, where notebook 04 writes it too")
    parser.add_argument("--teacher-report", action="store_true",
                        help="the teacher study as far as it has trained, the validation choice of the confirmatory "
                             "comparison's teacher and the fusion-setting rule (docs/protocol.md, 'Amendment: powerful "
                             "teachers'): <out-dir>/tables/teacher_study.md, teacher_study.png and "
                             "results/teacher_study.json; each teacher's evaluation is kept in <store>/evals")
    parser.add_argument("--confirmatory-report", action="store_true",
                        help="the confirmatory comparison once all its runs have finished: "
                             "<out-dir>/tables/confirmatory.md and results/confirmatory.json; likewise the secondary "
                             "one (secondary_confirmatory.md/.json) and the two follow-ups "
                             "(ensemble_follow_up, factorial_follow_up .md/.json) once their runs have finished. "
                             "Exit status 1 while "
                             "one waits for runs (what has finished is written all the same)")
    parser.add_argument("--out-dir", default=None,
                        help="where the --*-report flags write (default: figures for cpu, overwriting the "
                             "committed files, else build/<study>/figures)")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the tasks and their estimates, train nothing: done (in data/), kept (in the store, "
                             "restored at the start), todo, skip (a cache no run left reads). It extracts the "
                             "datasets (hundreds of MB) and times this CPU for a few seconds")
    parser.add_argument("--prune-store", action="store_true",
                        help="remove the store's last-epoch checkpoints (under <store>/partial/) that no unfinished "
                             "task of the whole plan resumes from (finished, or of a changed key), naming each; with "
                             "--dry-run, only list them. Run it with the code and store the plan runs with")
    parser.add_argument("--log-dir", default=None, help="per-task logs (default: <data.root>/logs/plan)")
    executors.add_arguments(parser)
    parser.add_argument("--store", default=None,
                        help="artefact store: finished teachers and run records, restored when missing "
                             "(default: the study's `store`, e.g. artefacts/cpu; 'none' for none). The study's finished runs "
                             "are looked up there too: the pilot's check, the widening rules and the reports read it")
    args = parser.parse_args(argv)
    try:
        study = Study.load(args.study) if args.study else Study.of(args.profile)
    except StudyError as exc:  # the file and the fix, without the usage text above it
        parser.exit(2, f"{parser.prog}: {exc}\n")
    # the study's store is relative to the project root, where it is kept in git
    if args.store is not None:
        study = study.with_store(None if args.store == "none" else Path(args.store))
    store = study.store
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.executor == "local" and (args.cluster != "local" or args.scheduler or args.job_script):
        parser.error("--cluster, --scheduler and --job-script are for --executor dask")
    if args.job_script:
        if args.cluster == "local":
            parser.error("--job-script prints a Slurm or PBS worker's job script: add --cluster slurm or pbs")
        root = Path(study.dataset_config(study.datasets[0]).data.root)
        print(executors.job_script(args.cluster, args.scheduler or "tcp://<the plan's scheduler>:<port>",
                                   **executors.from_args(args, root).jobqueue))
        return 0
    if args.pilot_report:
        if store is not None:
            restore(study, ["pilot"])
        out_dir = args.out_dir or study.figures_dir
        summary = write_pilot_report(study, out_dir)
        if summary is None:
            state = pilot_progress(study) if study.pilot else "has no pilot"
            print(f"[plan] the {study.name} pilot is not complete: {state}; run `python -m tmkd_core.plan "
                  f"--profile {study.name} --parts pilot`", file=sys.stderr)
            return 1
        table, decided = summary
        print(table.to_string(index=False, float_format="%.2f"))
        print(decided)
        print(f"written: {out_dir}/tables/pilot.md, {out_dir}/results/pilot.json")
        return 0
    if args.primary_report:
        out_dir = args.out_dir or study.figures_dir
        try:
            report = write_primary_report(study, out_dir)
        except (PilotNotSettled, DecisionMismatch) as exc:
            print(f"[plan] {exc}", file=sys.stderr)
            return 2
        if isinstance(report, list):
            print(f"[plan] the primary comparison waits for {len(report)} run(s): "
                  + ", ".join(f"{s.method} seed {s.seed}" for s in report), file=sys.stderr)
            return 1
        table, statistic = report
        print(table.T.to_string(header=False))
        parts = {**{f"teacher seed {t}": p for t, p in statistic["per_teacher"].items()},
                 **statistic["per_cpu"]}
        for name, part in parts.items():
            print(f"sensitivity, the pairs of {name} alone ({part['pairs']}): Δ {part['diff']:+.2f} ± "
                  f"{part['diff_sd']:.2f}, 95% CI [{part['ci_low']:+.2f}, {part['ci_high']:+.2f}]")
        unit = statistic["teacher_level"]
        print(f"sensitivity, the teacher seed as the unit ({unit['teachers']} teacher means): Δ {unit['diff']:+.2f}, "
              f"95% CI [{unit['ci_low']:+.2f}, {unit['ci_high']:+.2f}] (half-width {unit['half_width']:.2f})")
        print(f"written: {out_dir}/tables/primary.md, {out_dir}/results/primary.json")
        return 0
    if args.teacher_report or args.confirmatory_report:
        return _study_reports(study, args.out_dir, args.teacher_report, args.confirmatory_report)
    if args.prune_store:
        if store is None:
            parser.error("--prune-store needs a store: " + ("--store none was given" if args.store == "none" else
                                                            f"the {study.name} study names none; give --store PATH"))
        if not (Path(store) / "partial").is_dir():
            print(f"[plan] {store} has no partial/ folder: no last-epoch checkpoint to prune")
            return 0
        try:
            stale = stale_partials(whole_plan(study), store)
        except (PilotNotSettled, DecisionMismatch) as exc:
            print(f"[plan] {exc}", file=sys.stderr)
            return 2
        for path in stale:
            if not args.dry_run:
                path.unlink()
            print(f"[plan] {'stale' if args.dry_run else 'removed'}: {path} (no unfinished task resumes from it)")
        print(f"[plan] {len(stale)} stale checkpoint(s) {'listed' if args.dry_run else 'removed'} in {store}/partial")
        return 0
    parts = args.parts or default_parts(study)
    if args.parts is None and parts == ["pilot"]:
        print(f"[plan] the {study.name} pilot has not decided yet (docs/protocol.md): running the pilot alone",
              flush=True)
    try:
        tasks = plan_tasks(study, parts)
        stale = stale_partials(whole_plan(study), store) if args.dry_run and store is not None else []
    except (PilotNotSettled, DecisionMismatch) as exc:
        print(f"[plan] {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        rate = measure_worker_rate(worker_threads(args.jobs), args.jobs)
        progress = Progress(rate, args.jobs).read_records(tasks, store).read_partials(tasks, store)

        def stored(t):
            kept = stored_copy(t, store) if store is not None else None
            return kept is not None and kept.exists()

        pending = needed(tasks, done=lambda t: t.done() or stored(t))
        to_run = {t.key for t in pending}
        for t in tasks:
            state = "done" if t.done() else "kept" if stored(t) else "todo" if t.key in to_run else "skip"
            print(f"{state}  {hms(progress.estimate(t)) if state == 'todo' else '-':>7}  {t.title}"
                  + (f"  [after the rest: {t.later}]" if t.later and state == "todo" else ""))
        for path in stale:
            print(f"stale  {path} (no unfinished task resumes from it: --prune-store removes it)")
        print("(done: in data/; kept: in the store, restored at the start; todo: to train, its estimate; skip: a "
              "teacher-output cache no run left to train reads; [after the rest: n]: started only when no task of a "
              "lower n can start, 1 the secondary comparison, 2 the ensemble follow-up, 3 the factorial one. An "
              "ensemble's second RGB teacher has teacher seed 500 + t.)")
        ends_at: dict[str, float] = {}
        print(f"{len(tasks)} tasks, {len(pending)} to run, estimated {hms(progress.left(pending, {}, ends_at))} on "
              f"{args.jobs} workers (at {rate / 1e9:.1f} GFLOP/s per worker, measured now: a busy machine reads "
              "slower)")
        groups = sorted({t.later for t in pending})
        if len(groups) > 1:  # when each comparison after the rest would be done, as the plan orders them
            print("done after: " + "; ".join(
                f"{LATER_NAMES.get(g, f'order {g}')} {hms(max(ends_at[t.key] for t in pending if t.later == g))}"
                for g in groups))
        if store is not None:
            starts, seconds = plan_wall_time(Path(store) / "logs")
            print(f"so far: {starts} plan start(s), {hms(seconds)} of plan wall time (the logs in {store}/logs)")
        return 0
    root = Path(tasks[0].cfg.data.root) if tasks else Path("data")
    log_dir = Path(args.log_dir) if args.log_dir else root / "logs" / "plan"
    code = run_plan(tasks, args.jobs, log_dir, say=lambda s: print(s, flush=True), store=store,
                    more=widened_pairs(study, parts), executor=executors.from_args(args, root))
    if code == 0 and not study.pilot_settled:
        summary = pilot_summary(study)
        if summary is not None:
            print(summary[0].to_string(index=False, float_format="%.2f"), "\n", summary[1], sep="")
        print(f"[plan] the pilot is done; the final runs wait for its decisions (docs/protocol.md): apply them to "
              f"the {study.name} study and set {study.where}['pilot']['settled'] to True",
              file=sys.stderr)
        return 3  # make reproduce stops here: the notebooks would start the final runs
    return code


if __name__ == "__main__":
    sys.exit(main())
