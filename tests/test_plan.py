"""A study's plan (tmkd_core.study, plan, scheduler, store, protocol) and the primary statistic
of docs/protocol.md."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tmkd_core import protocol
from tmkd_core.config import ABLATIONS, METHODS, PROFILE_METHODS, PROFILE_PLANS, PROFILES, method_config, with_overrides
from tmkd_core.experiment import Pipeline
from tmkd_core.plan import plan_tasks, whole_plan
from tmkd_core.protocol import widen_pairs
from tmkd_core.report import primary_comparison, seeds_needed
from tmkd_core.scheduler import (PLAN_RUNNING, Progress, Task, finish_seconds, launch_threads, needed, next_task,
                                 plan_lock_path, ready_tasks, run_plan, work_behind)
from tmkd_core.store import (keep_artefact, keep_partial, plan_wall_time, restore_artefacts, stale_partials,
                             stored_copy, stored_partial)
from tmkd_core.study import PilotNotSettled, RunSpec, Study

from conftest import ROOT


def cpu() -> Study:
    """The cpu study as PROFILE_PLANS declares it now (a test may have changed it)."""
    return Study.of("cpu")


@pytest.fixture(autouse=True)
def no_final_run_has_finished(monkeypatch):
    """The plan as it stands before any final run, whatever data/ and the store hold here."""
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: None)


def test_the_cpu_plan_pairs_student_seeds_with_teacher_seeds_in_turn():
    runs = cpu().main_runs(settled_only=False)
    primary = PROFILE_PLANS["cpu"]["primary"]
    kd = [r for r in runs if r.dataset == "cifar10" and r.method == "KD"]
    assert [r.seed for r in kd] == primary["seeds"]  # the primary seeds, the shared first ones once
    assert [r.teacher_seed for r in kd] == [0, 1] * (len(kd) // 2)
    ce = [r for r in runs if r.dataset == "cifar10" and r.method == "CE"]
    assert [r.seed for r in ce] == PROFILE_PLANS["cpu"]["seeds"]
    assert {r.method for r in runs if r.dataset == "cifar10"} == set(METHODS)
    assert {r.method for r in runs if r.dataset == "cifar100"} == {"CE", "KD", "TMKD"}
    assert {r.teacher_seed for r in runs if r.dataset == "cifar100"} == {0}
    assert len(runs) == len(set(runs))
    assert [(c.data.name, c.teacher.seed) for c in cpu().teacher_configs()] == [("cifar10", 0), ("cifar10", 1),
                                                                             ("cifar100", 0)]
    # the pilot: validation seeds below 10, never a final seed
    pilot = cpu().pilot_runs()
    assert {r.seed for r in pilot} == {0, 1} and {r.teacher_seed for r in pilot} == {0}
    assert {(r.method, r.setting) for r in pilot} == {("KD", ""), ("TMKD", ""), ("TMKD", "views=detail"),
                                                      ("TMKD", "score=class_prob"), ("KD", "tau=2"),
                                                      ("KD", "0.1 CE + 0.9 KD")}
    assert not {r.seed for r in pilot} & {r.seed for r in runs}
    baseline = PROFILE_PLANS["cpu"]["pilot"]["baseline"]
    for r in pilot:  # validation only, and compared with the pinned baseline whatever the profile adopts
        cfg = r.config("cpu")
        assert cfg.score_test is False
        if not r.setting:
            assert cfg.views.edge_mode == baseline["views.edge_mode"] and cfg.student.tau == baseline["student.tau"]
    _, tmkd_abl = cpu().ablation_runs(settled_only=False)
    groups = PROFILE_PLANS["cpu"]["ablation_groups"]
    assert len(tmkd_abl) == len(PROFILE_PLANS["cpu"]["ablation_seeds"]) * sum(len(ABLATIONS[g]) for g in groups)
    cfg = tmkd_abl[0].config("cpu")
    assert cfg.teacher.seed == tmkd_abl[0].teacher_seed and cfg.seed == tmkd_abl[0].seed
    # a seed reads the same teacher seed in every table
    assert all(r.teacher_seed == r.seed % 2 for r in runs + tmkd_abl if r.dataset == "cifar10")


def test_no_final_run_starts_before_the_pilot_has_decided(monkeypatch):
    monkeypatch.setitem(PROFILE_PLANS["cpu"], "pilot", {**PROFILE_PLANS["cpu"]["pilot"], "settled": False})
    assert not cpu().pilot_settled and Study.of("smoke").pilot_settled  # smoke has no pilot
    for ask in (lambda: cpu().main_runs(), lambda: cpu().ablation_runs(), lambda: plan_tasks(cpu(), ["pilot", "main"])):
        with pytest.raises(PilotNotSettled, match="docs/protocol.md, 'Settling the pilot'"):
            ask()
    # marked settled while a pilot run is missing: still refused
    monkeypatch.setitem(PROFILE_PLANS["cpu"]["pilot"], "settled", True)
    monkeypatch.setattr("tmkd_core.protocol.pilot_summary", lambda study: None)
    with pytest.raises(PilotNotSettled, match="marked settled but"):
        cpu().main_runs()
    assert cpu().main_runs(settled_only=False)


def test_plan_tasks_are_each_stage_once_in_dependency_order(cifar_cfg, monkeypatch):

    # the smoke plan, on the test's data root
    monkeypatch.setattr("tmkd_core.study.dataset_config", lambda profile, name, o=None: with_overrides(
        cifar_cfg, {"data.name": name, **(o or {})}))
    monkeypatch.setattr("tmkd_core.study.RunSpec.config", lambda self, profile: method_config(
        with_overrides(cifar_cfg, {"data.name": self.dataset}), self.method,
        {**dict(self.overrides), "seed": self.seed, "teacher.seed": self.teacher_seed}))
    smoke = Study.of("smoke")
    tasks = plan_tasks(smoke)
    keys = [t.key for t in tasks]
    assert len(keys) == len(set(keys))
    position = {t.key: i for i, t in enumerate(tasks)}
    for t in tasks:
        assert all(position[n] < position[t.key] for n in t.needs), t.title
    students = [t for t in tasks if t.stage == "student"]
    kd, tmkd_ablations = smoke.ablation_runs()
    specs = smoke.main_runs() + kd + tmkd_ablations  # overlapping: the ablation's default is the main TMKD
    assert {t.key for t in students} == {f"student:{Pipeline(s.config('smoke')).key('student')}" for s in specs}
    assert len(students) < len(specs)
    tmkd = next(t for t in students if t.title.startswith("TMKD seed 0"))
    assert {k.split(":")[0] for k in tmkd.needs} == {"multiview_teacher", "teacher_cache"}
    assert all(t.cost_flop > 0 for t in tasks)
    # notebook 03's weights with generic prompts: the teacher it would otherwise train unannounced
    first = smoke.dataset_config(smoke.datasets[0])
    generic = Pipeline(first).with_overrides({"text.prompts": "generic"})
    assert [t.key for t in tasks if "generic prompts" in t.title] == \
        [f"multiview_teacher:{generic.key('multiview_teacher')}"]


def _tiny(cifar_cfg, seed, **extra):
    cfg = method_config(cifar_cfg, "CE", {"seed": seed, "data.train_size": 100, "data.val_size": 50,
                                          "data.test_size": 50, "student.optim.epochs": 1,
                                          "student.optim.batch_size": 50, **extra})
    pipe = Pipeline(cfg)
    pipe.artefact("student").unlink(missing_ok=True)
    return Task("student", cfg, f"CE seed {seed}", f"student:{pipe.key('student')}", pipe.artefact("student"),
                cost_flop=1e9, partial=pipe.partial_checkpoint("student"))


def test_run_plan_runs_what_is_not_done_on_workers_and_stops_on_a_failure(cifar_cfg, tmp_path):
    said = []
    store = tmp_path / "store"
    tasks = [_tiny(cifar_cfg, 901), _tiny(cifar_cfg, 902)]
    assert run_plan(tasks, jobs=2, log_dir=tmp_path, say=said.append, store=store) == 0
    assert all(t.done() for t in tasks)
    assert any("left ~" in s and "started CE seed 901 on 1 thread(s)" in s for s in said)  # side by side
    assert said[-1].startswith("[plan 2/2 done") and "all tasks done" in said[-1]
    # the store keeps each finished record, and gives back what a wiped data root lacks
    assert all(stored_copy(t, store).read_bytes() == t.artefact.read_bytes() for t in tasks)
    [log] = (store / "logs").glob("*_plan.log")  # and what the plan said, start to end
    assert log.read_text().splitlines() == said and plan_wall_time(store / "logs")[0] == 1
    record = tasks[0].artefact.read_bytes()
    tasks[0].artefact.unlink()
    said.clear()
    assert run_plan(tasks, jobs=2, log_dir=tmp_path, say=said.append, store=store) == 0
    assert "1 artefact(s) restored" in said[0] and said[1] == "[plan] all 2 tasks done or not needed"
    assert list((store / "logs").glob("*_plan.log")) == [log]  # a start with nothing to run keeps no log
    assert tasks[0].artefact.read_bytes() == record
    # a damaged stored copy is named and not restored (its task would run again)
    tasks[0].artefact.unlink()
    stored_copy(tasks[0], store).write_text("{not json")
    said.clear()
    assert restore_artefacts(tasks, store, say=said.append) == 0 and not tasks[0].done()
    assert "not restored" in said[0] and "damaged" in said[0] and str(stored_copy(tasks[0], store)) in said[0]
    tasks[0].artefact.write_bytes(record)
    said.clear()
    # a run added after another finished (the widening rule's pairs) runs too, first
    added = _tiny(cifar_cfg, 904)
    said.clear()
    assert run_plan([tasks[0], _tiny(cifar_cfg, 906)], jobs=1, log_dir=tmp_path, say=said.append,
                    more=lambda: [] if added.done() else [tasks[0], added]) == 0
    assert added.done() and any("added 1 task(s) first: CE seed 904" in s for s in said)
    assert said[-1].startswith("[plan 3/3 done")
    said.clear()
    bad = _tiny(cifar_cfg, 903, **{"student.optim.batch_size": 500})  # more than the 100 training images
    assert run_plan(tasks + [bad], jobs=2, log_dir=tmp_path, say=said.append) == 1
    assert "2 done or not needed; 1 to run" in said[0]
    assert any(f"started CE seed 903 on {torch.get_num_threads()} thread(s)" in s for s in said)  # alone: all
    assert any("FAILED: CE seed 903" in s and "exceeds the 100 training images" in s for s in said)


def test_a_second_plan_of_a_profile_on_a_data_root_is_refused_naming_the_first(cifar_cfg, tmp_path):
    import fcntl

    task, said = _tiny(cifar_cfg, 908), []
    task.artefact.parent.mkdir(parents=True, exist_ok=True)
    task.artefact.write_text("{}")  # done: a plan that gets the lock has nothing to run
    lock = plan_lock_path([task])
    assert lock == Path(cifar_cfg.data.root) / "logs" / "plan" / f"{cifar_cfg.profile}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as other:  # what a running plan holds, whatever its log directory
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other.truncate(0)  # an earlier plan's process id gives way, as in hold_plan_lock
        other.write("4242\n")
        other.flush()
        assert run_plan([task], jobs=1, log_dir=tmp_path / "elsewhere", say=said.append) == PLAN_RUNNING
        assert "another plan of this profile (process 4242" in said[0] and "kill -TERM 4242" in said[0]
        other_profile = Task("student", with_overrides(cifar_cfg, {"profile": "quick"}), "quick", "student:q",
                             task.artefact)
        assert run_plan([other_profile], jobs=1, log_dir=tmp_path, say=said.append) == 0  # beside it: allowed
    said.clear()  # the first plan gone (its lock goes with it): the next one runs
    assert run_plan([task], jobs=1, log_dir=tmp_path, say=said.append) == 0 and "all 1 tasks done" in said[-1]
    task.artefact.unlink()


def test_run_plan_starts_the_task_with_the_longest_chain_behind_it_first(cifar_cfg, tmp_path):
    said = []
    first, head = _tiny(cifar_cfg, 910), _tiny(cifar_cfg, 911)
    tail = _tiny(cifar_cfg, 912)
    tail.needs = [head.key]  # a run waiting on another stands for a cache waiting on its teacher
    log_dir = tmp_path / "logs"  # a --log-dir not made yet
    assert run_plan([first, head, tail], jobs=1, log_dir=log_dir, say=said.append) == 0
    started = [s.split("started ")[1].split(" on ")[0] for s in said if "] started " in s]
    assert started == ["CE seed 911", "CE seed 910", "CE seed 912"]  # plan order would start 910
    assert len(list(log_dir.glob("student_*.log"))) == 3


def test_an_unfinished_tasks_last_epoch_is_kept_in_the_store_until_it_finishes(cifar_cfg, tmp_path):
    task, store, said = _tiny(cifar_cfg, 907), tmp_path / "store", []

    def save_epoch(epoch, path):  # what train.fit writes after each epoch
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"epoch": epoch, "model": {}, "optimizer": {}, "scheduler": {}, "history": []}, path)

    def epoch_in_data():
        return torch.load(task.partial, weights_only=True)["epoch"]

    save_epoch(3, task.partial)
    keep_partial(task, store)  # what the plan does every minute for each running task
    kept = stored_partial(task, store)
    assert kept.read_bytes() == task.partial.read_bytes() and kept.parent.parent.name == "partial"
    task.partial.unlink()  # a machine without this data root resumes from the stored epoch
    assert restore_artefacts([task], store, say=said.append) == 1 and epoch_in_data() == 3
    save_epoch(5, task.partial)  # a later epoch in data/ is kept; an earlier one gives way
    assert restore_artefacts([task], store, say=said.append) == 0 and epoch_in_data() == 5
    save_epoch(1, task.partial)
    assert restore_artefacts([task], store, say=said.append) == 1 and epoch_in_data() == 3
    assert "the store's epoch 3 replaces an earlier checkpoint" in said[-1]
    task.partial.unlink()
    torch.save({"epoch": 3}, kept)  # loads, but fit could not resume from it: named, not restored
    assert restore_artefacts([task], store, say=said.append) == 0 and not task.partial.exists()
    assert "not a resumable checkpoint" in said[-1] and str(kept) in said[-1]
    keep_partial(task, store)  # the task finished meanwhile: its checkpoint is gone, nothing to keep
    assert stale_partials([task], store) == []  # unfinished: its stored epoch is live
    orphan = kept.parent / "student_0123456789abcdef.pt"  # a task whose key has changed since
    orphan.write_bytes(kept.read_bytes())
    assert stale_partials([task], store) == [orphan]
    Pipeline(task.cfg).run_student()  # finished: its record is kept, the stored epoch dropped
    keep_artefact(task, store, say=said.append)
    assert stored_copy(task, store).exists() and not kept.exists()
    kept.write_bytes(orphan.read_bytes())  # an epoch kept by a machine that had not seen it finish
    assert stale_partials([task], store) == sorted([kept, orphan])


def test_prune_store_lists_then_removes_only_what_no_unfinished_task_resumes_from(tmp_path, monkeypatch, capsys):
    from tmkd_core.plan import main, whole_plan

    monkeypatch.setattr(Task, "done", lambda self: False)  # nothing finished, whatever data/ holds
    store = tmp_path / "store"
    task = next(t for t in whole_plan(Study.of("smoke")) if t.partial is not None)
    live, orphan = stored_partial(task, store), store / "partial" / "checkpoints" / "student_0123456789abcdef.pt"
    assert main(["--profile", "smoke", "--store", str(store), "--prune-store"]) == 0
    assert "has no partial/ folder" in capsys.readouterr().out
    for path in (live, orphan):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an epoch")
    assert main(["--profile", "smoke", "--store", str(store), "--prune-store", "--dry-run"]) == 0
    assert f"stale: {orphan}" in capsys.readouterr().out and orphan.exists() and live.exists()
    assert main(["--profile", "smoke", "--store", str(store), "--prune-store"]) == 0
    assert f"removed: {orphan}" in capsys.readouterr().out and not orphan.exists() and live.exists()
    with pytest.raises(SystemExit):  # no store to prune: a usage error
        main(["--profile", "smoke", "--store", "none", "--prune-store"])
    assert "--prune-store needs a store: --store none was given" in capsys.readouterr().err


def test_plan_wall_time_adds_up_each_starts_last_elapsed(tmp_path):
    def line(elapsed):
        return f"[plan 1/9 done, 1 running | elapsed {elapsed} | left ~1:00:00 (ends ~09:00)] running: KD seed 1"

    # one file holding two starts (output appended by hand), and one start of its own
    (tmp_path / "a.log").write_text("\n".join([line("0:00:00"), line("0:10:00"), "[plan] interrupted",
                                               line("0:00:00"), line("1:05:30")]) + "\n")
    (tmp_path / "b_plan.log").write_text("\n".join(["[plan] artefact store", line("0:00:00"), line("0:00:59")]))
    # starts that begin with their header line, the first of which died at once
    header = "[plan] 101 tasks, 24 done or not needed; 77 to run on 2 workers x 1 thread(s)"
    (tmp_path / "c.log").write_text("\n".join([header, line("0:00:00"), header, line("0:00:00"), line("0:00:30")]))
    (tmp_path / "notes.txt").write_text(line("9:00:00"))  # not a log
    assert plan_wall_time(tmp_path) == (5, 10 * 60 + 65 * 60 + 30 + 59 + 30)


def test_a_task_that_can_only_run_alone_takes_every_free_thread():
    # 2 threads, 2 workers, 1 thread each
    assert launch_threads(free=2, ready=1, running=0, per_worker=1) == 2  # the first teacher, alone
    assert launch_threads(free=2, ready=3, running=0, per_worker=1) == 1  # side by side
    assert launch_threads(free=1, ready=1, running=1, per_worker=1) == 1  # beside a running task
    assert launch_threads(free=0, ready=1, running=1, per_worker=1) == 0  # a lone task holds both: wait
    # 16 threads, 4 workers: a second lone-looking task beside a running one takes its share only
    assert launch_threads(free=12, ready=1, running=1, per_worker=4) == 4


def test_estimates_are_corrected_by_the_times_finished_artefacts_record(cifar_cfg, tmp_path):
    record = tmp_path / "run.json"
    record.write_text(json.dumps({"train_time_s": 30.0}))
    finished = Task("student", cifar_cfg, "KD seed 0", "student:a", record, cost_flop=1e9)
    pending = Task("student", cifar_cfg, "KD seed 1", "student:b", tmp_path / "missing.json", cost_flop=2e9)
    progress = Progress(rate=1e9, jobs=1)
    assert progress.estimate(pending) == pytest.approx(2.0)  # operations alone
    assert progress.read_records([finished, pending]).estimate(pending) == pytest.approx(60.0)  # 30x, as recorded
    # a teacher kept in the store only (a fresh clone) corrects the teachers
    root = Path(cifar_cfg.data.root)
    kept_teacher = Task("rgb_teacher", cifar_cfg, "teacher 0", "rgb_teacher:a", root / "absent" / "t0.pt",
                        cost_flop=1e9)
    teacher = Task("rgb_teacher", cifar_cfg, "teacher 1", "rgb_teacher:b", root / "absent" / "t1.pt", cost_flop=1e9)
    store = tmp_path / "store"
    stored_copy(kept_teacher, store).parent.mkdir(parents=True)
    torch.save({"info": {"train_time_s": 100.0}, "model": {}}, stored_copy(kept_teacher, store))
    assert Progress(1e9, 1).read_records([kept_teacher, teacher], store).estimate(teacher) == pytest.approx(100.0)
    # a teacher's own stage's times come first; with none, every stage's recorded times correct it
    assert Progress(1e9, 1).read_records([finished, kept_teacher, teacher], store).estimate(teacher) == \
        pytest.approx(100.0)
    assert Progress(1e9, 1).read_records([finished, teacher]).estimate(teacher) == pytest.approx(30.0)
    record.write_text("{not json")  # unreadable: skipped, never fatal
    assert Progress(1e9, 1).read_records([finished, pending]).estimate(pending) == pytest.approx(2.0)


def test_a_task_resuming_from_its_last_epoch_is_estimated_for_the_epochs_it_has_left(cifar_cfg, tmp_path):
    """Its resumable checkpoint (in the data root, else in the store) holds the epochs done: a
    student of E epochs resuming after epoch k is estimated at (E − k) / E of its work, and its
    time, once finished, corrects the estimates against that share, not the whole."""
    from dataclasses import replace as with_

    cfg = with_(cifar_cfg, student=with_(cifar_cfg.student, optim=with_(cifar_cfg.student.optim, epochs=10)))
    state = {"epoch": 4, "model": {}, "optimizer": {}, "scheduler": {}, "history": []}
    resumed = Task("student", cfg, "KD seed 0", "student:a", tmp_path / "a.json", cost_flop=10e9,
                   partial=tmp_path / "a.pt")
    torch.save(state, resumed.partial)
    fresh = Task("student", cfg, "KD seed 1", "student:b", tmp_path / "b.json", cost_flop=10e9,
                 partial=tmp_path / "b.pt")
    progress = Progress(rate=1e9, jobs=1).read_partials([resumed, fresh])
    assert progress.estimate(resumed) == pytest.approx(6.0) and progress.estimate(fresh) == pytest.approx(10.0)
    progress.finished(resumed, 12.0)  # its 6 epochs took twice their estimate: so will the fresh run's 10
    assert progress.estimate(fresh) == pytest.approx(20.0)
    # kept in the store only (a fresh clone, before the plan restores it): read there
    store = tmp_path / "store"
    kept = Task("student", cfg, "KD seed 2", "student:c", tmp_path / "c.json", cost_flop=10e9,
                partial=Path(cfg.data.root) / "absent" / "c.pt")
    from tmkd_core.store import stored_partial

    stored_partial(kept, store).parent.mkdir(parents=True)
    torch.save({**state, "epoch": 9}, stored_partial(kept, store))
    assert Progress(1e9, 1).read_partials([kept], store).estimate(kept) == pytest.approx(1.0)
    assert Progress(1e9, 1).read_partials([kept]).estimate(kept) == pytest.approx(10.0)  # without the store
    resumed.partial.write_bytes(b"damaged")  # unreadable: counted as not started, never fatal
    assert Progress(1e9, 1).read_partials([resumed]).estimate(resumed) == pytest.approx(10.0)
    # a teacher-output cache stopped after 3 of its 10 replicas (TeacherCache's count), with no
    # cache timed yet: 7/10 of its operations, corrected by what the other stages recorded
    cache = Task("teacher_cache", cfg, "cache", "teacher_cache:d", tmp_path / "teacher_d" / "meta.json", cost_flop=10e9)
    cache.artefact.parent.mkdir()
    (cache.artefact.parent / "replicas_written.json").write_text(json.dumps({"replicas": 3, "shape": [10, 5, 1, 8]}))
    record = tmp_path / "finished.json"
    record.write_text(json.dumps({"train_time_s": 30.0}))
    finished = Task("student", cfg, "KD seed 3", "student:e", record, cost_flop=10e9)
    assert Progress(1e9, 1).read_partials([cache]).estimate(cache) == pytest.approx(7.0)
    assert Progress(1e9, 1).read_records([finished]).read_partials([cache]).estimate(cache) == pytest.approx(21.0)


def test_caches_that_no_task_left_to_run_reads_are_not_built(cifar_cfg):
    missing = Path("/nonexistent")  # no artefact exists: nothing is done
    teacher = Task("rgb_teacher", cifar_cfg, "teacher", "rgb_teacher:t", missing / "t")
    cache = Task("teacher_cache", cifar_cfg, "cache", "teacher_cache:c", missing / "c", ["rgb_teacher:t"])
    student = Task("student", cifar_cfg, "student", "student:s", missing / "s", ["teacher_cache:c"])
    assert needed([teacher, cache, student]) == [teacher, cache, student]
    # the student restored from the store: its cache is not rebuilt, the teacher still is
    assert needed([teacher, cache, student], done=lambda t: t is student) == [teacher]
    # what can start: dependencies done, in plan order (a cache before the runs it unblocks)
    ce = Task("student", cifar_cfg, "CE", "student:ce", missing / "ce")
    assert ready_tasks([cache, student, ce], {"rgb_teacher:t"}) == [cache, ce]
    assert ready_tasks([student, ce], {"rgb_teacher:t", "teacher_cache:c"}) == [student, ce]


def test_a_free_worker_takes_the_primary_tasks_then_the_longest_chain_and_the_estimate_schedules_them(cifar_cfg):
    missing = Path("/nonexistent")

    def task(key, needs=(), primary=False):
        return Task(key.split(":")[0], cifar_cfg, key, key, missing / key, list(needs), primary=primary)

    # plan order: four CE runs (10 s each), then a teacher (20 s) -> its cache (5 s) -> two KD runs (10 s each)
    ce = [task(f"student:ce{i}") for i in range(4)]
    teacher = task("rgb_teacher:t")
    cache = task("teacher_cache:c", [teacher.key])
    kd = [task(f"student:kd{i}", [cache.key]) for i in range(2)]
    pending = ce + [teacher, cache] + kd
    seconds = {t.key: 20.0 if t is teacher else 5.0 if t is cache else 10.0 for t in pending}
    behind = work_behind(pending, seconds)
    assert behind[teacher.key] == 15.0 and behind[cache.key] == 10.0 and behind["student:ce0"] == 0.0
    assert next_task(ready_tasks(pending, set()), behind) is teacher  # before the CE runs listed first
    assert next_task(ce[1:], behind) is ce[1]  # equal chains: plan order
    primary = task("student:p", primary=True)
    assert next_task([teacher, primary], behind) is primary  # the primary comparison first, whatever waits
    # two workers: teacher | ce0, ce1 (0-20); cache | ce2 (20-30); ce3, kd0, kd1 -> 45 s. Taken in plan
    # order the teacher would start at 20 and its chain end at 55; 85 s of work spread evenly is 42.5.
    ends_at = {}
    assert finish_seconds(pending, {}, 2, seconds, ends_at) == 45.0
    assert ends_at[teacher.key] == 20.0 and ends_at[cache.key] == 25.0 and ends_at["student:ce0"] == 10.0
    assert set(ends_at) == {t.key for t in pending} and max(ends_at.values()) == 45.0  # what dry-run groups read
    assert finish_seconds(pending, {}, 1, seconds) == 85.0
    # the teacher already running with 5 s left: ce0 | teacher, cache (0-10); ce1, ce2; ce3, kd0; kd1 -> 40 s
    assert finish_seconds([t for t in pending if t is not teacher], {teacher.key: 5.0}, 2, seconds) == 40.0
    progress = Progress(rate=1.0, jobs=2)
    for t in pending:
        t.cost_flop = seconds[t.key]
    assert progress.left(pending, {}) == pytest.approx(45.0)


def test_the_primary_comparisons_runs_teachers_and_caches_are_marked_to_go_first(monkeypatch):
    monkeypatch.setattr("tmkd_core.protocol.check_pilot_decisions", lambda study: None)  # no pilot run here
    tasks = plan_tasks(cpu(), ["pilot", "main", "ablations"], costs=False)
    primary = PROFILE_PLANS["cpu"]["primary"]
    first = [t for t in tasks if t.primary]
    assert {t.stage for t in first} == {"rgb_teacher", "teacher_cache", "multiview_teacher", "student"}
    assert all(t.cfg.data.name == primary["dataset"] for t in first)
    students = [t for t in first if t.stage == "student"]
    assert len(students) == 2 * len(primary["seeds"]) and {t.cfg.seed for t in students} == set(primary["seeds"])
    assert not any(t.primary for t in tasks if t.cfg.data.name != primary["dataset"] or "[" in t.title)
    # the whole plan, as it stood before TMKD's teacher was chosen: the confirmatory comparison
    # and the teachers its choice reads go first too
    from dataclasses import replace

    confirmatory = PROFILE_PLANS["cpu"]["confirmatory"]
    study = cpu()
    unchosen = replace(study, confirmatory=replace(study.confirmatory, tmkd_variant=None, fusion_candidate=None,
                                                   fusion_settled=False, fusion_adopted=None))
    later = [t for t in whole_plan(unchosen) if t.primary and t.key not in {f.key for f in first}]
    assert later and all(t.cfg.data.name == confirmatory["dataset"] for t in later)
    assert {t.cfg.student.distiller for t in later if t.stage == "student"} == {"kd"}  # TMKD's teacher: not chosen
    # among them, the candidates whose choice TMKD's side waits on start before KD's side
    deciding = [t for t in later if t.decides]
    seeds = PROFILE_PLANS["cpu"]["teacher_study"]["teacher_seeds"][confirmatory["dataset"]]
    assert sorted(t.title.split(" (")[0] for t in deciding) == sorted(
        [f"teacher {v}" for v in PROFILE_PLANS["cpu"]["teacher_study"]["candidates"] for _ in seeds]
        + ["RGB teacher" for _ in seeds])  # and the RGB teachers mv_ft10 is fine-tuned from
    deciding = [t for t in deciding if t.title.startswith("teacher ")]
    pending = [t for t in whole_plan(unchosen) if t.primary]
    behind = work_behind(pending, {t.key: 1.0 for t in pending})
    kd_teacher = max((t for t in later if not t.decides), key=lambda t: behind[t.key])  # KD's teacher, runs behind it
    assert behind[kd_teacher.key] > 0 and next_task([kd_teacher, deciding[0]], behind) is deciding[0]


def test_once_tmkds_teacher_is_chosen_the_fusion_check_and_tmkds_teachers_go_first_tmkds_runs_wait(monkeypatch):
    """Chosen, fusion not settled: the fusion check's runs (and the caches they read) decide
    the setting TMKD's final runs wait on, and TMKD's teachers and caches, which no fusion
    setting enters, train meanwhile; all of them are marked to go first, TMKD's runs are not
    planned. Settled: TMKD's runs read the same teacher and cache keys."""
    from dataclasses import replace

    from tmkd_core.teacher_study import TeacherVariant

    monkeypatch.setattr("tmkd_core.plan.check_confirmatory_decisions", lambda *a, **k: None)  # no teacher here
    candidate = (("fusion.score", "cosine"), ("fusion.tau_w", 0.03))
    study = cpu()
    chosen = replace(study, confirmatory=replace(study.confirmatory, tmkd_variant=TeacherVariant.named("mv_ft10"),
                                                 fusion_candidate=candidate, fusion_settled=False, fusion_adopted=None))
    tasks = plan_tasks(chosen, ["teachers", "confirmatory"], costs=False)
    tmkd = [t for t in tasks if t.stage == "student" and t.cfg.student.distiller == "tmkd"]
    assert sorted(t.cfg.seed for t in tmkd) == [900, 900, 901, 901, 902, 902]  # the check only
    assert all(t.decides and t.primary for t in tmkd)
    by_key = {t.key: t for t in tasks}
    assert all(by_key[n].decides for t in tmkd for n in t.needs)  # the caches they read
    mv = [t for t in tasks if t.stage == "multiview_teacher" and t.cfg.data.name == "cifar100"
          and t.cfg.teacher.multiview_optim.epochs == 10 and len(t.cfg.views.views) == 3]
    assert sorted(t.cfg.teacher.seed for t in mv) == [0, 1, 2, 3]  # the study's three, and 3 for TMKD's side
    caches = [t for t in tasks if t.stage == "teacher_cache" and any(n in {m.key for m in mv} for n in t.needs)]
    assert len(caches) == 4 and all(t.decides and t.primary for t in caches)
    assert needed(caches, done=lambda t: False) == caches  # no run planned reads seed 3's: kept all the same
    assert not any(t.decides for t in tasks if t.stage == "student" and t.cfg.student.distiller == "kd")
    settled = replace(chosen, confirmatory=replace(chosen.confirmatory, fusion_settled=True))
    final = plan_tasks(settled, ["teachers", "confirmatory"], costs=False)
    runs = [t for t in final if t.stage == "student" and t.cfg.student.distiller == "tmkd"]
    assert len(runs) == 12 and {n for t in runs for n in t.needs} == {t.key for t in caches + mv}
    assert not any(t.decides for t in final if t.stage == "student")
    # the study's other teachers (its rows, read by no run) wait for the comparison's runs,
    # even the longest of them: the comparison's answer is not held up by the study's rest
    reads = {n for t in final if t.primary for n in t.needs} | {t.key for t in final if t.primary}
    rest = [t for t in final if t.stage.endswith("teacher") and t.key not in reads]
    assert rest and not any(t.primary for t in rest)
    assert {t.cfg.data.name for t in rest} == {"cifar10", "cifar100"}  # e.g. rgb_ens2 and mv_ft1 on CIFAR-100 too
    behind = work_behind(final, {t.key: 1.0 for t in final})
    longest = max(rest, key=lambda t: behind[t.key])
    assert next_task([longest, runs[0]], {**behind, runs[0].key: 0.0}) is runs[0]


def test_primary_comparison_and_the_seed_rule():
    # t(0.975, n-1) * 0.5 / sqrt(n) <= 0.5 first holds at n = 7; two teacher seeds round it to 8
    assert seeds_needed(0.002, multiple=1) == 7 and seeds_needed(0.002, multiple=2) == 8
    assert seeds_needed(0.01, multiple=2) == 18  # sd 1 point
    records = []
    diffs = [0.004, 0.006, 0.002, 0.008]
    for i, d in enumerate(diffs):
        records += [{"method": "KD", "teacher_seed": i % 2, "seed": 100 + i, "test_acc": 0.80},
                    {"method": "TMKD", "teacher_seed": i % 2, "seed": 100 + i, "test_acc": 0.80 + d},
                    {"method": "TMKD", "teacher_seed": 0, "seed": 0, "test_acc": 0.5, "setting": "views=detail"}]
    p = primary_comparison(records)
    assert p["pairs"] == 4 and p["teacher_seeds"] == [0, 1] and p["machines"] == {"unknown": 4}
    on = [dict(r, cpu_model="AMD EPYC" if r["seed"] < 102 or (r["seed"] == 102 and r["method"] == "KD") else "Intel")
          for r in records]
    assert primary_comparison(on)["machines"] == {"AMD EPYC": 2, "mixed": 1, "Intel": 1}
    assert p["diff"] == pytest.approx(0.5) and p["per_teacher_diff"] == pytest.approx({0: 0.3, 1: 0.7})
    sd = 100 * (sum((d - 0.005) ** 2 for d in diffs) / 3) ** 0.5
    assert p["half_width"] == pytest.approx(3.182446 * sd / math.sqrt(4), rel=1e-4)
    assert p["verdict"] == "TMKD beats KD" and p["ci_low"] > 0
    wide = primary_comparison(records, tie_margin=0.05)  # the same runs read against TMKD's own gain
    assert wide["verdict"] == "TMKD beats KD"
    tie = primary_comparison([dict(r, test_acc=0.80 + (r["test_acc"] - 0.80) / 10 - 0.0005) if r["method"] == "TMKD"
                              else r for r in records])
    assert tie["ci_low"] < 0 < tie["ci_high"] and tie["verdict"] == "a tie within ±0.5 point"
    with pytest.raises(ValueError, match="1 paired runs, need at least 2"):
        primary_comparison(records[:3])


def test_the_primary_report_waits_for_every_pair_then_writes_its_table(monkeypatch, tmp_path, capsys):
    import tmkd_core.plan as plan

    seeds = PROFILE_PLANS["cpu"]["primary"]["seeds"]
    last = (max(seeds), "TMKD")

    def finished(spec, profile):  # every primary run but the last; TMKD 0.1-0.3 point above KD
        if (spec.seed, spec.method) == last:
            return None
        gain = 0.001 * (1 + spec.seed % 3) if spec.method == "TMKD" else 0.0
        return {"seed": spec.seed, "val_acc": 0.8, "test_acc": 0.8 + gain, "run_key": f"{spec.method}{spec.seed}",
                "train_time_s": 1.0, "config": {"teacher": {"seed": spec.teacher_seed}}, "cpu_model": "A",
                "history": []}

    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: finished(spec, profile))
    assert plan.main(["--profile", "cpu", "--primary-report", "--out-dir", str(tmp_path)]) == 1
    assert f"waits for 1 run(s): TMKD seed {max(seeds)}" in capsys.readouterr().err
    last = None
    assert plan.main(["--profile", "cpu", "--primary-report", "--out-dir", str(tmp_path)]) == 0
    table = (tmp_path / "tables" / "primary.md").read_text()
    gains = [0.1 * (1 + seed % 3) for seed in seeds]
    assert f"{sum(gains) / len(gains):+.2f} ± " in table and "TMKD beats KD" in table and f"A: {len(seeds)}" in table
    results = json.loads((tmp_path / "results" / "primary.json").read_text())
    assert len(results["runs"]) == 2 * len(seeds) and results["primary"]["pairs"] == len(seeds)
    assert results["primary"]["per_cpu"]["A"]["diff"] == pytest.approx(results["primary"]["diff"])
    per_teacher = results["primary"]["per_teacher"]
    assert [per_teacher[t]["pairs"] for t in ("0", "1")] == [len(seeds) // 2] * 2
    assert per_teacher["0"]["diff"] == pytest.approx(results["primary"]["per_teacher_diff"]["0"])


def test_the_widening_rule_adds_pairs_while_the_interval_is_wide():
    seeds = [100, 101, 102, 103]
    wide = {100: -1.0, 101: 1.0, 102: -1.0, 103: 1.0}  # sd 1.15 points: half-width 1.84
    assert widen_pairs(seeds, {s: 0.1 * d + 0.3 for s, d in wide.items()}, 2) == seeds  # half-width 0.18
    assert widen_pairs(seeds, wide, 2) == seeds + [104, 105]  # one more pair per teacher seed
    # it reads the spread only: the same spread around another mean widens alike
    assert widen_pairs(seeds, {s: d + 5.0 for s, d in wide.items()}, 2) == seeds + [104, 105]
    assert widen_pairs(seeds, {s: wide[s] for s in seeds[:3]}, 2) == seeds  # a pair still running: wait
    wider = {**wide, 104: -1.0, 105: 1.0}
    assert widen_pairs(seeds, wider, 2) == seeds + [104, 105, 106, 107]
    assert widen_pairs(seeds, wider, 2, most=5) == seeds + [104]  # never past MAX_PAIRS


def test_primary_pairs_are_widened_from_their_runs_and_run_first(monkeypatch):

    finished = {("KD", 100): 0.80, ("TMKD", 100): 0.79, ("KD", 101): 0.80, ("TMKD", 101): 0.82}
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: (
        {"test_acc": finished[spec.method, spec.seed]} if (spec.method, spec.seed) in finished else None))
    monkeypatch.setitem(PROFILE_PLANS["cpu"], "primary", {**PROFILE_PLANS["cpu"]["primary"], "seeds": [100, 101]})
    assert cpu().primary_seeds() == [100, 101, 102, 103]  # -1 and +2 points: far wider than ±0.5
    finished.update({("KD", 102): 0.80, ("TMKD", 102): 0.805, ("KD", 103): 0.80, ("TMKD", 103): 0.805})
    assert cpu().primary_seeds() == [100, 101, 102, 103, 104, 105]
    runs = cpu().main_runs(settled_only=False)
    assert [r.seed for r in runs if r.method == "TMKD" and r.dataset == "cifar10"] == list(range(100, 106))
    ordered = cpu().in_plan_order(runs + cpu().pilot_runs())
    assert [(r.method, r.seed) for r in ordered[:12]] == [(m, s) for s in range(100, 106) for m in ("KD", "TMKD")]
    rest = ordered[12:]
    assert sorted(rest, key=lambda r: (r.dataset != "cifar10", r.teacher_seed)) == rest


def test_finished_records_are_read_from_the_data_root_or_else_the_store(cifar_cfg, monkeypatch, tmp_path):
    from tmkd_core.study import finished_record

    monkeypatch.undo()  # the real finished_record
    spec = RunSpec("cifar10", "CE", 905)
    cfg = method_config(cifar_cfg, "CE", {"seed": 905, "data.train_size": 100, "data.val_size": 50,
                                          "data.test_size": 50, "student.optim.epochs": 1,
                                          "student.optim.batch_size": 50})
    monkeypatch.setattr(RunSpec, "config", lambda self, profile: cfg)
    monkeypatch.setitem(PROFILE_PLANS["cpu"], "store", str(tmp_path / "store"))
    pipe = Pipeline(cfg)
    pipe.run_path.unlink(missing_ok=True)
    assert cpu().finished_record(spec) is None
    assert finished_record(spec, "cpu", None) is None
    record = pipe.run_student()
    assert cpu().finished_record(spec)["test_acc"] == record["test_acc"]
    kept = tmp_path / "store" / pipe.run_path.relative_to(Path(cfg.data.root))  # a fresh clone: the store only
    kept.parent.mkdir(parents=True)
    pipe.run_path.rename(kept)
    assert cpu().finished_record(spec)["test_acc"] == record["test_acc"]


def test_a_store_made_in_another_environment_is_named_when_the_pilot_is_not_found(monkeypatch, tmp_path):
    """A newer text library or a CPU whose `auto` precision differs changes every key: the
    plan must say so instead of only "0 of its 12 runs are finished"."""
    from tmkd_core.utils import run_metadata

    here = run_metadata()["packages"]
    monkeypatch.setitem(PROFILE_PLANS["cpu"], "store", str(tmp_path))
    (tmp_path / "runs").mkdir()

    def stored(name, profile="cpu", precision="float32", **packages):
        record = {"config": {"profile": profile}, "packages": {**here, **packages},
                  "precision": {"frozen_teacher": precision}}
        (tmp_path / "runs" / name).write_text(json.dumps(record))

    stored("same.json")
    assert protocol.store_drift(cpu()) == []
    stored("text.json", **{"sentence-transformers": "0.0.1"})
    stored("text2.json", **{"sentence-transformers": "0.0.1"})
    stored("bf16.json", precision="bfloat16")  # the cpu profile pins float32 on every CPU
    stored("other.json", profile="quick", numpy="0.0.1")  # another profile's record
    drift = protocol.store_drift(cpu())
    assert drift == ["frozen teacher in bfloat16 there, float32 here (1 record)",
                     f"sentence-transformers 0.0.1 there, {here['sentence-transformers']} here (2 records)"]
    message = protocol.pilot_progress(cpu())  # the fixture: no pilot run is found
    assert message.startswith(f"0 of its {len(cpu().pilot_runs())} runs are finished; this environment differs")
    assert drift[1] in message and "make setup" in message
    monkeypatch.setattr(protocol, "store_drift", lambda study: drift[:1])  # make setup cannot change a precision
    assert drift[0] in protocol.pilot_progress(cpu()) and "make setup" not in protocol.pilot_progress(cpu())


def test_the_pilot_decision_rule_and_its_report(monkeypatch, tmp_path):
    """pilot_summary on made-up validation accuracies: a variant is adopted only above
    +DECISION_MARGIN, KD's floor is checked, and the seed rule sizes the primary pairs."""

    gain = {("KD", ""): 0.0, ("KD", "tau=2"): 0.004, ("KD", "0.1 CE + 0.9 KD"): 0.002,
            ("TMKD", ""): 0.005, ("TMKD", "views=detail"): -0.01, ("TMKD", "score=class_prob"): 0.0}
    # the cpu profile as it was before its pilot settled, whatever it adopted since
    unsettled = PROFILES["cpu"]
    monkeypatch.setitem(PROFILES, "cpu", lambda: {**unsettled(), "fusion": {"score": "cosine"},
                                                  "views": {"edge_mode": "enhance", "hf_mode": "enhance"}})
    monkeypatch.setitem(PROFILE_METHODS, "cpu", {})
    monkeypatch.setitem(PROFILE_PLANS["cpu"], "pilot",
                        {**PROFILE_PLANS["cpu"]["pilot"], "settled": False, "adopted": []})

    def record(spec, profile):  # each pilot run's record, without training; no final run has finished
        if spec not in cpu().pilot_runs():
            return None
        val = 0.79 + gain[spec.method, spec.setting] + (0.003 * spec.seed if spec.method == "TMKD" else 0.0)
        return {"val_acc": val, "test_acc": None, "seed": spec.seed, "run_key": "k", "train_time_s": 1.0,
                "config": {"teacher": {"seed": spec.teacher_seed}}}

    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: record(spec, profile))
    table, decided = protocol.write_pilot_report(cpu(), tmp_path / "figures")
    assert decided["adopted"] == {"KD [tau=2]": True, "KD [0.1 CE + 0.9 KD]": False,
                                  "TMKD [views=detail]": False, "TMKD [score=class_prob]": False}
    assert decided["kd_val"] == pytest.approx(79.0) and decided["kd_reaches_floor"]
    assert decided["sd_diff"] == pytest.approx(100 * 0.003 / math.sqrt(2))  # TMKD - KD: 0.5 and 0.8 points
    assert decided["pairs_needed"] == seeds_needed(0.003 / math.sqrt(2), multiple=2)
    assert table["val Δ (points)"].iloc[0] == pytest.approx(0.65)
    assert (tmp_path / "figures/tables/pilot.md").exists()
    written = json.loads((tmp_path / "figures/results/pilot.json").read_text())
    assert len(written["runs"]) == 12 and all(r["test_acc"] is None for r in written["runs"])
    # settling: the profile must list what the rule adopted, and its settings must hold it
    monkeypatch.setitem(PROFILE_PLANS["cpu"]["pilot"], "settled", True)
    with pytest.raises(PilotNotSettled, match=r"rule adopted \['KD \[tau=2\]'\], the study says \[\]"):
        cpu().main_runs()
    monkeypatch.setitem(PROFILE_PLANS["cpu"]["pilot"], "adopted", ["KD [tau=2]"])
    with pytest.raises(PilotNotSettled, match="KD has student.tau = 4.0, not 2.0"):
        cpu().main_runs()
    monkeypatch.setitem(PROFILE_METHODS, "cpu", {"KD": {"student.tau": 2.0}})
    assert cpu().main_runs()  # settled as the rule decided


def test_a_new_study_is_declared_in_one_file_and_the_plans_dry_run_lists_its_tasks(tmp_path, monkeypatch, capsys):
    import tmkd_core.plan as plan

    # two methods, one comparison: nothing else is written, no code is touched
    declared = {"profile": "smoke", "datasets": ["cifar10"], "teacher_seeds": [0], "seeds": [0, 1],
                "methods": ["KD", "TMKD"], "primary": {"dataset": "cifar10", "methods": ["KD", "TMKD"], "seeds": [0, 1]},
                "ablation_seeds": []}
    path = tmp_path / "two_methods.json"
    path.write_text(json.dumps(declared))
    study = Study.load(path)
    assert study.name == "two_methods" and study.primary.reference == "KD" and study.primary.method == "TMKD"
    assert Study.of(str(path)).main_runs() == study.main_runs()  # a notebook's `profile` may name the file
    assert [(r.method, r.seed) for r in study.main_runs()] == [("KD", 0), ("KD", 1), ("TMKD", 0), ("TMKD", 1)]
    monkeypatch.setattr(plan, "measure_worker_rate", lambda threads, jobs: 1e9)  # no timing, no dataset read
    monkeypatch.setattr(plan, "stage_flop", lambda pipe, stage: 1e9)
    monkeypatch.setattr(Task, "done", lambda self: False)
    assert plan.main(["--study", str(path), "--parts", "main", "--store", "none", "--dry-run"]) == 0
    listed = [line.split(maxsplit=2)[2] for line in capsys.readouterr().out.splitlines() if line.startswith("todo")]
    runs = [t for t in listed if t.split(" seed ")[0] in ("KD", "TMKD")]
    assert runs == ["KD seed 0 (cifar10, teacher seed 0)", "TMKD seed 0 (cifar10, teacher seed 0)",
                    "KD seed 1 (cifar10, teacher seed 0)", "TMKD seed 1 (cifar10, teacher seed 0)"]  # pairs first
    assert "RGB teacher (cifar10 teacher seed 0)" in listed and any(t.startswith("multi-view teacher") for t in listed)
    assert not any(t.startswith(("CE ", "DKD")) for t in listed)
    # a mistake in the file is named with what is available
    path.write_text(json.dumps({**declared, "methods": ["KD", "TMDK"]}))
    with pytest.raises(SystemExit):
        plan.main(["--study", str(path), "--dry-run"])
    err = capsys.readouterr().err
    assert str(path) in err and "unknown method(s) ['TMDK']" in err and "available: CE, KD" in err
    assert "usage:" not in err  # the message alone, not the usage text above it
    from tmkd_core.study import StudyError

    for wrong, says in [({"seed": [0]}, r"unknown key\(s\) \['seed'\]; a study has: profile, datasets"),
                        ({"datasets": ["cifar11"]}, r"dataset 'cifar11': .*valid values: cifar10, cifar100"),
                        ({"seeds": []}, r"a study needs \"seeds\""),
                        ({"primary": {"dataset": "cifar10", "methods": ["KD", "TMKD"]}},
                         r"\['primary'\]: needs \"seeds\""),
                        ({"primary": {**declared["primary"], "seedz": [2]}}, r"\['primary'\]: unknown key\(s\) \['seedz'\]"),
                        ({"pilot": {"dataset": "cifar10", "methods": ["KD"]}}, r"lacks the key 'teacher_seed'"),
                        ({"teacher_study": {"teacher_seeds": {"cifar10": [0]}, "variants": ["mv_ft100"],
                                            "reference": "rgb", "candidates": []}}, r"available: rgb, rgb_ft1"),
                        ({"per_dataset": {"cifar100": {"seeds": [0]}}}, r"\['cifar100'\] not among the study's"),
                        ({"secondary_confirmatory": PROFILE_PLANS["cpu"]["secondary_confirmatory"]},
                         r"\['secondary_confirmatory'\]: .* the study's \"confirmatory\" entry, which it lacks")]:
        path.write_text(json.dumps({**declared, **wrong}))
        with pytest.raises(StudyError, match=says) as caught:
            Study.load(path)
        assert str(caught.value).startswith(str(path))  # the file is named
    # a study file never writes over the committed figures of the built-in cpu study
    (tmp_path / "cpu.json").write_text(json.dumps(declared))
    assert Study.load(tmp_path / "cpu.json").figures_dir == "build/cpu/figures" and cpu().figures_dir == "figures"
    assert Study.load(tmp_path / "cpu.json").command == f"--study {tmp_path / 'cpu.json'}"


def test_the_secondary_comparison_runs_after_the_rest_of_the_plan(monkeypatch):
    """docs/protocol.md fixes its order: after the teacher study's rows. Its runs, and the
    teachers and caches only it reads, are `later`: a free worker takes them only when no
    other task can start, however much work waits behind them; the teacher study's CIFAR-10
    rows it reads too keep their place."""
    monkeypatch.setattr("tmkd_core.plan.check_confirmatory_decisions", lambda *a, **k: None)  # no check run here
    tasks = plan_tasks(cpu(), ["teachers", "confirmatory", "secondary"], costs=False)
    later = [t for t in tasks if t.later]
    secondary = PROFILE_PLANS["cpu"]["secondary_confirmatory"]
    students = [t for t in later if t.stage == "student"]
    assert len(students) == 2 * 4 * 3 and {t.cfg.data.name for t in later} == {"cifar10"}
    assert sorted({t.cfg.seed for t in students}) == [secondary["seed_base"] + 10 * t + i
                                                      for t in range(4) for i in range(3)]
    assert not any(t.primary for t in later)
    teachers = [t for t in later if t.stage.endswith("teacher")]
    assert sorted({t.cfg.teacher.seed for t in teachers}) == [2, 3]  # 0-1 are the teacher study's rows
    rows = [t for t in tasks if t.stage == "multiview_teacher" and t.cfg.data.name == "cifar10"
            and t.cfg.teacher.multiview_optim.epochs in (10, 30) and t.cfg.teacher.teacher_init != "scratch"]
    assert sorted((t.cfg.teacher.seed, t.later) for t in rows) == [
        (0, False), (0, False), (1, False), (1, False), (2, True), (2, True), (3, True), (3, True)]
    by_key = {t.key: t for t in tasks}
    assert {n for t in students for n in t.needs if by_key[n].stage == "teacher_cache"} <= {t.key for t in later}
    rest = [t for t in tasks if not t.later and not t.primary]
    behind = work_behind(tasks, {t.key: 1.0 for t in tasks})
    first_teacher = max(teachers, key=lambda t: behind[t.key])
    row = min(rest, key=lambda t: behind[t.key])
    assert behind[first_teacher.key] > behind[row.key]  # more waits behind it, and yet
    assert next_task([first_teacher, row], behind) is row
    assert next_task([first_teacher], behind) is first_teacher  # no worker is left idle for the order
    # nor does it reorder the rest: no work of its counts behind a row it reads too
    for row in rows[:4]:
        assert by_key[row.key].later == 0 and behind[row.key] == work_behind(
            [t for t in tasks if not t.later], {t.key: 1.0 for t in tasks})[row.key]
    assert {r.key for r in rows[:4]} <= {n for t in later for n in t.needs}  # though its caches read them
    # without the part, none of it is planned, and the rest is the same plan
    without = plan_tasks(cpu(), ["teachers", "confirmatory"], costs=False)
    assert not any(t.later for t in without)
    assert [(t.key, t.primary, t.decides) for t in without] == [(t.key, t.primary, t.decides) for t in tasks
                                                               if not t.later]
    # its order needs the teacher study's rows in the plan
    from tmkd_core.teacher_report import DecisionMismatch

    with pytest.raises(DecisionMismatch, match="add teachers to --parts"):
        plan_tasks(cpu(), ["confirmatory", "secondary"], costs=False)


def test_the_ensemble_follow_up_runs_kd_from_the_ensemble_after_the_secondary(monkeypatch):
    """docs/protocol.md, "Follow-up: KD from the RGB ensemble": only KD's 12 runs from the
    ensemble are new (TMKD's and the reference KD's are the confirmatory comparison's), with
    RGB teacher 503 and four ensemble caches, each reading both of its RGB teachers; all of it
    after the secondary comparison (`later` 2)."""
    monkeypatch.setattr("tmkd_core.plan.check_confirmatory_decisions", lambda *a, **k: None)  # no check run here
    monkeypatch.setattr("tmkd_core.plan.check_follow_up_decisions", lambda *a, **k: None)  # reads records
    study = cpu()
    parts = ["teachers", "confirmatory", "secondary", "follow_up"]
    tasks = plan_tasks(study, parts, costs=False)
    by_key = {t.key: t for t in tasks}
    mine = [t for t in tasks if t.later == 2]
    students = [t for t in mine if t.stage == "student"]
    assert len(students) == 12 and {t.cfg.student.teacher for t in students} == {"ensemble"}
    assert {t.cfg.student.distiller for t in students} == {"kd"} and {t.cfg.data.name for t in mine} == {"cifar100"}
    assert sorted(t.cfg.seed for t in students) == [200 + 10 * t + i for t in range(4) for i in range(3)]
    caches = [t for t in mine if t.stage == "teacher_cache"]
    assert len(caches) == 4
    for cache in caches:  # each reads its two RGB teachers, seeds t and 500 + t
        seeds = sorted(by_key[n].cfg.teacher.seed for n in cache.needs)
        assert [by_key[n].stage for n in cache.needs] == ["rgb_teacher"] * 2 and seeds[1] == seeds[0] + 500
    assert [(t.stage, t.cfg.teacher.seed) for t in mine if t.stage == "rgb_teacher"] == [("rgb_teacher", 503)]
    # the teacher study's RGB teachers 500-502 keep their place; TMKD's runs and KD's from rgb_ft30 are the
    # confirmatory comparison's tasks, not new ones
    follow_up, conf = study.ensemble_follow_up, study.confirmatory
    shared = set(follow_up.runs([0, 1, 2, 3])) & set(conf.runs([0, 1, 2, 3]))
    assert len(shared) == 12 and {s.method for s in shared} == {"TMKD"}
    assert set(follow_up.reference_runs([0, 1, 2, 3])) == {s for s in conf.runs([0, 1, 2, 3]) if s.method == "KD"}
    assert len(tasks) == len(plan_tasks(study, parts[:3], costs=False)) + len(mine)
    # after the secondary: a free worker takes one of its tasks only when no secondary task can start
    secondary = next(t for t in tasks if t.later == 1)
    behind = work_behind(tasks, {t.key: 1.0 for t in tasks})
    assert next_task([caches[0], secondary], behind) is secondary and next_task([caches[0]], behind) is caches[0]
    # its order needs the secondary comparison in the plan
    from tmkd_core.teacher_report import DecisionMismatch

    with pytest.raises(DecisionMismatch, match="runs after teachers, confirmatory, secondary .*: add secondary to --parts"):
        plan_tasks(study, ["teachers", "confirmatory", "follow_up"], costs=False)


def test_the_factorial_follow_up_adds_only_its_24_crossed_runs_last(monkeypatch):
    """docs/protocol.md, "Follow-up: what earns TMKD's CIFAR-100 gain, teacher × terms": KD from
    mv_ft10 and TMKD from rgb_ft30 at the confirmatory seeds, reading the teachers and caches the
    confirmatory runs read (nothing else new); after the ensemble follow-up (`later` 3)."""
    monkeypatch.setattr("tmkd_core.plan.check_confirmatory_decisions", lambda *a, **k: None)  # no check run here
    monkeypatch.setattr("tmkd_core.plan.check_follow_up_decisions", lambda *a, **k: None)  # reads records
    monkeypatch.setattr("tmkd_core.plan.check_factorial_decisions", lambda *a, **k: None)
    study = cpu()
    parts = ["teachers", "confirmatory", "secondary", "follow_up", "factorial"]
    tasks = plan_tasks(study, parts, costs=False)
    before = plan_tasks(study, parts[:4], costs=False)
    mine = [t for t in tasks if t.later == 3]
    assert len(tasks) == len(before) + 24 and len(mine) == 24 and {t.stage for t in mine} == {"student"}
    assert {(t.cfg.student.distiller, t.cfg.views.views) for t in mine} == {
        ("kd", ("rgb", "edge", "hf")), ("tmkd", ("rgb",))}
    assert sorted({t.cfg.seed for t in mine}) == [200 + 10 * t + i for t in range(4) for i in range(3)]
    # each reads the cache the confirmatory run from the same teacher reads
    for t in mine:
        same_teacher = [c for c in before if c.stage == "student" and c.cfg.seed == t.cfg.seed and not c.later
                        and c.cfg.views.views == t.cfg.views.views]
        assert len(same_teacher) == 1 and t.needs == same_teacher[0].needs, t.title
    assert [(t.key, t.later) for t in before] == [(t.key, t.later) for t in tasks if t.later != 3]
    # after the follow-up: its order needs the follow-up in the plan
    from tmkd_core.teacher_report import DecisionMismatch

    with pytest.raises(DecisionMismatch, match="runs after teachers, confirmatory, secondary, follow_up .*: add follow_up"):
        plan_tasks(study, ["teachers", "confirmatory", "secondary", "factorial"], costs=False)
    with pytest.raises(DecisionMismatch, match=r"add confirmatory to --parts"):  # it reuses the confirmatory runs
        plan_tasks(study, ["teachers", "secondary", "follow_up", "factorial"], costs=False)


def test_the_plan_refuses_a_factorial_entry_that_departs_from_the_design(monkeypatch):
    """check_factorial_decisions runs in plan_tasks: an entry that is not crossed stops the plan."""
    from dataclasses import replace

    from tmkd_core.teacher_report import DecisionMismatch

    monkeypatch.setattr("tmkd_core.plan.check_confirmatory_decisions", lambda *a, **k: None)  # no check run here
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: {"test_acc": 0.5})
    study = cpu()
    wrong = replace(study, factorial_follow_up=replace(study.factorial_follow_up, crossed=False))
    with pytest.raises(DecisionMismatch, match=r"\['factorial_follow_up'\]: the factorial follow-up crosses"):
        plan_tasks(wrong, ["teachers", "confirmatory", "secondary", "follow_up", "factorial"], costs=False)
    assert len(plan_tasks(study, ["teachers", "confirmatory", "secondary", "follow_up", "factorial"], costs=False))


def test_a_missing_dataset_stops_the_plan_with_one_line_naming_it(monkeypatch, capsys):
    """The dataset's own message (the paths tried, the fix) and exit status 2, not a traceback."""
    from tmkd_core import plan
    from tmkd_core.data import DatasetNotFound

    def missing(*args, **kwargs):
        raise DatasetNotFound("dataset 'cifar100' not found. Tried: /nowhere/cifar100-png.tar.gz")

    monkeypatch.setattr(plan, "plan_tasks", missing)
    assert plan.main(["--profile", "cpu", "--parts", "main", "--store", "none", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "[plan] dataset 'cifar100' not found. Tried: /nowhere/cifar100-png.tar.gz"


def test_make_reproduce_runs_a_study_file_under_build_never_over_the_committed_figures(tmp_path):
    import os
    import subprocess

    # what the caller's make or shell set would change the commands: a clean environment
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "STUDY", "PROFILE", "JOBS", "TMKD_JOBS", "PARTS")}

    def commands(*args):
        made = subprocess.run(["make", "-n", "-B", "reproduce", *args], cwd=ROOT, capture_output=True, text=True,
                              env=env)
        assert made.returncode == 0, made.stderr
        return [line for line in made.stdout.splitlines() if "tmkd_core.plan" in line or "papermill --cwd" in line]

    study = tmp_path / "mine.json"  # a prerequisite of the notebooks: an edit reruns them
    study.write_text("{}")
    mine = commands(f"STUDY={study}")
    assert mine[0].split("python ")[1] == f"-m tmkd_core.plan --study {study} --jobs 2 "
    assert len(mine) == 6 and all(f"-p profile {study} -p out_dir build/study-mine/figures " in c
                                  and " build/study-mine/executed/" in c for c in mine[1:])
    default = commands()
    assert default[0].split("python ")[1] == "-m tmkd_core.plan --profile cpu --jobs 2 "
    assert len(default) == 6 and all("-p profile cpu -p out_dir figures " in c for c in default[1:])
    wrong = subprocess.run(["make", "-n", "reproduce", "STUDY=mine"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert wrong.returncode != 0 and "STUDY=mine: a study file ends in .json" in wrong.stderr
