"""Where the plan's tasks run: the executors behind `python -m tmkd_core.plan --executor`.

The plan (`scheduler.run_plan`) decides what runs and in which order: dependencies, the
widening rule's added pairs, the longest chain first, the time left, the artefact store.
An executor only decides where a task runs, through four calls: `open` (once there is
work), `start` (one stage of one configuration), `ended` (the tasks that have stopped, and
whether they succeeded) and `stop` (the tasks still running, when the plan stops early).

    local   worker processes of this machine (multiprocessing, spawn), one per task: the
            default, as the plan always ran
    dask    the workers of a Dask distributed cluster, one task at a time each (the worker
            resource `tmkd_task`): a LocalCluster of --jobs workers on this machine, the jobs
            of a Slurm or PBS queue (dask-jobqueue, --cluster slurm|pbs; see docs/cluster.md),
            or the workers of a running scheduler (--scheduler tcp://host:8786)

A task is done when its artefact exists under the data root, so every worker must see the
project folder, with its data/, at the same path (a shared file system with working
`flock`, as each artefact is built under a file lock). A Dask worker that dies while it
trains (killed, out of memory, its node lost, its job past its walltime) loses nothing but
the epoch it was in: the scheduler gives the task to another worker (up to
`distributed.scheduler.allowed-failures` deaths, 3 by default), which resumes it from its
last epoch's checkpoint.
"""
from __future__ import annotations

import gc
import importlib.util
import logging
import multiprocessing as mp
import os
import shlex
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch

RESOURCE = "tmkd_task"  # a Dask worker holds one: it runs one plan task at a time
EXECUTORS = ("local", "dask")
CLUSTERS = ("local", "slurm", "pbs")


@dataclass
class Ended:
    """A task that stopped: `ok` when its process or Dask task returned; `why` otherwise
    (an exit status, or the exception the Dask task raised)."""

    key: str
    ok: bool
    why: str = ""


class Executor(Protocol):
    """What the plan asks of an executor (`scheduler.run_plan`)."""

    name: str
    pools_threads: bool  # whether a task that runs alone may take the threads of idle workers

    def capacity(self, jobs: int) -> tuple[int, int, int, str]:
        """(workers, torch threads per worker, threads in all, a note for the log or "")."""

    def describe(self, jobs: int, threads: int) -> str:
        """The workers, for the plan's first line."""

    def open(self, jobs: int, say: Callable[[str], None]) -> None:
        """Get the workers ready (called once there is work to do)."""

    def rate(self, threads: int, jobs: int) -> float:
        """FLOP/s of one worker while `jobs` run side by side (the plan's first estimate)."""

    def start(self, key: str, cfg_dict: dict, stage: str, threads: int, log: Path) -> None:
        """Start task `key`: `run_stage(cfg_dict, stage, threads, log)` on a worker."""

    def ended(self) -> list[Ended]:
        """The started tasks that have stopped since the last call."""

    def stop(self) -> None:
        """Stop the tasks still running (they resume from their checkpoints next time)."""

    def close(self) -> None:
        """Let the workers go."""


# --- one task, in a worker process -------------------------------------------------------------

@contextmanager
def _output_to(log: str, restore: bool) -> Iterator[None]:
    """This process's stdout and stderr (file descriptors 1 and 2, so that C libraries'
    output goes there too) appended to `log`; with `restore`, given back afterwards (a Dask
    worker runs task after task)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2)) if restore else None
    with open(log, "a", buffering=1) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            yield
        finally:
            if saved is not None:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, old in zip((1, 2), saved):
                    os.dup2(old, fd)
                    os.close(old)


def run_stage(cfg_dict: dict, stage: str, threads: int | None, log: str, workdir: str | None = None) -> str:
    """One task: one stage of one configuration (`Pipeline.build`), on `threads` torch
    threads (None: the Dask worker's own), its output appended to `log`. `workdir`: the
    folder the plan runs in, where the configuration's relative paths (data/) point; a Dask
    worker moves there, and one that does not see it fails naming it."""
    from .config import config_from_dict
    from .experiment import _ENCODERS, _SPLITS, Pipeline

    in_dask = workdir is not None
    if in_dask:
        if not Path(workdir).is_dir():
            raise FileNotFoundError(f"this Dask worker ({os.uname().nodename}) does not see the project folder "
                                    f"{workdir}: the workers need it, with its data/, at the same path on a shared "
                                    "file system (docs/cluster.md)")
        os.chdir(workdir)
        if threads is None:
            from distributed import get_worker

            threads = get_worker().state.nthreads
    with _output_to(log, restore=in_dask):
        torch.set_num_threads(threads)
        try:
            Pipeline(config_from_dict(cfg_dict)).build(stage)
        except BaseException:
            if in_dask:  # a local worker's traceback reaches the log as the process dies
                traceback.print_exc()
            raise
        finally:
            if in_dask:  # the next task starts as a fresh process would: no dataset or encoder kept
                _SPLITS.clear()
                _ENCODERS.clear()
                gc.collect()
    return stage


def _worker_rate(seconds: float) -> float:
    """FLOP/s of training steps on a Dask worker's threads (`costs.measure_rate`)."""
    from distributed import get_worker

    from .costs import measure_rate

    return measure_rate(get_worker().state.nthreads, seconds)


# --- the executors -----------------------------------------------------------------------------

class LocalExecutor:
    """Worker processes of this machine, started with multiprocessing's spawn: what the
    plan always did. A task that can only run alone may take every free thread
    (`pools_threads`)."""

    name = "local"
    pools_threads = True

    def __init__(self):
        self.procs: dict[str, Any] = {}

    def capacity(self, jobs: int) -> tuple[int, int, int, str]:
        """(workers, threads per worker, threads in all, a note or "") for `jobs` asked for."""
        from .costs import worker_threads

        machine = torch.get_num_threads()
        note = ""
        if jobs > machine:
            note = f"[plan] {jobs} workers asked for, {machine} thread(s) here: running {machine} at a time"
            jobs = machine
        threads = worker_threads(jobs)
        return jobs, threads, machine, note

    def describe(self, jobs: int, threads: int) -> str:
        return f"{jobs} workers x {threads} thread(s)"

    def open(self, jobs: int, say: Callable[[str], None]) -> None:
        pass

    def rate(self, threads: int, jobs: int) -> float:
        from .costs import measure_worker_rate

        return measure_worker_rate(threads, jobs)

    def start(self, key: str, cfg_dict: dict, stage: str, threads: int, log: Path) -> None:
        proc = mp.get_context("spawn").Process(target=run_stage, args=(cfg_dict, stage, threads, str(log)),
                                               daemon=False)
        proc.start()
        self.procs[key] = proc

    def ended(self) -> list[Ended]:
        out = []
        for key, proc in list(self.procs.items()):
            if not proc.is_alive():
                del self.procs[key]
                out.append(Ended(key, proc.exitcode == 0, f"exit {proc.exitcode}"))
        return out

    def stop(self) -> None:
        alive = [p for p in self.procs.values() if p.is_alive()]
        for proc in alive:  # every worker first, then wait: a second signal orphans none
            proc.terminate()
        for proc in alive:
            proc.join(30)
        self.procs.clear()

    def close(self) -> None:
        pass


def jobqueue_options(cores: int, memory: str, walltime: str, workdir: str | Path, log_dir: str | Path | None = None,
                     directives: list[str] | tuple[str, ...] = (), python: str = sys.executable) -> dict:
    """dask-jobqueue's options for the plan's worker jobs: one Dask worker per job with
    `cores` threads (its tasks' torch threads) and one plan task at a time (`RESOURCE`),
    started in the project folder `workdir` with this environment's Python; `directives`
    are added to the job script as they are (e.g. "--partition=cpu" for Slurm, "-q workq"
    for PBS). The queue, account and the like may also come from Dask's configuration
    (~/.config/dask/jobqueue.yaml)."""
    return dict(cores=cores, processes=1, memory=memory, walltime=walltime, python=python, job_name="tmkd-worker",
                worker_extra_args=["--resources", f"{RESOURCE}=1"],
                job_script_prologue=[f"cd {shlex.quote(str(workdir))}", f"export OMP_NUM_THREADS={cores}"],
                job_extra_directives=list(directives), log_directory=str(log_dir) if log_dir is not None else None)


def jobqueue_class(kind: str):
    from dask_jobqueue import PBSCluster, SLURMCluster

    return {"slurm": SLURMCluster, "pbs": PBSCluster}[kind]


def job_script(kind: str, scheduler: str, **options) -> str:
    """The job script that starts one worker of a `kind` ("slurm", "pbs") cluster for a
    plan whose scheduler listens at `scheduler`: what the plan submits, and what a user
    submits by hand to add workers to a running scheduler. Starts nothing."""
    return jobqueue_class(kind).job_cls(scheduler=scheduler, name="tmkd-worker",
                                        **jobqueue_options(**options)).job_script()


class DaskExecutor:
    """The workers of a Dask distributed cluster: a LocalCluster started here (`cluster`
    "local"), worker jobs of a Slurm or PBS queue (dask-jobqueue, "slurm" or "pbs", kept at
    `jobs` workers: a job that ends is replaced), or those of a running scheduler
    (`scheduler`, an address). Each task runs in a worker process on the worker's threads,
    one task per worker at a time; a worker that dies mid-task has it rerun elsewhere."""

    name = "dask"
    pools_threads = False  # a worker's threads are its own: a task never takes another's

    def __init__(self, cluster: str = "local", scheduler: str | None = None, threads: int | None = None,
                 jobqueue: dict | None = None):
        if cluster not in CLUSTERS:
            raise ValueError(f"unknown Dask cluster {cluster!r}; one of {', '.join(CLUSTERS)}")
        self.kind, self.scheduler, self.threads, self.jobqueue = cluster, scheduler, threads, jobqueue or {}
        self.client = self.cluster = None
        self.futures: dict[str, Any] = {}
        self.submitted = 0

    def capacity(self, jobs: int) -> tuple[int, int, int, str]:
        note = ""
        if self.scheduler is None and self.kind == "local":  # this machine's threads, as the local executor
            machine = torch.get_num_threads()
            if jobs > machine:
                note = f"[plan] {jobs} workers asked for, {machine} thread(s) here: running {machine} at a time"
                jobs = machine
            threads = self.threads or max(1, machine // jobs)
        else:
            threads = self.threads or self.jobqueue.get("cores") or 1
        return jobs, threads, jobs * threads, note

    def describe(self, jobs: int, threads: int) -> str:
        where = (f"the scheduler at {self.scheduler}" if self.scheduler else
                 "a Dask LocalCluster" if self.kind == "local" else f"{self.kind} jobs (dask-jobqueue)")
        return f"{jobs} Dask workers x {threads} thread(s) ({where})"

    def open(self, jobs: int, say: Callable[[str], None]) -> None:
        from distributed import Client, LocalCluster

        if self.client is not None:
            return
        dashboard = importlib.util.find_spec("bokeh") is not None  # the dashboard's pages need bokeh
        threads = self.capacity(jobs)[1]
        if self.scheduler is not None:
            self.client = Client(self.scheduler)
        elif self.kind == "local":
            self.cluster = LocalCluster(n_workers=jobs, threads_per_worker=threads, processes=True,
                                        resources={RESOURCE: 1}, dashboard_address=":0",
                                        silence_logs=logging.ERROR)
        else:
            options = {**self.jobqueue, "cores": threads}
            self.cluster = jobqueue_class(self.kind)(**jobqueue_options(**options),
                                                     scheduler_options={"dashboard_address": ":0"})
            self.cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)  # a job that ends (walltime) is replaced
            say(f"[plan] Dask: {jobs} {self.kind} worker job(s) asked for; each runs this script:\n"
                + self.cluster.job_script())
        if self.client is None:
            self.client = Client(self.cluster)
        link = self.client.dashboard_link if dashboard else "none (pip install bokeh for one)"
        say(f"[plan] Dask scheduler {self.client.scheduler.address}, dashboard {link}")

    def rate(self, threads: int, jobs: int) -> float:
        """FLOP/s per worker, measured on the workers themselves, side by side."""
        self.client.wait_for_workers(1)
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        if not any(RESOURCE in w.get("resources", {}) for w in workers.values()):
            raise RuntimeError(f"no worker of the Dask scheduler {self.client.scheduler.address} holds the resource "
                               f"{RESOURCE}, so no task of the plan could start: start the workers with `--resources "
                               f"{RESOURCE}=1` (the script `--job-script` prints does)")
        n = max(1, min(jobs, len(workers)))
        futures = [self.client.submit(_worker_rate, 3.0, pure=False, resources={RESOURCE: 1}, key=f"tmkd-rate-{i}")
                   for i in range(n)]
        rates = self.client.gather(futures)
        return sum(rates) / len(rates)

    def start(self, key: str, cfg_dict: dict, stage: str, threads: int, log: Path) -> None:
        self.submitted += 1
        self.futures[key] = self.client.submit(run_stage, cfg_dict, stage, None, str(Path(log).resolve()),
                                               os.getcwd(), key=f"{key}#{self.submitted}", pure=False,
                                               resources={RESOURCE: 1})

    def ended(self) -> list[Ended]:
        out = []
        for key, future in list(self.futures.items()):
            if future.done():
                del self.futures[key]
                if future.status == "finished":
                    out.append(Ended(key, True))
                else:
                    exc = future.exception() if future.status == "error" else None
                    out.append(Ended(key, False, f"{type(exc).__name__}: {exc}" if exc else future.status))
        return out

    def stop(self) -> None:
        if not self.futures or self.client is None:
            return
        self.client.cancel(list(self.futures.values()))
        self.futures.clear()
        if self.cluster is None:  # a running scheduler's workers: restarted, which ends what they run
            self.client.restart(wait_for_workers=False)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:  # its workers end with it (a cancelled task stops there)
            self.cluster.close()
        self.client = self.cluster = None


# --- the command line ----------------------------------------------------------------------------

def add_arguments(parser) -> None:
    """The plan's options for where its tasks run."""
    parser.add_argument("--executor", default="local", choices=EXECUTORS,
                        help="where tasks run: local, worker processes of this machine (default); dask, the workers "
                             "of a Dask cluster (--cluster, --scheduler; docs/cluster.md)")
    parser.add_argument("--cluster", default="local", choices=CLUSTERS,
                        help="dask: a LocalCluster of --jobs workers here (default), or --jobs worker jobs of a Slurm "
                             "or PBS queue (dask-jobqueue), kept at that number while the plan runs")
    parser.add_argument("--scheduler", default=None,
                        help="dask: the address of a running Dask scheduler (tcp://host:8786) whose workers run the "
                             "tasks; they must be started with --resources tmkd_task=1 (the script --job-script prints)")
    parser.add_argument("--worker-cores", type=int, default=4,
                        help="slurm/pbs: cores of each worker job, its tasks' torch threads (default 4)")
    parser.add_argument("--worker-memory", default="16GB", help="slurm/pbs: memory of each worker job (default 16GB)")
    parser.add_argument("--walltime", default="24:00:00", help="slurm/pbs: walltime of each worker job (default 24 h)")
    parser.add_argument("--job-directive", action="append", default=[],
                        help="slurm/pbs: a line added to the job script's directives, as it is (repeat it), e.g. "
                             "--job-directive=--partition=cpu or --job-directive='-q workq'")
    parser.add_argument("--job-script", action="store_true",
                        help="slurm/pbs: print the job script of one worker and exit, submitting nothing (with "
                             "--scheduler, a script that adds a worker to that scheduler)")


def from_args(args, data_root: str | Path) -> LocalExecutor | DaskExecutor:
    """The executor the command line asks for."""
    if args.executor == "local":
        return LocalExecutor()
    jobqueue = dict(cores=args.worker_cores, memory=args.worker_memory, walltime=args.walltime, workdir=os.getcwd(),
                    log_dir=Path(data_root).resolve() / "logs" / "dask", directives=args.job_directive)
    return DaskExecutor(args.cluster, args.scheduler, args.worker_cores if args.cluster != "local" else None,
                        jobqueue)
