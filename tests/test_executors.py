"""Where the plan's tasks run (tmkd_core.executors): a Dask LocalCluster of 2 workers writes
the records the local executor writes, a worker killed mid-task loses nothing, and the
Slurm and PBS job scripts of docs/cluster.md."""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time

import pytest
import torch

from tmkd_core.config import method_config
from tmkd_core.executors import RESOURCE, DaskExecutor, LocalExecutor, job_script
from tmkd_core.experiment import Pipeline
from tmkd_core.plan import main
from tmkd_core.scheduler import Task, run_plan

TIMES = ("train_time_s", "cache_time_s")  # wall times: the only fields two runs of one task may differ in


def _tasks(cfg) -> list[Task]:
    """A student run's task with those of the stages it builds on, dependencies first, as
    plan.plan_tasks lists them; every artefact, checkpoint and curve of an earlier test removed."""
    pipe, tasks = Pipeline(cfg), {}

    def add(stage):
        needs = [add(s) for s in pipe.after(stage) if s in Pipeline.BUILT_STAGES]
        key = f"{stage}:{pipe.key(stage)}"
        if key not in tasks:
            tasks[key] = Task(stage, cfg, f"{stage} seed {cfg.seed}", key, pipe.artefact(stage), needs, 1e9,
                              pipe.partial_checkpoint(stage), events=pipe.events_dir(stage))
        return key

    add("student")
    for task in tasks.values():
        _remove(task)
    return list(tasks.values())


def _remove(task: Task) -> None:
    artefact = task.artefact.parent if task.stage == "teacher_cache" else task.artefact
    shutil.rmtree(artefact, ignore_errors=True) if artefact.is_dir() else artefact.unlink(missing_ok=True)
    if task.partial is not None:
        task.partial.unlink(missing_ok=True)
    if task.events is not None:
        shutil.rmtree(task.events, ignore_errors=True)


def _tiny(cifar_cfg, method: str, seed: int, **extra):
    small = {"data.train_size": 100, "data.val_size": 50, "data.test_size": 50, "student.optim.epochs": 1,
             "student.optim.batch_size": 50, "teacher.optim.epochs": 1, "teacher.optim.batch_size": 50}
    return method_config(cifar_cfg, method, {**small, "seed": seed, "teacher.seed": 900 + seed, **extra})


def _without_times(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in TIMES}
    out["history"] = [{k: v for k, v in h.items() if k != "time_s"} for h in record["history"]]
    return out


@pytest.fixture(scope="module")
def cluster():
    """A Dask LocalCluster of 2 one-thread worker processes, each holding the one plan task
    it may run at a time (what `--executor dask` starts here, and what a cluster's workers get)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, resources={RESOURCE: 1},
                      dashboard_address=None, host="127.0.0.1", silence_logs=logging.ERROR) as local:
        yield local


def test_the_plan_on_a_dask_cluster_writes_the_records_of_the_local_executor(cifar_cfg, cluster, tmp_path,
                                                                            monkeypatch):
    # one thread per task either way (thread counts change the last bits, not the keys): the
    # local executor would give a task that runs alone both threads of this machine
    monkeypatch.setattr("tmkd_core.scheduler.launch_threads", lambda free, ready, running, per_worker: per_worker)
    monkeypatch.setattr("tmkd_core.costs.measure_worker_rate", lambda threads, jobs: 1e9)  # tested in test_plan
    kd, ce = _tiny(cifar_cfg, "KD", 921), _tiny(cifar_cfg, "CE", 922)
    tasks = _tasks(kd) + _tasks(ce)  # RGB teacher -> its output cache -> KD; CE beside them
    assert [t.stage for t in tasks] == ["rgb_teacher", "teacher_cache", "student", "student"]
    said: list[str] = []
    assert run_plan(tasks, jobs=2, log_dir=tmp_path / "local", say=said.append, executor=LocalExecutor()) == 0
    local = {t.key: t.artefact.read_bytes() for t in tasks if t.stage == "student"}
    teacher = torch.load(tasks[0].artefact, weights_only=True)
    for task in tasks:
        _remove(task)
    said.clear()
    dask = DaskExecutor(scheduler=cluster.scheduler_address)
    assert run_plan(tasks, jobs=2, log_dir=tmp_path / "dask", say=said.append, executor=dask) == 0, "\n".join(said)
    assert any("to run on 2 Dask workers x 1 thread(s)" in s for s in said)
    assert said[-1].startswith("[plan 4/4 done") and "all tasks done" in said[-1]
    # the same tasks under the same keys, with the same numbers
    for task in tasks:
        assert task.done(), task.title
    for key, record in local.items():
        ours, theirs = json.loads(record), json.loads(next(t for t in tasks if t.key == key).artefact.read_text())
        assert ours["run_key"] == theirs["run_key"] == key.split(":")[1]
        assert ours["torch_threads"] == theirs["torch_threads"] == 1
        assert _without_times(theirs) == _without_times(ours)
    again = torch.load(tasks[0].artefact, weights_only=True)
    assert again["info"]["stage_key"] == teacher["info"]["stage_key"]
    for name, weights in teacher["model"].items():
        assert torch.equal(again["model"][name], weights), name
    # each task's output went to its log, the worker's own output did not
    logs = sorted(p.name for p in (tmp_path / "dask").glob("*.log"))
    assert logs == sorted(f"{t.key.replace(':', '_')}.log" for t in tasks)
    # the plan said where the curves are; teachers and runs wrote them
    assert any("tensorboard --logdir" in s for s in said)
    assert any(f"curves in {tasks[2].events}" in s for s in said)
    assert all(any(t.events.glob("events.out.tfevents.*")) for t in tasks if t.events is not None)


def test_a_worker_killed_mid_task_loses_nothing_the_task_resumes_from_its_last_epoch(cifar_cfg, cluster, tmp_path):
    from distributed import Client

    cfg = _tiny(cifar_cfg, "CE", 923, **{"data.train_size": 400, "student.optim.epochs": 4})
    [task] = _tasks(cfg)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run it
    try:
        reference = Pipeline(cfg).run_student()  # uninterrupted, in this process
    finally:
        torch.set_num_threads(before)
    _remove(task)
    killed: dict = {}

    def kill_the_worker_after_its_first_epoch():
        with Client(cluster.scheduler_address, timeout=30) as client:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not task.done():
                if task.partial.exists():
                    state = torch.load(task.partial, weights_only=True)
                    busy = [w for w, keys in client.processing().items() if any(k.startswith(task.key) for k in keys)]
                    if busy and not task.done():
                        pid = client.run(os.getpid, workers=busy)[busy[0]]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(epoch=state["epoch"], history=state["history"], pid=pid)
                        return
                time.sleep(0.02)

    killer = threading.Thread(target=kill_the_worker_after_its_first_epoch)
    killer.start()
    said: list[str] = []
    try:
        code = run_plan([task], jobs=2, log_dir=tmp_path, say=said.append,
                        executor=DaskExecutor(scheduler=cluster.scheduler_address))
    finally:
        killer.join()
    assert code == 0, "\n".join(said)
    assert killed and 1 <= killed["epoch"] < 4, "the worker was not killed mid-task"
    record = json.loads(task.artefact.read_text())
    # resumed, not retrained: the epochs before the kill are the checkpoint's, their times included
    assert record["history"][:killed["epoch"]] == killed["history"]
    assert _without_times(record) == _without_times(reference)  # and the run ends as an uninterrupted one
    assert not task.partial.exists()
    # its curves show each epoch once: what the killed attempt wrote past its checkpoint is purged
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(task.events)).Reload()
    assert [e.step for e in events.Scalars("accuracy/val")] == [1, 2, 3, 4]
    assert [e.value for e in events.Scalars("loss/ce")] == pytest.approx([h["loss_ce"] for h in record["history"]])


def test_the_cluster_job_scripts_start_one_worker_per_job_in_the_project_folder(tmp_path, capsys):
    project = tmp_path / "my project"  # a path that needs quoting
    options = dict(cores=8, memory="32GB", walltime="12:00:00", workdir=project, log_dir=project / "data/logs/dask")
    slurm = job_script("slurm", "tcp://login1:8786", directives=["--partition=cpu", "--account=tmkd"], **options)
    lines = slurm.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("#SBATCH -J tmkd-worker", "#SBATCH -n 1", "#SBATCH --cpus-per-task=8", "#SBATCH -t 12:00:00",
                      "#SBATCH --partition=cpu", "#SBATCH --account=tmkd",
                      f"#SBATCH -o {project}/data/logs/dask/tmkd-worker-%J.out"):
        assert directive in lines, directive
    assert any(line.startswith("#SBATCH --mem=") for line in lines)
    assert f"cd {shlex.quote(str(project))}" in lines and "export OMP_NUM_THREADS=8" in lines
    [worker] = [line for line in lines if "distributed.cli.dask_worker" in line]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker tcp://login1:8786 ")
    assert "--nthreads 8" in worker and f"--resources {RESOURCE}=1" in worker and "--nanny" in worker
    assert lines.index(f"cd {shlex.quote(str(project))}") < lines.index(worker)  # the data/ the plan reads
    pbs = job_script("pbs", "tcp://login1:8786", directives=["-q workq"], **options).splitlines()
    assert "#PBS -N tmkd-worker" in pbs and "#PBS -l walltime=12:00:00" in pbs and "#PBS -q workq" in pbs
    assert any(line.startswith("#PBS -l select=1:ncpus=8:mem=") for line in pbs)
    assert any(f"--resources {RESOURCE}=1" in line for line in pbs)
    # the command line prints it and submits nothing
    assert main(["--profile", "smoke", "--executor", "dask", "--cluster", "slurm", "--scheduler", "tcp://login1:8786",
                 "--worker-cores", "2", "--job-directive=--partition=cpu", "--job-script"]) == 0
    printed = capsys.readouterr().out
    assert "#SBATCH --cpus-per-task=2" in printed and "tcp://login1:8786" in printed
    assert f"cd {shlex.quote(os.getcwd())}" in printed
    with pytest.raises(SystemExit):
        main(["--profile", "smoke", "--cluster", "slurm"])  # a cluster without the dask executor
    assert "are for --executor dask" in capsys.readouterr().err


def test_executor_dask_starts_a_local_cluster_of_one_task_workers_and_closes_it(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # this 2-core machine, wherever the test runs
    executor, said = DaskExecutor(), []  # what `--executor dask` gives, without --cluster or --scheduler
    assert executor.capacity(3) == (2, 1, 2, "[plan] 3 workers asked for, 2 thread(s) here: running 2 at a time")
    executor.open(2, said.append)
    try:
        workers = executor.client.scheduler_info(n_workers=-1)["workers"].values()
        assert [(w["nthreads"], w["resources"]) for w in workers] == [(1, {RESOURCE: 1})] * 2
        assert said[-1].startswith("[plan] Dask scheduler tcp://")
        assert executor.describe(2, 1) == "2 Dask workers x 1 thread(s) (a Dask LocalCluster)"
    finally:
        cluster = executor.cluster
        executor.close()
    assert executor.client is None and cluster.status.name == "closed"
