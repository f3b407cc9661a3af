"""The scheduler: tasks (one stage of one configuration each) run by an executor's workers in
dependency order, with live progress and an estimate of the time left.

A task is done when its artefact exists, so an interrupted plan started again skips what
finished and resumes the rest from their checkpoints. A free worker takes the tasks marked
`primary` first, among them those a pending decision reads (`decides`), then the task with
the longest chain of work waiting on it (`next_task`: a teacher whose cache and runs would
otherwise finish last), then the rest in plan order; tasks marked `later` (1, 2, ...) only when
no task of a lower mark can start. A task that can only run alone (the
first teacher, on which everything waits) takes every free thread instead (thread counts
enter no key, see experiment.py).

Time left is estimated from floating-point operations (costs.py) at a rate measured on this
machine when the plan starts, then corrected by the ratio of measured to estimated time of
the tasks that finish, and from the start by the training times that finished teachers and
runs record (`train_time_s`): a student's data pipeline and loss make it several times slower
than its operations alone. The time left is those estimates scheduled on the workers as the
plan runs them (`finish_seconds`).

It knows stages and artefacts, nothing of TMKD or of the comparisons a study makes.
"""
from __future__ import annotations

import fcntl
import heapq
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .config import ExperimentConfig, config_to_dict
from .executors import Executor, LocalExecutor
from .store import keep_artefact, keep_partial, restore_artefacts, stored_copy, StoreLog


class PlanRunning(RuntimeError):
    """Another plan of the profile runs on the data root (`hold_plan_lock`)."""


PLAN_RUNNING = 4  # run_plan's and the command's exit status when another plan holds the lock


@dataclass
class Task:
    stage: str
    cfg: ExperimentConfig
    title: str
    key: str
    artefact: Path
    needs: list[str] = field(default_factory=list)  # keys of the tasks it builds on
    cost_flop: float = 0.0
    partial: Path | None = None  # its resumable checkpoint while it trains (Pipeline.partial_checkpoint)
    primary: bool = False  # a pre-registered comparison reads it: it starts before the rest
    events: Path | None = None  # its TensorBoard curves while it trains (Pipeline.events_dir)
    decides: bool = False  # a pending decision reads it, and work not planned yet waits on that decision
    later: int = 0  # pre-registered to run after the rest (1, then 2, ...): started only when no lower one can start

    def done(self) -> bool:
        return self.artefact.exists()


def ready_tasks(pending: list[Task], done_keys: set[str]) -> list[Task]:
    """The pending tasks whose dependencies are done, in plan order: a teacher or cache
    stands just before the first run that needs it, so the primary pairs' teachers and
    caches are built before the secondary runs."""
    return [t for t in pending if all(n in done_keys for n in t.needs)]


def work_behind(tasks: list[Task], seconds: dict[str, float]) -> dict[str, float]:
    """For each task, the longest chain of work that waits on it: b(t) = max over the
    tasks d that need t of (seconds(d) + b(d)), 0 for a task nothing needs (a student run).
    A chain, not the sum: what waits on a teacher in parallel does not lengthen it. Work
    marked `later` does not count behind a task of a lower mark: it does not reorder what goes before it."""
    after: dict[str, list[Task]] = {}
    for task in tasks:
        for need in task.needs:
            after.setdefault(need, []).append(task)
    behind: dict[str, float] = {}

    def chain(task: Task) -> float:
        if task.key not in behind:
            behind[task.key] = max((seconds[d.key] + chain(d) for d in after.get(task.key, ()) if d.later <= task.later),
                                   default=0.0)
        return behind[task.key]

    for task in tasks:
        chain(task)
    return behind


def next_task(startable: list[Task], behind: dict[str, float]) -> Task:
    """The task a free worker starts: the `primary` tasks first; among them, those a pending
    decision reads (`Task.decides`: the work that waits on the decision is not planned yet,
    so `work_behind` cannot see it); then the one with the longest chain of work waiting on it
    (`work_behind`: a teacher before a run of another dataset, so that its chain does not end
    alone with a worker idle), then plan order; a `later` task only when none of a lower mark can
    start (a worker is never left idle for it)."""
    return min(startable, key=lambda t: (not t.primary, not t.decides, t.later, -behind.get(t.key, 0.0)))  # first of ties


def finish_seconds(pending: list[Task], running_left: dict[str, float], jobs: int,
                   seconds: dict[str, float], ends_at: dict[str, float] | None = None) -> float:
    """Seconds until the last task ends when `jobs` workers take the `pending` tasks as
    `run_plan` does (`next_task` whenever a worker is free, after every task ending at that
    moment), after the running tasks' `running_left` seconds: list scheduling on the
    estimates, each task at one worker's speed (a task the plan runs alone on every thread
    is a little faster). A need outside both counts as done. `ends_at`, if given, receives
    each task's end (seconds from now)."""
    behind = work_behind(pending, seconds)
    waiting = list(pending)
    unfinished = {t.key for t in pending} | set(running_left)
    ends = [(left, key) for key, left in running_left.items()]
    heapq.heapify(ends)
    now = 0.0
    while waiting or ends:
        while len(ends) < jobs:
            startable = [t for t in waiting if unfinished.isdisjoint(t.needs)]
            if not startable:
                break
            task = next_task(startable, behind)
            waiting.remove(task)
            heapq.heappush(ends, (now + seconds[task.key], task.key))
        if not ends:  # a need that never finishes: run_plan says so when it gets there
            break
        ending = [heapq.heappop(ends)]
        while ends and ends[0][0] == ending[0][0]:  # every task ending now, before a worker picks
            ending.append(heapq.heappop(ends))
        for now, key in ending:
            unfinished.discard(key)
            if ends_at is not None:
                ends_at[key] = now
    return now


def needed(tasks: list[Task], done=Task.done) -> list[Task]:
    """The tasks to run: every one not `done`, less the teacher-output caches that no task
    left to run reads (after a restore, their students are finished) and no work not planned
    yet waits on (`Task.decides`)."""
    pending = [t for t in tasks if not done(t)]
    wanted = {n for t in pending for n in t.needs}
    return [t for t in pending if t.stage != "teacher_cache" or t.key in wanted or t.decides]


def launch_threads(free: int, ready: int, running: int, per_worker: int) -> int:
    """Threads for the next task: `per_worker`, or all `free` threads when it can only run
    alone (nothing `running`, one task `ready`: everything else waits for it); 0 = wait."""
    if running == 0 and ready == 1:
        return free
    return min(per_worker, free)


def hms(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """Estimated seconds per task, corrected by the tasks that finished (before any of a
    stage has finished here: by the times recorded in the finished artefacts of that stage; for
    a stage with neither, the teacher-output cache, by all of them). A task that resumes part-way
    is estimated for the epochs or replicas it has left (`read_partials`)."""

    def __init__(self, rate: float, jobs: int):
        self.rate, self.jobs = rate, jobs
        self.measured: dict[str, list[tuple[float, float]]] = {}  # stage -> (estimated, actual)
        self.recorded: dict[str, list[tuple[float, float]]] = {}  # the same, from artefacts found at the start
        self.left_fraction: dict[str, float] = {}  # task key -> the share of its work left (a resumed task)

    def _operations_time(self, task: Task) -> float:
        """Seconds at the measured rate for the work `task` has left."""
        return task.cost_flop / self.rate * self.left_fraction.get(task.key, 1.0)

    def estimate(self, task: Task) -> float:
        est = self._operations_time(task)
        pairs = (self.measured.get(task.stage) or self.recorded.get(task.stage)
                 or [p for v in self.measured.values() for p in v] or [p for v in self.recorded.values() for p in v])
        if pairs:
            est *= sum(a for _, a in pairs) / max(sum(e for e, _ in pairs), 1e-9)
        return est

    def finished(self, task: Task, seconds: float) -> None:
        # a resumed task's seconds are those of the epochs it had left: compared with their estimate
        self.measured.setdefault(task.stage, []).append((self._operations_time(task), seconds))

    def read_partials(self, tasks: list[Task], store: Path | None = None) -> "Progress":
        """The share of its work each unfinished task has left: from its resumable checkpoint
        (in the data root, else in `store`, which a plan restores at its start), (epochs − the
        checkpoint's epoch) / epochs; for a teacher-output cache stopped part-way, the share of
        its replicas not written yet. Unreadable ones count as not started."""
        from .costs import stage_epochs
        from .store import partial_epoch, stored_partial
        from .teachers import TeacherCache
        from .utils import DamagedArtifact

        for task in tasks:
            if task.done():
                continue
            try:
                if task.stage == "teacher_cache":
                    if (progress := TeacherCache.replicas_done(task.artefact.parent)) is None:
                        continue
                    done, total = progress
                else:
                    total = stage_epochs(task.cfg, task.stage)
                    path = (None if task.partial is None else task.partial if task.partial.exists()
                            else stored_partial(task, store) if store else None)
                    if not total or path is None or not path.exists():
                        continue
                    done = partial_epoch(path)
            except (OSError, ValueError, KeyError, TypeError, IndexError, DamagedArtifact):  # never stops the plan
                continue
            self.left_fraction[task.key] = min(max(1.0 - done / total, 0.0), 1.0)
        return self

    def read_records(self, tasks: list[Task], store: Path | None = None) -> "Progress":
        """The training times recorded in the finished artefacts among `tasks` (in the data
        root, else in `store`): a run record's or a teacher checkpoint's `train_time_s`
        (training only: setup and evaluation are left out). Unreadable ones are skipped."""
        from .utils import DamagedArtifact, load_checkpoint

        for task in tasks:
            path = task.artefact if task.done() else stored_copy(task, store) if store is not None else None
            if task.stage == "teacher_cache" or path is None or not path.exists():
                continue
            try:
                info = json.loads(path.read_text()) if task.stage == "student" else load_checkpoint(path)["info"]
                seconds = float(info["train_time_s"])
            except (OSError, ValueError, KeyError, TypeError, DamagedArtifact):  # an estimate never stops the plan
                continue
            if seconds > 0:  # an imported teacher records 0
                self.recorded.setdefault(task.stage, []).append((task.cost_flop / self.rate, seconds))
        return self

    def left(self, pending: list[Task], running: dict[str, tuple[Task, float]],
             ends_at: dict[str, float] | None = None) -> float:
        """Seconds of wall time left: the pending tasks scheduled on the workers as the plan
        will run them (`finish_seconds`, which fills `ends_at` with each task's end), so a long
        chain of teacher, cache and runs that leaves a worker idle counts, not only the work
        spread evenly."""
        now = time.perf_counter()
        running_left = {t.key: max(self.estimate(t) - (now - t0), 0.0) for t, t0 in running.values()}
        return finish_seconds(pending, running_left, self.jobs, {t.key: self.estimate(t) for t in pending}, ends_at)


def plan_lock_path(tasks: list[Task]) -> Path | None:
    """Where a plan of these tasks holds its lock: one per data root and profile
    (`<data root>/logs/plan/<profile>.lock`), whatever `--log-dir` says; None for no task."""
    if not tasks:
        return None
    cfg = tasks[0].cfg
    return Path(cfg.data.root) / "logs" / "plan" / f"{cfg.profile}.lock"


def hold_plan_lock(path: Path):
    """The open lock file of the one plan allowed per data root and profile
    (`plan_lock_path`): a second plan beside a running one would train the same tasks into
    the same files (plans of other profiles may run beside it). The lock (flock) goes with
    the plan's process; a plan killed with SIGKILL leaves its workers training, which
    `pkill -f multiprocessing.spawn` stops. Raises PlanRunning, naming the other plan's process id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        raise PlanRunning(f"another plan of this profile (process {owner}, lock {path}) is running on this data "
                          f"root: wait for it, or stop it with `kill -TERM {owner}` (it resumes where it stopped)"
                          ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def run_plan(tasks: list[Task], jobs: int, log_dir: Path, say=print, heartbeat_s: float = 60.0,
             store: Path | None = None, more: Callable[[], list[Task]] | None = None,
             executor: Executor | None = None) -> int:
    """Run the tasks not done yet on `jobs` workers of the `executor` (default: worker
    processes of this machine, `executors.LocalExecutor`); 0 when all finished, 1 when a
    task failed, PLAN_RUNNING when another plan holds this one's lock (`hold_plan_lock`).
    With a `store`, stored artefacts are restored first and each finished one is kept
    there. After each finished run, `more()` may return tasks to add (the widening rule's
    pairs): those not in the plan yet go first. The executor decides where a task runs;
    what runs, and in which order, is decided here."""
    path = plan_lock_path(tasks)
    try:
        lock = hold_plan_lock(path) if path is not None else None
    except PlanRunning as exc:
        say(f"[plan] {exc}")
        return PLAN_RUNNING
    try:
        return _run_holding_the_lock(tasks, jobs, log_dir, say, heartbeat_s, store, more,
                                     executor if executor is not None else LocalExecutor())
    finally:
        if lock is not None:
            lock.close()


def _run_holding_the_lock(tasks: list[Task], jobs: int, log_dir: Path, say, heartbeat_s: float,
                          store: Path | None, more: Callable[[], list[Task]] | None, executor: Executor) -> int:
    jobs, threads, machine_threads, note = executor.capacity(jobs)
    if note:
        say(note)
    if store is not None:
        say = StoreLog(say, store)
        restored = restore_artefacts(tasks, store, say)
        for task in tasks:  # finished before this plan kept them (or by a notebook)
            if task.done():
                keep_artefact(task, store, say)
        say(f"[plan] artefact store {store}: {restored} artefact(s) restored to the data root")
    pending = needed(tasks)
    total, skipped = len(tasks), len(tasks) - len(pending)
    if not pending:
        say(f"[plan] all {total} tasks done or not needed")
        return 0
    if store is not None:
        say.keep()
    try:
        executor.open(jobs, say)
        rate = executor.rate(threads, jobs)
    except BaseException as exc:
        executor.close()
        if not isinstance(exc, Exception):
            raise
        say(f"[plan] the {executor.name} executor could not start: {type(exc).__name__}: {exc}")
        return 1
    progress = Progress(rate, jobs)
    progress.read_records(tasks).read_partials(pending)
    say(f"[plan] {total} tasks, {skipped} done or not needed; {len(pending)} to run on "
        f"{executor.describe(jobs, threads)}; measured {rate / 1e9:.1f} GFLOP/s per worker; estimated "
        f"{hms(progress.left(pending, {}))}")
    root = Path(pending[0].cfg.data.root)
    say(f"[plan] live training curves: `tensorboard --logdir {root}` (each teacher and run writes them next to its "
        f"checkpoint or record, <key>.tb/); per-task logs in {log_dir}")
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[Task, float]] = {}
    held: dict[str, int] = {}  # threads of each running task
    resumed: set[str] = set()  # tasks that started from a checkpoint of an earlier plan
    threads_of: dict[str, int] = {}
    started, last_beat = time.perf_counter(), 0.0
    pending_keys = {t.key for t in pending}
    done_keys = {t.key for t in tasks if t.key not in pending_keys}

    def status(event: str) -> None:
        n_done = total - len(pending) - len(running)
        left = progress.left(pending, running)
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        say(f"[plan {n_done}/{total} done, {len(running)} running | elapsed {hms(time.perf_counter() - started)} | "
            f"left ~{hms(left)} (ends ~{finish})] {event}")

    def stop(signum, frame):  # a scheduler's SIGTERM stops the workers too, as Ctrl-C does
        raise KeyboardInterrupt

    # SIGINT too: a plan started in the background (`nohup ... &`) inherits SIGINT ignored
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while pending or running:
            for ended in executor.ended():
                key = ended.key
                task, t0 = running.pop(key)
                threads_of[key] = held.pop(key)
                log = log_dir / f"{task.key.replace(':', '_')}.log"
                if not ended.ok or not task.done():
                    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                    others = ", ".join(t.title for t, _ in running.values())
                    say(f"[plan] FAILED: {task.title} ({ended.why or 'no artefact'}); its log, {log}:\n{tail}"
                        + (f"\n[plan] stopping the others (they resume next time): {others}" if others else ""))
                    return 1
                # a lone task's threads, or a task resumed part-way, would skew the correction
                if threads_of[key] == threads and key not in resumed:
                    progress.finished(task, time.perf_counter() - t0)
                if store is not None:
                    keep_artefact(task, store, say)
                done_keys.add(key)
                status(f"finished {task.title} in {hms(time.perf_counter() - t0)}")
                if more is not None and task.stage == "student":
                    known = done_keys | {t.key for t in pending} | set(running)
                    added = [t for t in more() if t.key not in known and not t.done()]
                    pending[:0] = added
                    total += len(added)
                    if added:
                        status(f"added {len(added)} task(s) first: " + "; ".join(t.title for t in added))
            while len(running) < jobs:
                startable = ready_tasks(pending, done_keys)
                n_threads = (launch_threads(machine_threads - sum(held.values()), len(startable), len(running),
                                            threads) if executor.pools_threads else threads)
                if not startable or n_threads < 1:
                    break
                ready = next_task(startable, work_behind(pending, {t.key: progress.estimate(t) for t in pending}))
                pending.remove(ready)
                log = log_dir / f"{ready.key.replace(':', '_')}.log"
                cfg = {**config_to_dict(ready.cfg), "progress": False}
                if ready.partial is not None and ready.partial.exists():
                    resumed.add(ready.key)
                executor.start(ready.key, cfg, ready.stage, n_threads, log)
                running[ready.key], held[ready.key] = (ready, time.perf_counter()), n_threads
                status(f"started {ready.title} on {n_threads} thread(s) (~{hms(progress.estimate(ready))})"
                       + (" from its last checkpoint" if ready.key in resumed else "")
                       + (f"; curves in {ready.events}" if ready.events is not None else ""))
            if not running and pending:
                say("[plan] no task can start: a task it needs is missing from the plan")
                return 1
            if time.perf_counter() - last_beat > heartbeat_s:
                last_beat = time.perf_counter()
                if store is not None:
                    for task, _ in running.values():
                        keep_partial(task, store)
                now = time.perf_counter()
                status("running: " + "; ".join(f"{t.title} {hms(now - t0)}" for t, t0 in running.values()))
            time.sleep(0.5)
    except KeyboardInterrupt:
        say("[plan] interrupted: finished tasks are kept, running ones resume from their checkpoints next time")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        executor.stop()  # the tasks still running, if the plan stopped early (they resume next time)
        executor.close()
        if store is not None:  # the interrupted tasks' last epochs, for a machine without this data root
            for task, _ in running.values():
                try:
                    keep_partial(task, store)
                except OSError as exc:
                    say(f"[plan] {task.title}: its last epoch was not kept in the store: {exc}")
    status("all tasks done")
    return 0
