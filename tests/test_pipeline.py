"""The pipeline: stage keys, teacher outputs at the student's replica, resume, locks, damaged files."""
import json
import multiprocessing as mp
import os
import stat
import time
from pathlib import Path

import pytest
import torch

from tmkd_core import distillers
from tmkd_core.config import ExperimentConfig, method_config, neutral_paths, with_overrides
from tmkd_core.experiment import STAGES, Pipeline, TeacherNotTrained
from tmkd_core.report import gain_decomposition, group_runs, method_table, run_record
from tmkd_core.settings import leaf_paths, resolve_choices
from tmkd_core.utils import DamagedArtifact, atomic_copy, atomic_save, build_once, write_json


@pytest.fixture(scope="module")
def tiny(cifar_cfg):
    """The smoke configuration shrunk to seconds: 200 training images, one-epoch teachers."""
    return with_overrides(cifar_cfg, {
        "data.train_size": 200, "data.val_size": 100, "data.test_size": 200,
        "teacher.optim.epochs": 1, "teacher.optim.batch_size": 50, "teacher.multiview_optim.batch_size": 50,
        "student.optim.batch_size": 50, "student.optim.epochs": 2})


# --- item 1: the teacher output the student reads is computed on the image it sees ----------

def test_cached_teacher_outputs_match_the_images_the_student_sees_past_k_epochs(tiny, monkeypatch):
    cfg = method_config(tiny, "TMKD", {"student.optim.epochs": 5, "student.cache_replicas": 2, "seed": 7})
    pipe = Pipeline(cfg)
    assert pipe.replicas == 2
    seen = []
    original = distillers.Distiller.teacher_outputs

    def checked(self, batch):
        cached = original(self, batch)
        online = self.teacher(batch.x, batch.labels)  # the teacher on exactly the student's images
        seen.append((batch.replica, float((cached["logits"] - online["logits"]).abs().max()),
                     float(online["logits"].abs().max())))
        return cached

    monkeypatch.setattr(distillers.Distiller, "teacher_outputs", checked)
    pipe.run_student(force=True)
    assert [r for r, _, _ in seen[::4]] == [0, 1, 0, 1, 0]  # 4 steps an epoch; epochs 3-5 wrap to K = 2
    worst = max(err / scale for _, err, scale in seen)
    assert worst < 0.02, f"cached teacher logits differ from the online teacher by {worst:.3f} (relative)"


def test_the_student_cycles_the_same_replicas_online_and_cached(tiny):
    """Online and cached outputs give the same training (up to the cache's float16)."""
    base = method_config(tiny, "KD", {"student.cache_replicas": 1, "teacher_precision": "fp32"})
    cached = Pipeline(base).run_student()
    online = Pipeline(with_overrides(base, {"student.teacher_outputs": "online"})).run_student()
    assert cached["replicas"] == online["replicas"] == 1
    for a, b in zip(cached["history"], online["history"]):
        assert a["loss_kd"] == pytest.approx(b["loss_kd"], rel=2e-2)


# --- item 2: keys derived from what each stage reads ----------------------------------------

def _other_value(path, field, value):
    """A different valid value for a setting (None: skip)."""
    choices = field.metadata.get("choices")
    if path == "views.views":
        return ["rgb", "edge"] if tuple(value) != ("rgb", "edge") else ["rgb", "hf"]
    if path == "teacher.ensemble":
        return [0, 1] if tuple(value) != (0, 1) else [0, 2]
    if path == "teacher_precision":  # keyed by the dtype it resolves to (here, on the CPU): change that
        from tmkd_core.utils import teacher_dtype
        return "fp32" if teacher_dtype(value, torch.device("cpu")) is not None else "bf16"
    if choices is not None:
        return next((c for c in resolve_choices(choices) if c != value), None)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 0.5 if value > 0 else 0.5
    if value is None:
        return 3 if path.endswith(("size", "replicas")) else "other"
    return value + "-other"


# identity-resolved settings (tested with real files in test_text) and neutral ones are not perturbed here
SKIP = {"text.backend", "text.pretrained", "text.model"}


def _changed_stages(a: Pipeline, b: Pipeline) -> set:
    return {s for s in STAGES if a.uses(s) and b.uses(s) and a.key(s) != b.key(s)}


def _expected_stages(a: Pipeline, b: Pipeline, path: str) -> set:
    """Stages that read `path` (in either configuration), and every stage built on them."""
    direct = {s for p in (a, b) for s in STAGES if p.uses(s)
              and any(path == r or path.startswith(r + ".") for r in p.reads(s))}
    closure, grew = set(direct), True
    while grew:
        grew = False
        for p in (a, b):
            for s in STAGES:
                if p.uses(s) and s not in closure and closure & set(p.after(s)):
                    closure.add(s)
                    grew = True
    return {s for s in closure if a.uses(s) and b.uses(s)}


@pytest.mark.parametrize("method, extra", [("CE", {}), ("KD", {}), ("TMKD", {}),
                                           ("TMKD", {"teacher.teacher_init": "scratch"}),
                                           ("TMKD", {"student.teacher_outputs": "online"}),
                                           ("KD", {"student.cache_replicas": 3}),
                                           ("KD", {"student.teacher": "ensemble"}),
                                           ("KD", {"student.teacher": "ensemble", "student.teacher_outputs": "online"}),
                                           ("TMKD terms, RGB teacher", {})])
def test_every_setting_changes_exactly_the_keys_of_the_stages_that_read_it(cifar_cfg, method, extra):
    base = method_config(cifar_cfg, method, extra)
    a = Pipeline(base)
    neutral = neutral_paths()
    checked = 0
    for path, field in leaf_paths(ExperimentConfig):
        if path in SKIP:
            continue
        value = a.cfg
        for part in path.split("."):
            value = getattr(value, part)
        other = _other_value(path, field, value)
        try:
            b = Pipeline(with_overrides(base, {path: other}))
        except ValueError:  # a value another setting of this method rules out
            continue
        changed = _changed_stages(a, b)
        if path in neutral:
            assert changed == set(), f"{path} is neutral but changed the keys of {changed}"
        else:
            expected = _expected_stages(a, b, path)
            assert changed == expected, f"{method} {extra}: {path}={other!r} changed {changed}, expected {expected}"
            checked += 1
    assert checked > 40


def test_keys_hold_what_changes_numbers_outside_the_configuration(cifar_cfg, monkeypatch):
    cfg = method_config(cifar_cfg, "TMKD")
    a = Pipeline(cfg)
    threads = torch.get_num_threads()
    try:  # recorded in each run, not keyed: the plan's one-thread workers and a notebook share runs
        torch.set_num_threads(threads + 1)
        b = Pipeline(cfg)
    finally:
        torch.set_num_threads(threads)
    assert _changed_stages(a, b) == set()
    seeded = Pipeline(with_overrides(cfg, {"teacher.seed": 1}))
    assert _changed_stages(a, seeded) == {"rgb_teacher", "multiview_teacher", "teacher_cache", "student"}
    fp32, bf16 = (Pipeline(with_overrides(cfg, {"teacher_precision": p})) for p in ("fp32", "bf16"))
    assert _changed_stages(fp32, bf16) == {"teacher_cache", "student"}
    from tmkd_core import utils

    for native, same in ((False, fp32), (True, bf16)):  # one computation, one key: `auto` is what it resolves to
        monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: native)
        assert _changed_stages(Pipeline(with_overrides(cfg, {"teacher_precision": "auto"})), same) == set()
    monkeypatch.undo()
    import tmkd_core.experiment as experiment

    monkeypatch.setattr(experiment.torch, "__version__", "0.0.0")
    assert _changed_stages(a, Pipeline(cfg)) == {"rgb_teacher", "multiview_teacher", "teacher_cache", "student"}


def test_a_scratch_multiview_teacher_reads_its_own_batch_size(cifar_cfg):
    """The bug this key scheme fixes: teacher_init=scratch ignored the batch size."""
    scratch = method_config(cifar_cfg, "TMKD", {"teacher.teacher_init": "scratch"})
    a = Pipeline(scratch)
    b = Pipeline(with_overrides(scratch, {"teacher.multiview_optim.batch_size": 50}))
    c = Pipeline(with_overrides(scratch, {"teacher.optim.batch_size": 50}))
    assert a.key("multiview_teacher") != b.key("multiview_teacher")
    assert a.key("multiview_teacher") == c.key("multiview_teacher")  # the RGB teacher is not used


# --- item 3: two processes, one artefact ------------------------------------------------------

def _build_slowly(path, log):
    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)
        path.write_text(json.dumps({"value": 42}))

    return build_once(path, build, lambda p: json.loads(p.read_text()))


def test_two_processes_build_one_artefact_once(tmp_path):
    path, log = tmp_path / "artefact.json", tmp_path / "log"
    ctx = mp.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.starmap(_build_slowly, [(path, log), (path, log)])
    assert results == [{"value": 42}, {"value": 42}]
    assert log.read_text() == "built\n"


def test_atomic_writes_give_the_permissions_open_would_and_leave_no_temporary(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    written = [write_json({"a": 1}, tmp_path / "record.json"), atomic_save({"w": torch.zeros(2)}, tmp_path / "c.pt")]
    written.append(atomic_copy(written[0], tmp_path / "copy.json"))
    for path in written:  # mkstemp alone would leave them 0600: unreadable to a group sharing data/
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "copy.json", "record.json"]


def _run_in_process(cfg):
    return Pipeline(cfg).run_student()


def test_two_processes_running_the_same_student_agree(tiny, tmp_path):
    cfg = method_config(tiny, "KD", {"data.root": str(tmp_path / "data"), "seed": 3})
    # share the decoded dataset with the session, so each process starts in seconds
    (tmp_path / "data" / "cache").mkdir(parents=True)
    for f in (Path(tiny.data.root) / "cache").glob("cifar10_*.pt"):
        (tmp_path / "data" / "cache" / f.name).symlink_to(f)
    with mp.get_context("spawn").Pool(2) as pool:
        a, b = pool.map(_run_in_process, [cfg, cfg])
    assert a == b  # one trained, the other waited and read the record
    assert len(list((tmp_path / "data" / "runs").glob("*.json"))) == 1
    assert len(list((tmp_path / "data" / "checkpoints").glob("rgb_teacher_*.final.pt"))) == 1


# --- resume and damaged files ------------------------------------------------------------------

class Interrupt(Exception):
    pass


def test_a_killed_student_resumes_from_its_last_epoch(tiny, tmp_path, monkeypatch):
    cfg = method_config(tiny, "KD", {"student.optim.epochs": 3, "seed": 5})
    straight = Pipeline(cfg).run_student(force=True)
    pipe = Pipeline(cfg)
    pipe.run_path.unlink()

    def stop(epoch, record):
        if epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        pipe.run_student(on_epoch_end=stop)
    assert not pipe.run_path.exists()
    checkpoint = pipe.checkpoints / f"student_{pipe.key('student')}.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    monkeypatch.setattr("tmkd_core.train.cpu_model", lambda: "another CPU")  # resumed on another machine
    resumed = Pipeline(cfg).run_student()
    assert not checkpoint.exists()  # removed once the record is written
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert run_record("cifar10", "KD", straight)["cpu_model"] == straight["cpu_model"]
    assert run_record("cifar10", "KD", resumed)["cpu_model"] == "mixed"
    assert resumed["test_acc"] == straight["test_acc"] and resumed["val_acc"] == straight["val_acc"]
    assert resumed["history"][-1]["loss_kd"] == pytest.approx(straight["history"][-1]["loss_kd"], rel=1e-5)


def _damage(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path.read_bytes()


def test_damaged_artefacts_name_their_file_and_are_never_overwritten(tiny):
    pipe = Pipeline(method_config(tiny, "TMKD"))
    pipe.run_student()
    files = {"checkpoint": pipe.checkpoints / f"rgb_teacher_{pipe.key('rgb_teacher')}.final.pt",
             "teacher cache": pipe.cache_dir / f"teacher_{pipe.key('teacher_cache')}" / "pooled.npy",
             "run record": pipe.run_path,
             "text cache": next(f for f in pipe.cache_dir.glob("text_*.pt")
                                if torch.equal(torch.load(f, weights_only=True)["embeddings"], pipe.class_text))}
    for what, path in files.items():
        original = path.read_bytes()
        damaged = _damage(path)
        try:
            fresh = Pipeline(method_config(tiny, "TMKD"))
            with pytest.raises(DamagedArtifact, match="damaged") as err:
                if what == "text cache":
                    fresh.class_text
                elif what == "run record":
                    fresh.run_student()
                else:
                    fresh.frozen_teacher() if what == "checkpoint" else fresh.train_or_load_teacher_cache()
            assert str(path.resolve()) in str(err.value) and "Delete it" in str(err.value), what
            assert path.read_bytes() == damaged, f"the damaged {what} was overwritten"
        finally:
            path.write_bytes(original)
    # a whole checkpoint under another stage's name (copied by hand or from a store)
    path = files["checkpoint"]
    original, state = path.read_bytes(), torch.load(path, weights_only=True)
    state["info"]["stage_key"] = "0123456789abcdef"
    torch.save(state, path)
    try:
        with pytest.raises(DamagedArtifact, match="of key 0123456789abcdef"):
            Pipeline(method_config(tiny, "TMKD")).frozen_teacher()
    finally:
        path.write_bytes(original)


def test_teacher_report_trains_nothing(tiny, tmp_path):
    pipe = Pipeline(with_overrides(tiny, {"data.root": str(tmp_path / "empty")}))
    (tmp_path / "empty" / "cache").mkdir(parents=True)
    for f in (Path(tiny.data.root) / "cache").glob("cifar10_*.pt"):
        (tmp_path / "empty" / "cache" / f.name).symlink_to(f)
    with pytest.raises(TeacherNotTrained, match="not trained yet"):
        pipe.teacher_report("val")
    assert not (tmp_path / "empty" / "checkpoints").exists()


# --- item 4: tables recompute from the run records ----------------------------------------------

def test_tables_recompute_from_run_records():
    def rec(method, seed, acc):
        return run_record("cifar10", method, {"seed": seed, "val_acc": acc, "test_acc": acc, "run_key": "k",
                                              "train_time_s": 1.0})

    records = [rec("KD", 1, 0.50), rec("KD", 0, 0.40), rec("TMKD", 0, 0.43), rec("TMKD", 1, 0.52)]
    table = method_table(group_runs(records)).set_index("method")
    assert table.loc["KD", "mean"] == pytest.approx(45.0) and table.loc["KD", "sd"] == pytest.approx(7.0711, 1e-4)
    # paired by seed: differences +3 and +2 points -> mean +2.5, sd 0.707, t(1) interval 2.5 +- 12.706 * 0.5
    assert table.loc["TMKD", "Δ vs KD"] == "+2.50"
    assert table.loc["TMKD", "95% CI"] == "[-3.85, +8.85]"
    with pytest.raises(ValueError, match="no KD run to pair"):
        method_table(group_runs(records + [rec("TMKD", 2, 0.5)]))
    # the CPU a run trained on: its epochs', else (records older than per-epoch CPUs) the record's
    older = {"seed": 0, "val_acc": 0.5, "test_acc": 0.5, "run_key": "k", "train_time_s": 1.0, "cpu_model": "A",
             "history": [{"epoch": 1}, {"epoch": 2}]}
    assert run_record("cifar10", "KD", older)["cpu_model"] == "A"
    resumed = dict(older, cpu_model="B", history=[{"epoch": 1}, {"epoch": 2, "cpu_model": "B"}])
    assert run_record("cifar10", "KD", resumed)["cpu_model"] == "mixed"
    assert run_record("cifar10", "KD", dict(resumed, history=[{"cpu_model": "B"}] * 2))["cpu_model"] == "B"


def test_the_gain_decomposition_pairs_each_step_and_its_middle_steps_add_up():
    def rec(method, teacher_seed, seed, acc, setting=""):
        return {"method": method, "setting": setting, "teacher_seed": teacher_seed, "seed": seed, "test_acc": acc}

    pairs = [(0, 100), (1, 101), (0, 102)]
    kd = [0.80, 0.81, 0.79]
    control = [0.805, 0.80, 0.795]  # TMKD's terms on the RGB teacher
    tmkd = [0.79, 0.80, 0.78]
    records = [rec(m, t, s, a[i]) for m, a in (("KD", kd), ("TMKD terms, RGB teacher", control), ("TMKD", tmkd))
               for i, (t, s) in enumerate(pairs)]
    # a primary pair (KD and TMKD only, as seeds 104-113 are) and an ablation's run
    records += [rec("KD", 1, 103, 0.70), rec("TMKD", 1, 103, 0.90), rec("TMKD", 0, 100, 0.1, setting="weights=uniform")]
    table = gain_decomposition(records).set_index("difference")
    # KD from the multi-view teacher did not run: its step is left out, not an error
    assert list(table.index) == ["TMKD terms, RGB teacher − KD", "TMKD − TMKD terms, RGB teacher", "TMKD − KD"]
    assert table["pairs"].tolist() == [3, 3, 3]  # every row on the control's pairs: pair 103 is left out
    steps = table["diff"]
    assert steps.iloc[0] == pytest.approx(100 * (0.005 - 0.01 + 0.005) / 3)
    assert steps.iloc[0] + steps.iloc[1] == pytest.approx(steps.iloc[2])
    assert table.loc["TMKD − KD", "Δ (points)"] == "-1.00 ± 0.00" and table.loc["TMKD − KD", "95% CI"] == "[-1.00, -1.00]"
    # fewer than 3 pairs: no t(1) interval; a setting is its own method
    two = gain_decomposition(records, steps=[("weights", "TMKD [weights=uniform]", "TMKD")])
    assert two["pairs"].tolist() == [1] and two["95% CI"].tolist() == [""]


def test_a_record_of_other_settings_under_a_run_key_is_refused(tiny):
    pipe = Pipeline(method_config(tiny, "CE", {"seed": 11}))
    record = pipe.run_student()
    assert Pipeline(with_overrides(pipe.cfg, {"progress": True})).run_student() == record  # neutral setting
    original = pipe.run_path.read_text()
    forged = json.loads(original)
    forged["config"]["student"]["alpha"] = 9.0
    pipe.run_path.write_text(json.dumps(forged))
    try:
        with pytest.raises(DamagedArtifact, match="another configuration"):
            Pipeline(pipe.cfg).run_student()
        # a record written before a setting existed ran with its default: still read
        older = json.loads(original)
        for added in ("teacher_compile", "cpu_amp"):
            older["config"].pop(added, None)
        pipe.run_path.write_text(json.dumps(older))
        assert Pipeline(pipe.cfg).run_student()["test_acc"] == record["test_acc"]
        # a setting the run does not read may differ (it shares the run's key)...
        other = with_overrides(pipe.cfg, {"fusion.tau_w": 0.7, "teacher.lambda_a": 0.0})
        assert Pipeline(other).key("student") == pipe.key("student")
        assert Pipeline(other).run_student()["test_acc"] == record["test_acc"]
        # ...but a record missing a setting that existed, or holding an unknown one, is refused
        for forge in (lambda c: c.pop("seed"), lambda c: c["student"].update(no_such_setting=1)):
            damaged_config = json.loads(original)
            forge(damaged_config["config"])
            pipe.run_path.write_text(json.dumps(damaged_config))
            with pytest.raises(DamagedArtifact, match="another configuration"):
                Pipeline(pipe.cfg).run_student()
    finally:
        pipe.run_path.write_text(original)


def test_a_batch_larger_than_the_data_fails_before_any_teacher_trains(tiny, tmp_path):
    cfg = method_config(tiny, "KD", {"data.root": str(tmp_path / "data"), "student.optim.batch_size": 500})
    (tmp_path / "data" / "cache").mkdir(parents=True)
    for f in (Path(tiny.data.root) / "cache").glob("cifar10_*.pt"):
        (tmp_path / "data" / "cache" / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="student.optim.batch_size=500 exceeds the 200 training images"):
        Pipeline(cfg).run_student()
    assert not (tmp_path / "data" / "checkpoints").exists()


# --- KD from an ensemble of RGB teachers (docs/protocol.md, "Follow-up: KD from the RGB ensemble") ---

def test_the_ensemble_teacher_gives_the_mean_of_the_softened_distributions():
    """softmax(z_T / tau) = (1/M) sum_k softmax(z_k / tau), at the student's tau."""
    from tmkd_core.models import build_model
    from tmkd_core.teachers import EnsembleTeacher

    torch.manual_seed(0)
    members = [build_model("resnet8", 10, 3) for _ in range(2)]
    for m in members:
        for p in m.parameters():
            p.data.add_(0.3 * torch.randn_like(p))  # members that disagree
        m.eval()
    x = torch.rand(6, 3, 32, 32)
    ens = EnsembleTeacher(members, tau=4.0)
    out = ens(x, torch.zeros(6, dtype=torch.long))
    z = torch.stack([m(x)[0] for m in members])
    want = (z / 4.0).softmax(-1).mean(0)
    assert not torch.allclose((z[0] / 4).softmax(-1), want, atol=1e-3)  # the average is not one member's
    torch.testing.assert_close((out["logits"] / 4.0).softmax(-1), want, atol=1e-6, rtol=1e-5)
    assert ens.pooled_views(x).shape == (2, 6, members[0].feature_dim)  # one row per member: what a cache holds
    with pytest.raises(ValueError, match="at least two"):
        EnsembleTeacher(members[:1], tau=4.0)


def test_kd_from_an_ensemble_reads_each_rgb_teacher_through_its_cache(tiny, monkeypatch):
    cfg = method_config(tiny, "KD", {"student.teacher": "ensemble", "teacher.ensemble": [0, 500],
                                     "student.cache_replicas": 1, "seed": 3})
    pipe = Pipeline(cfg)
    members = pipe.ensemble_members
    assert [m.cfg.teacher.seed for m in members] == [0, 500]
    assert pipe.builds_on("teacher_cache") == [(m, "rgb_teacher") for m in members]
    assert "rgb_teacher" not in pipe.stages()  # the RGB teacher of its own seed is not read
    single = Pipeline(method_config(tiny, "KD", {"student.cache_replicas": 1, "seed": 3}))
    assert pipe.key("teacher_cache") != single.key("teacher_cache") and pipe.key("student") != single.key("student")
    # the cached target is the online one: each member on the student's image, averaged at tau
    seen = []
    original = distillers.Distiller.teacher_outputs

    def checked(self, batch):
        cached = original(self, batch)
        online = self.teacher(batch.x, batch.labels)
        seen.append(float((cached["logits"] - online["logits"]).abs().max() / online["logits"].abs().max()))
        return cached

    monkeypatch.setattr(distillers.Distiller, "teacher_outputs", checked)
    record = pipe.run_student(force=True)
    assert seen and max(seen) < 0.02, f"cached ensemble logits differ from the online ones by {max(seen):.3f}"
    assert record["config"]["student"]["teacher"] == "ensemble" and 0 <= record["test_acc"] <= 1
    assert record["stage_keys"]["ensemble_rgb_teachers"] == [m.key("rgb_teacher") for m in members]
    assert pipe.train_or_load_teacher_cache().array.shape[2] == 2  # each member's features, not their average
    # another second teacher is another cache and run
    other = Pipeline(with_overrides(cfg, {"teacher.ensemble": [0, 501]}))
    assert other.key("teacher_cache") != pipe.key("teacher_cache") and other.key("student") != pipe.key("student")


@pytest.mark.parametrize("overrides, match", [
    ({"student.teacher": "ensemble", "student.distiller": "tmkd"}, "needs student.distiller='kd' or 'dkd'"),
    ({"teacher.ensemble": [0]}, "at least two distinct"),
    ({"teacher.ensemble": [0, 0]}, "at least two distinct"),
    ({"teacher.ensemble": [0, -1]}, "non-negative"),
    ({"student.teacher": "ensemble", "student.distiller": "kd", "teacher.checkpoint": "t.pth",
      "teacher.checkpoint_sha256": "0" * 64,
      "teacher.input_norm": "cifar100"}, "imports one teacher for every seed")])
def test_an_ensemble_a_student_cannot_read_is_refused_naming_the_setting(cifar_cfg, overrides, match):
    from tmkd_core.settings import ConfigError

    with pytest.raises(ConfigError, match=match):
        with_overrides(cifar_cfg, overrides)
