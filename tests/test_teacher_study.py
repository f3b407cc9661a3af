"""The teacher study and the confirmatory comparison (docs/protocol.md, "Amendment: powerful
teachers"): the variants' compute and keys, which runs the plan lists before and after the
choices, the teacher-level statistic and its widening rule, the validation choice, and the
teachers' evaluations against independent computations."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tmkd_core import teacher_eval, teacher_report, teacher_study
from tmkd_core.config import TEACHER_VARIANTS, dataset_config, with_overrides
from tmkd_core.experiment import Pipeline
from tmkd_core.report import teacher_level_comparison
from tmkd_core.study import Study
from tmkd_core.teacher_eval import evaluation_name
from tmkd_core.teacher_report import choose_variant, fusion_screen, write_teacher_report
from tmkd_core.teacher_study import TeacherVariant

ROOT = Path(__file__).resolve().parents[1]


def test_each_variants_compute_is_the_protocols_table():
    cfg = dataset_config("cpu", "cifar100")
    compute = {name: TeacherVariant.named(name).compute(cfg) for name in TEACHER_VARIANTS}
    assert compute == {"rgb": 30, "rgb_ft1": 31, "mv_ft1": 33, "mv_ft10": 60, "mv_scratch20": 60, "rgb_ft30": 60,
                       "rgb_ens2": 60}
    with pytest.raises(KeyError, match="available: rgb, rgb_ft1"):
        TeacherVariant.named("mv_ft100")


def test_the_studys_teachers_already_trained_keep_their_stored_keys():
    stored = {p.name for p in (ROOT / "artefacts" / "cpu" / "checkpoints").glob("*.final.pt")}
    study = Study.of("cpu").teacher_study
    old = [t for t in study.teachers() if t.variant.name in ("rgb", "rgb_ft1", "mv_ft1") and t.teacher_seed == 0]
    assert len(old) == 6  # both datasets
    for t in old:
        [cfg] = t.configs
        assert f"{t.variant.stage}_{Pipeline(cfg).key(t.variant.stage)}.final.pt" in stored, t.title
    # a longer fine-tuning is another teacher (its own key), not the one-epoch teacher stored before
    [mv1, mv10] = [t for v in ("mv_ft1", "mv_ft10") for t in study.teachers("cifar100")
                   if t.variant.name == v and t.teacher_seed == 0]
    assert Pipeline(mv10.configs[0]).key("multiview_teacher") != Pipeline(mv1.configs[0]).key("multiview_teacher")


def test_the_confirmatory_runs_kd_first_then_the_fusion_check_then_tmkd():
    conf = replace(Study.of("cpu").confirmatory, tmkd_variant=None, fusion_candidate=None, fusion_settled=False,
                   fusion_adopted=None)  # before the choice
    runs = conf.runs(conf.teacher_seeds)
    assert {r.method for r in runs} == {"KD"} and len(runs) == 4 * 3
    assert len({r.seed for r in runs}) == 12  # student seeds are never shared between teachers
    assert {r.teacher_seed for r in runs} == {0, 1, 2, 3}
    kd = runs[0].config("cpu")
    assert (kd.student.distiller, kd.student.teacher, list(kd.views.views)) == ("kd", "multi", ["rgb"])
    assert kd.teacher.multiview_optim.epochs == 30 and kd.data.name == "cifar100"
    candidate = (("fusion.score", "class_prob"), ("fusion.tau_w", 0.03))
    chosen = replace(conf, tmkd_variant=TeacherVariant.named("mv_ft10"), fusion_candidate=candidate)
    assert {r.method for r in chosen.runs([0, 1])} == {"KD"}  # TMKD waits for the fusion check
    check = chosen.fusion_check_runs([0, 1, 2])
    assert len(check) == 6 and all(not r.config("cpu").score_test for r in check)  # validation only
    assert {r.seed for r in check} == {900, 901, 902}
    assert {r.config("cpu").fusion.score for r in check} == {"cosine", "class_prob"}
    settled = replace(chosen, fusion_settled=True, fusion_adopted=candidate)
    assert settled.fusion_check_runs([0, 1, 2]) == check  # still read by the check of the decision
    pairs = settled.runs([0])
    tmkd = [r.config("cpu") for r in pairs if r.method == "TMKD"]
    assert len(tmkd) == 3 and all(c.fusion.score == "class_prob" and c.teacher.multiview_optim.epochs == 10
                                  for c in tmkd)
    assert sorted(r.seed for r in pairs if r.method == "KD") == sorted(c.seed for c in tmkd)  # paired


def test_the_teacher_level_statistic_by_hand():
    diffs = {0: [1.0, 1.2, 0.8], 1: [0.0, 0.2, -0.2], 2: [0.5, 0.5, 0.5]}  # points; teacher means 1, 0, 0.5
    records = [{"method": m, "teacher_seed": t, "seed": 200 + 10 * t + i, "test_acc": 0.5 + (d / 100 if m == "TMKD"
                                                                                             else 0.0)}
               for t, ds in diffs.items() for i, d in enumerate(ds) for m in ("KD", "TMKD")]
    s = teacher_level_comparison(records)
    half = 4.302652729911275 * 0.5 / math.sqrt(3)  # t(0.975, 2) sd(means) / sqrt(T)
    assert s["teachers"] == 3 and s["pairs"] == 9
    assert s["diff"] == pytest.approx(0.5) and s["teacher_means_sd"] == pytest.approx(0.5)
    assert s["half_width"] == pytest.approx(half) and s["ci_low"] == pytest.approx(0.5 - half)
    s_w2 = (0.04 + 0.04 + 0.04 + 0.04) / 6  # pooled within-teacher variance, 6 degrees of freedom
    assert s["within_teacher_sd"] == pytest.approx(math.sqrt(s_w2))
    assert s["between_teacher_sd"] == pytest.approx(math.sqrt(0.25 - s_w2 / 3))
    assert s["verdict"].startswith("inconclusive")
    # the same pairs read as independent would give a narrower interval: the unit matters
    from tmkd_core.report import primary_comparison
    assert primary_comparison(records)["half_width"] < s["half_width"]


def test_the_confirmatory_widening_rule_adds_two_teachers_while_the_teacher_means_spread(monkeypatch):
    conf = replace(Study.of("cpu").confirmatory, tmkd_variant=TeacherVariant.named("mv_ft10"), fusion_settled=True)
    means = {0: 1.0, 1: -1.0, 2: 0.5, 3: -0.4, 4: 0.1, 5: 0.0, 6: 0.2, 7: 0.1}  # teacher -> D(t), points

    def finished(spec, profile, store):
        return {"test_acc": 0.5 + (means[spec.teacher_seed] / 100 if spec.method == "TMKD" else 0.0)}

    monkeypatch.setattr("tmkd_core.study.finished_record", finished)
    assert conf.widened_teacher_seeds() == list(range(8))  # wide: up to max_teachers
    means.update({1: 0.9, 2: 1.0, 3: 1.1})  # sd 0.08 over 0-3: no teacher added
    assert conf.widened_teacher_seeds() == [0, 1, 2, 3]
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: None)  # nothing read
    assert conf.widened_teacher_seeds() == [0, 1, 2, 3]


def _record(variant, seed, val, time_s=100.0, grid=None):
    return {"dataset": "cifar100", "variant": variant, "teacher_seed": seed, "train_time_s": time_s,
            "val": {"deployed": val, **({"fusion_grid": grid} if grid else {})}}


def test_the_choice_reads_validation_only_and_takes_the_cheaper_of_a_tie():
    study = Study.of("cpu").teacher_study
    records = [_record("mv_ft10", s, 60.0 + s, time_s=50) for s in (0, 1, 2)]
    assert choose_variant(records, study, "cifar100", [0, 1, 2])["chosen"] is None  # scratch not there yet
    records += [_record("mv_scratch20", s, 60.0 + s, time_s=90) for s in (0, 1)]
    assert choose_variant(records, study, "cifar100", [0, 1, 2])["waiting_for"] == "mv_scratch20"
    records.append(_record("mv_scratch20", 2, 63.0, time_s=90))  # mean 61.33 vs 61.0
    assert choose_variant(records, study, "cifar100", [0, 1, 2])["chosen"] == "mv_scratch20"
    records[-1]["val"]["deployed"] = 62.1  # mean 61.03: within 0.1 of mv_ft10, which is cheaper
    choice = choose_variant(records, study, "cifar100", [0, 1, 2])
    assert choice["chosen"] == "mv_ft10" and set(choice["tied"]) == {"mv_ft10", "mv_scratch20"}


def test_the_fusion_screen_names_a_candidate_only_above_the_margin():
    def grid(default, best):
        return [{"score": s, "tau_w": t, "label_conditioned": best if (s, t) == ("class_prob", 0.03) else default,
                 "pred_conditioned": 0.0} for s, t in teacher_eval.FUSION_GRID]

    records = [_record("mv_ft10", s, 60.0, grid=grid(70.0, 70.3)) for s in (0, 1, 2)]
    assert fusion_screen(records, "mv_ft10", "cifar100", [0, 1, 2])["candidate"] is None  # +0.3: not more
    records = [_record("mv_ft10", s, 60.0, grid=grid(70.0, 70.5)) for s in (0, 1, 2)]
    assert fusion_screen(records, "mv_ft10", "cifar100", [0, 1, 2])["candidate"] == {"score": "class_prob",
                                                                                    "tau_w": 0.03}


@pytest.mark.slow
def test_each_teachers_evaluation_against_the_pipelines_own_and_by_hand(cifar_cfg, tmp_path, monkeypatch):
    """The smoke study (every kind: RGB, RGB fine-tuned, multi-view, ensemble) on small
    teachers: the multi-view evaluation equals `Pipeline.teacher_report` (the fused teacher's
    own forward), the ensemble the mean of its two teachers' softmax, and a kept evaluation is
    read back, not recomputed."""
    from tmkd_core.train import accuracy, predict

    monkeypatch.setattr(teacher_study, "dataset_config",
                        lambda profile, name, o=None: with_overrides(cifar_cfg, {"data.name": name, **(o or {})}))
    study = Study.of("smoke").teacher_study
    for t in study.teachers():
        for cfg in t.configs:
            Pipeline(cfg).build(t.variant.stage)
        (Path(cifar_cfg.data.root) / "evals" / evaluation_name(t)).unlink(missing_ok=True)  # computed here, not read
    payload = write_teacher_report(study, tmp_path / "figures", [tmp_path / "store"])
    assert payload["missing"] == [] and len(payload["teachers"]) == 4
    by = {(r["variant"], r["teacher_seed"]): r for r in payload["teachers"]}
    mv = [t for t in study.teachers() if t.variant.name == "mv_ft1" and t.teacher_seed == 0][0]
    own = Pipeline(mv.configs[0]).teacher_report("test")
    test = by["mv_ft1", 0]["test"]
    assert test["deployed"] == pytest.approx(100 * own["fused"], abs=1e-6)
    assert test["label_conditioned"] == pytest.approx(100 * own["fused_label_conditioned"], abs=1e-6)
    assert test["uniform"] == pytest.approx(100 * own["uniform"], abs=1e-6)
    assert all(test[f"view_{v}"] == pytest.approx(100 * own[f"view_{v}"], abs=1e-6) for v in ("rgb", "edge", "hf"))
    grid = {(g["score"], g["tau_w"]): g for g in test["fusion_grid"]}
    assert grid["cosine", 0.1]["label_conditioned"] == test["label_conditioned"]  # the default setting
    ens = [t for t in study.teachers() if t.variant.name == "rgb_ens2" and t.teacher_seed == 0][0]
    probs = []
    for cfg in ens.configs:
        pipe = Pipeline(cfg)
        model = pipe.train_or_load_rgb_teacher()[0]
        probs.append(predict(lambda x: model(x)[0], pipe.splits.test).softmax(-1))
    assert cfg.teacher.seed == 500
    assert by["rgb_ens2", 0]["test"]["deployed"] == pytest.approx(
        100 * accuracy(torch.stack(probs).mean(0), pipe.splits.test.labels), abs=1e-6)
    assert by["rgb_ens2", 0]["compute_view_epochs"] == 2 * cifar_cfg.teacher.optim.epochs
    # kept: a second report reads every evaluation back from the store
    kept = sorted((tmp_path / "store" / "evals").glob("*.json"))
    assert len(kept) == 4 and {json.loads(k.read_text())["eval_version"] for k in kept} == set(teacher_eval.EVAL_VERSION.values())
    monkeypatch.setattr(teacher_eval, "evaluate_teacher", lambda *a: pytest.fail("recomputed a kept evaluation"))
    for place in kept:
        (Path(cifar_cfg.data.root) / "evals" / place.name).unlink()  # the data root's copies gone: the store's are read
    assert write_teacher_report(study, tmp_path / "figures", [tmp_path / "store"])["teachers"] == payload["teachers"]
    assert (tmp_path / "figures" / "teacher_study.png").exists()
    table = (tmp_path / "figures" / "tables" / "teacher_study.md").read_text()
    assert "mv_ft1" in table and "rgb_ens2" in table


def test_kd_runs_finished_before_the_fusion_check_do_not_stop_the_plan(monkeypatch):
    """Chosen but not settled: KD's runs may have finished, TMKD's do not exist yet."""
    conf = replace(Study.of("cpu").confirmatory, tmkd_variant=TeacherVariant.named("mv_ft10"))
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: {"test_acc": 0.5})
    assert conf.widened_teacher_seeds() == [0, 1, 2, 3]


def test_the_plan_refuses_a_confirmatory_decision_the_rules_did_not_make(monkeypatch):
    study = Study.of("cpu").teacher_study
    grid = [{"score": s, "tau_w": t, "label_conditioned": 70.5 if (s, t) == ("class_prob", 0.03) else 70.0,
             "pred_conditioned": 0.0} for s, t in teacher_eval.FUSION_GRID]

    def record(teacher, cache_dirs=()):
        val = {"mv_ft10": 61.0, "mv_scratch20": 60.0}[teacher.variant.name]
        return {**_record(teacher.variant.name, teacher.teacher_seed, val, grid=grid), "dataset": teacher.dataset}

    monkeypatch.setattr(teacher_report, "teacher_record", record)
    check = teacher_report.check_confirmatory_decisions
    base = replace(Study.of("cpu").confirmatory, tmkd_variant=None, fusion_candidate=None, fusion_settled=False,
                   fusion_adopted=None)
    check(base, study)  # nothing chosen, nothing set
    with pytest.raises(teacher_report.DecisionMismatch, match="before its teacher is chosen"):
        check(replace(base, fusion_settled=True), study)
    candidate = (("fusion.score", "class_prob"), ("fusion.tau_w", 0.03))
    right = replace(base, tmkd_variant=TeacherVariant.named("mv_ft10"), fusion_candidate=candidate)
    check(right, study)
    with pytest.raises(teacher_report.DecisionMismatch, match="the validation rule chooses 'mv_ft10'"):
        check(replace(right, tmkd_variant=TeacherVariant.named("mv_scratch20")), study)
    with pytest.raises(teacher_report.DecisionMismatch, match="is not a candidate"):
        check(replace(right, tmkd_variant=TeacherVariant.named("mv_ft1")), study)
    with pytest.raises(teacher_report.DecisionMismatch, match="the fusion screen gives"):
        check(replace(right, fusion_candidate=None), study)
    with pytest.raises(teacher_report.DecisionMismatch, match="set before the fusion check has settled"):
        check(replace(right, fusion_adopted=candidate), study)
    # settled: adopted exactly when the student check adopts
    adopt = {"adopt": True}
    monkeypatch.setattr(teacher_report, "fusion_check_summary", lambda conf, seeds: adopt)
    check(replace(right, fusion_settled=True, fusion_adopted=candidate), study)
    with pytest.raises(teacher_report.DecisionMismatch, match="the fusion check adopts"):
        check(replace(right, fusion_settled=True), study)
    adopt["adopt"] = False
    check(replace(right, fusion_settled=True), study)
    with pytest.raises(teacher_report.DecisionMismatch, match="does not adopt"):
        check(replace(right, fusion_settled=True, fusion_adopted=candidate), study)
    monkeypatch.setattr(teacher_report, "fusion_check_summary", lambda conf, seeds: None)
    with pytest.raises(teacher_report.DecisionMismatch, match="have not all finished"):
        check(replace(right, fusion_settled=True), study)

    # a choice written before a candidate it reads has trained: refused, naming the teacher
    from tmkd_core.experiment import TeacherNotTrained

    def untrained(teacher, cache_dirs=()):
        if (teacher.variant.name, teacher.teacher_seed) == ("mv_scratch20", 2):
            raise TeacherNotTrained("no checkpoint")
        return record(teacher, cache_dirs)

    monkeypatch.setattr(teacher_report, "teacher_record", untrained)
    with pytest.raises(teacher_report.DecisionMismatch, match=r"reads teacher mv_scratch20 \(cifar100 teacher seed 2\)"
                                                              r", not trained yet: set it back to None"):
        check(right, study)


def test_the_weights_table_reads_each_multiview_teachers_selectivity():
    from tmkd_core.analysis import weights_against_views
    from tmkd_core.teacher_report import selectivity_table

    # 4 samples, 2 views, 3 classes. The right view puts logit 3 on the label, the wrong view 4
    # on another class, so the fused target is right iff the right view's weight exceeds 6/11:
    # text weights get samples 0, 1, 3 (75%), uniform none, confidence weights all.
    labels = torch.tensor([0, 1, 2, 0])
    right_view = [0, 0, 0, 1]  # rgb right on samples 0-2, edge on sample 3
    logits = torch.full((2, 4, 3), -2.0)
    for n, v in enumerate(right_view):
        logits[v, n, labels[n]] = 3.0
        logits[1 - v, n, (labels[n] + 1) % 3] = 4.0
    rgb = torch.tensor([0.9, 0.8, 0.4, 0.3])  # sample 2: the largest weight on the wrong view
    sel = weights_against_views(torch.stack([rgb, 1 - rgb]), logits, labels, ["rgb", "edge"])
    flat = weights_against_views(torch.full((2, 4), 0.5), logits, labels, ["rgb", "edge"])
    p_label = logits.softmax(-1)[:, torch.arange(4), labels].numpy()
    corr = [np.corrcoef(w, p)[0, 1] for w, p in zip(torch.stack([rgb, 1 - rgb]).numpy(), p_label)]
    teacher = {"kind": "multiview", "variant": "mv_ft10", "val": {"selectivity": sel}, "test": {"selectivity": flat}}
    records = [{**teacher, "dataset": "cifar100", "teacher_seed": 1},
               {**teacher, "dataset": "cifar10", "teacher_seed": 0},
               {"dataset": "cifar100", "kind": "rgb", "variant": "rgb_ft30", "teacher_seed": 0, "val": {}}]
    table = selectivity_table(records, chosen=("cifar100", "mv_ft10"))
    assert list(zip(table["dataset"], table["teacher seed"], table["chosen"])) == [
        ("cifar10", 0, ""), ("cifar100", 1, "yes")]  # chosen on its dataset only; the RGB teacher has no weights
    row = table.iloc[1]
    assert row["mean weight (rgb / edge)"] == "0.600 / 0.400"
    assert row["corr(w, p(label)) (rgb / edge)"] == f"{corr[0]:+.2f} / {corr[1]:+.2f}"
    assert (row["top weight on most confident view (%)"], row["at random (%)"]) == (75.0, 50.0)
    assert row["one view always (%)"] == "75.0 (rgb)"  # rgb most confident on 3 of 4: the weights do no better
    assert (row["fused: text weights (%)"], row["fused: uniform (%)"], row["fused: confidence weights (%)"],
            row["text − uniform (points)"]) == (75.0, 0.0, 100.0, 75.0)
    test = selectivity_table(records, split="test").iloc[1]  # the split asked for: uniform weights there
    assert test["mean weight (rgb / edge)"] == "0.500 / 0.500" and test["fused: text weights (%)"] == 0.0
    assert test["corr(w, p(label)) (rgb / edge)"] == "n/a / n/a"  # constant weights: no correlation


def test_the_per_teacher_figure_draws_each_teachers_mean_and_the_interval_over_teachers():
    import matplotlib

    matplotlib.use("Agg")
    from tmkd_core.figures import teacher_differences_figure

    diffs = {0: [1.0, 1.2, 0.8], 1: [0.0, 0.2, -0.2], 2: [0.5, 0.5, 0.5]}  # points; teacher means 1, 0, 0.5
    records = [{"method": m, "teacher_seed": t, "seed": 200 + 10 * t + i,
                "test_acc": 0.5 + (d / 100 if m == "TMKD" else 0.0)}
               for t, ds in diffs.items() for i, d in enumerate(ds) for m in ("KD", "TMKD")]
    s = teacher_level_comparison(records)
    fig = teacher_differences_figure([("a", s), ("b", s)])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "teacher seed 2 (3 students)", "teacher seed 1 (3 students)", "teacher seed 0 (3 students)",
        "mean over 3 teachers (95% CI)"]
    drawn = {(tuple(np.round(line.get_xdata(), 6)), tuple(int(y) for y in line.get_ydata())) for line in ax.get_lines()}
    assert ((round(s["ci_low"], 6), round(s["ci_high"], 6)), (3, 3)) in drawn  # the interval, on the top row
    assert ((0.5,), (3,)) in drawn  # the mean over teachers
    assert {((0.8, 1.2), (2, 2)), ((1.0,), (2,))} <= drawn  # teacher 0: its students' range and its mean
    assert {((-0.2, 0.2), (1, 1)), ((0.0,), (1,)), ((0.5,), (0,))} <= drawn  # teachers 1 and 2
    assert len(fig.axes) == 2
    # five comparisons wrap onto two rows of three, the sixth place left empty
    fig = teacher_differences_figure([(name, s) for name in "abcde"])
    assert [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()] == list("abcde")
    assert len(fig.axes) == 6 and fig.get_size_inches()[0] == pytest.approx(3 * 5.2)


def test_the_study_summary_draws_every_statistic_on_one_axis_with_its_reading():
    import matplotlib

    matplotlib.use("Agg")
    from tmkd_core.figures import study_summary_figure

    def statistic(diffs):  # points, {teacher seed: its students' differences}
        return teacher_level_comparison([{"method": m, "teacher_seed": t, "seed": 200 + 10 * t + i,
                                          "test_acc": 0.5 + (d / 100 if m == "TMKD" else 0.0)}
                                         for t, ds in diffs.items() for i, d in enumerate(ds) for m in ("KD", "TMKD")])

    win = statistic({0: [1.0, 1.2], 1: [0.9, 1.1], 2: [1.0, 1.0]})  # teacher means 1.1, 1.0, 1.0
    wide = statistic({0: [-2.0, -2.0], 1: [2.0, 2.0]})
    fig = study_summary_figure([("win", win), ("wide", wide)])
    ax, readings = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["wide", "win"]  # the first row on top
    assert [t.get_text() for t in readings.get_yticklabels()] == ["inconclusive", "TMKD beats KD"]
    drawn = {(tuple(np.round(line.get_xdata(), 6)), tuple(int(y) for y in line.get_ydata())) for line in ax.get_lines()}
    assert ((round(win["ci_low"], 6), round(win["ci_high"], 6)), (1, 1)) in drawn  # the top row's interval
    assert ((round(win["diff"], 6),), (1,)) in drawn and ((0.0,), (0,)) in drawn  # each row's mean
    dots = sorted(round(float(x), 6) for c in ax.collections for x, _ in c.get_offsets())
    assert dots == [-2.0, 1.0, 1.0, 1.1, 2.0]  # one dot per teacher mean
    assert readings.get_ylim() == ax.get_ylim() and list(readings.get_yticks()) == list(ax.get_yticks())
    # behind each row its own tie margin (the bottom row's drawn first)
    fig = study_summary_figure([("win", win), ("other", {**wide, "tie_margin": 1.0})])
    bands = [(p.get_x(), p.get_x() + p.get_width(), p.get_y() + p.get_height() / 2) for p in fig.axes[0].patches]
    assert sorted(bands) == [pytest.approx((-1.0, 1.0, 0.0)), pytest.approx((-0.5, 0.5, 1.0))]


def assert_each_refused(check, entry, conf, wrongs) -> None:
    """`check` (a teacher_report.check_*_decisions) refuses `entry` with each (changed settings,
    message) of `wrongs`, naming the entry's setting, and while the confirmatory comparison's
    teacher and fusion setting are undecided."""
    for wrong, says in wrongs:
        with pytest.raises(teacher_report.DecisionMismatch, match=says) as caught:
            check(replace(entry, **wrong), conf)
        assert f"PROFILE_PLANS['cpu'][{entry.name!r}]" in str(caught.value)  # the setting is named
    with pytest.raises(teacher_report.DecisionMismatch, match="not decided yet"):
        check(entry, replace(conf, tmkd_variant=None, fusion_settled=False))


def assert_unknown_key(entry: str, key: str, value) -> None:
    """`key` set in the cpu study's `entry` is refused as unknown there."""
    import copy

    from tmkd_core.config import PROFILE_PLANS
    from tmkd_core.study import StudyError

    plan = copy.deepcopy(PROFILE_PLANS["cpu"])
    plan[entry][key] = value
    with pytest.raises(StudyError, match=rf"\['{entry}'\]: unknown key\(s\) \['{key}'\]"):
        Study.from_plan("cpu", plan)


def test_the_secondary_comparison_is_the_confirmatory_one_on_cifar10_fixed_beforehand(monkeypatch):
    """docs/protocol.md, "Secondary confirmatory comparison (CIFAR-10)": the confirmatory
    comparison's teacher and default fusion, teacher seeds 0-3, student seeds 300 + 10 t + i,
    no widening rule; any other setting is refused, naming it."""
    study = Study.of("cpu")
    secondary, conf = study.secondary_confirmatory, study.confirmatory
    assert secondary.secondary and not conf.secondary and secondary.name == "secondary_confirmatory"
    runs = secondary.runs(secondary.teacher_seeds)
    assert len(runs) == 24 and {r.dataset for r in runs} == {"cifar10"}
    assert sorted({r.seed for r in runs}) == [300 + 10 * t + i for t in range(4) for i in range(3)]
    default = dataset_config("cpu", "cifar10").fusion
    for r in runs:
        cfg = r.config("cpu")
        assert (cfg.fusion.score, cfg.fusion.tau_w) == (default.score, default.tau_w)  # no new screen
        assert cfg.teacher.multiview_optim.epochs == (10 if r.method == "TMKD" else 30) and cfg.score_test
    spread = {0: 2.0, 1: -2.0, 2: 1.5, 3: -1.5}  # a half-width far above 0.5: no teacher added all the same
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: {
        "test_acc": 0.5 + (spread[spec.teacher_seed] / 100 if spec.method == "TMKD" else 0.0)})
    assert secondary.widened_teacher_seeds() == [0, 1, 2, 3]
    check = teacher_report.check_secondary_decisions
    check(secondary, conf)
    assert_each_refused(check, secondary, conf, [
        (dict(tmkd_variant=TeacherVariant.named("mv_scratch20")), "makes no new choice"),
        (dict(fusion_adopted=(("fusion.tau_w", 0.03),)), "uses the default fusion"),
        (dict(max_teachers=8), r"\['max_teachers'\] = 8, but a secondary comparison has no widening"),
        (dict(dataset="cifar100"), "on another dataset than 'cifar100'; it has 'cifar100'"),
        (dict(kd_variant=TeacherVariant.named("rgb")), "rgb_ft30 for KD"),
        (dict(students_per_teacher=2), "3 students per teacher")])


def test_the_secondary_report_writes_its_own_files(monkeypatch, tmp_path):
    from tmkd_core.teacher_report import write_confirmatory_report

    secondary = Study.of("cpu").secondary_confirmatory
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: None)
    assert len(write_confirmatory_report(secondary, tmp_path)) == 24  # every run still missing, nothing written
    assert not (tmp_path / "tables").exists()
    diffs = {0: 0.3, 1: -0.3, 2: 0.1, 3: -0.1}
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: {
        "test_acc": 0.8 + (diffs[spec.teacher_seed] / 100 if spec.method == "TMKD" else 0.0), "val_acc": 0.8,
        "train_time_s": 1.0, "run_key": f"{spec.method}{spec.seed}", "seed": spec.seed,
        "config": {"teacher": {"seed": spec.teacher_seed}}})
    table, statistic = write_confirmatory_report(secondary, tmp_path)
    assert statistic["teachers"] == 4 and statistic["diff"] == pytest.approx(0.0, abs=1e-9)
    assert "Secondary confirmatory comparison" in (tmp_path / "tables" / "secondary_confirmatory.tex").read_text()
    assert "| cifar10 " in (tmp_path / "tables" / "secondary_confirmatory.md").read_text()
    saved = json.loads((tmp_path / "results" / "secondary_confirmatory.json").read_text())
    assert saved["secondary"] and saved["dataset"] == "cifar10" and len(saved["runs"]) == 24
    assert not (tmp_path / "tables" / "confirmatory.md").exists()  # the CIFAR-100 comparison's files untouched


def test_the_ensemble_follow_up_reuses_tmkds_confirmatory_runs_and_refuses_any_other_setting(monkeypatch):
    """docs/protocol.md, "Follow-up: KD from the RGB ensemble": TMKD's side is the confirmatory
    comparison's runs as they are; KD distils from rgb_ens2 (RGB teachers t and 500 + t); the
    reference is the confirmatory comparison's KD teacher; no widening rule."""
    study = Study.of("cpu")
    follow_up, conf = study.ensemble_follow_up, study.confirmatory
    assert follow_up.label == "ensemble follow-up" and not follow_up.secondary
    assert study.confirmatory_comparisons == [conf, study.secondary_confirmatory, follow_up, study.factorial_follow_up]
    kd = [r for r in follow_up.runs(follow_up.teacher_seeds) if r.method == "KD"]
    cfg = kd[0].config("cpu")
    assert (cfg.student.teacher, cfg.teacher.ensemble, cfg.student.tau) == ("ensemble", (0, 500), 4.0)
    assert cfg.student.distiller == "kd" and (cfg.student.ce_weight, cfg.student.alpha) == (
        conf.runs([0])[0].config("cpu").student.ce_weight, conf.runs([0])[0].config("cpu").student.alpha)
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: {"test_acc": 0.5})
    check = teacher_report.check_follow_up_decisions
    check(follow_up, conf)
    assert_each_refused(check, follow_up, conf, [
        (dict(tmkd_variant=TeacherVariant.named("mv_scratch20")),
         "reuses the confirmatory comparison's runs as they are; it has tmkd_variant = \"mv_scratch20\" \\(the "
         "confirmatory comparison's: \"mv_ft10\"\\)$"),
        (dict(fusion_adopted=(("fusion.tau_w", 0.03),)),
         r"it has fusion_adopted = \{\"fusion.tau_w\": 0.03\} \(the confirmatory comparison's: null\)$"),
        (dict(seed_base=300, students_per_teacher=2), r"it has students_per_teacher = 2 \(the confirmatory "
         r"comparison's: 3\); seed_base = 300 \(the confirmatory comparison's: 200\)$"),
        (dict(dataset="cifar10"), "reuses the confirmatory"),
        (dict(fusion_settled=False), r"it has fusion_settled = false \(set it to true\)$"),
        (dict(teacher_seeds=(0, 1, 2, 3, 4), max_teachers=5), r"TMKD runs are at teacher seeds \[0, 1, 2, 3\]"),
        (dict(teacher_seeds=(0, 1), max_teachers=2), r"TMKD runs are at teacher seeds \[0, 1, 2, 3\]"),
        (dict(kd_variant=TeacherVariant.named("rgb_ft30")), "set 'kd_variant' to an ensemble variant"),
        (dict(kd_reference=TeacherVariant.named("rgb")), "'rgb_ft30'"),
        (dict(max_teachers=8), r"\['max_teachers'\] = 8, but the ensemble follow-up has no widening")])
    assert_unknown_key("confirmatory", "kd_reference", "rgb")  # only the follow-up compares KD with KD


def test_the_follow_up_report_gives_both_of_its_statistics(monkeypatch, tmp_path):
    """TMKD − KD from the ensemble, and KD from the ensemble − KD from rgb_ft30, each the
    teacher-level statistic over the same 4 teachers and student seeds."""
    from tmkd_core.teacher_report import write_confirmatory_report

    follow_up = Study.of("cpu").ensemble_follow_up
    acc = {"TMKD": 0.50, "rgb_ens2": 0.49, "rgb_ft30": 0.48}  # TMKD − KD(ens) = +1, KD(ens) − KD(ft30) = +1 point
    bump = {0: 0.002, 1: -0.002, 2: 0.001, 3: -0.001}  # per teacher, on KD from the ensemble only

    def record(spec, profile, store):
        teacher = spec.setting.removeprefix("teacher=")
        a = acc["TMKD" if spec.method == "TMKD" else teacher] + (bump[spec.teacher_seed] if teacher == "rgb_ens2" else 0)
        return {"test_acc": a, "val_acc": a, "train_time_s": 1.0, "run_key": f"{spec.method}{teacher}{spec.seed}",
                "seed": spec.seed, "config": {"teacher": {"seed": spec.teacher_seed}}}

    monkeypatch.setattr("tmkd_core.study.finished_record", record)
    table, statistic = write_confirmatory_report(follow_up, tmp_path)
    assert statistic["diff"] == pytest.approx(1.0) and statistic["teachers"] == 4
    assert statistic["per_teacher_diff"][0] == pytest.approx(0.8)
    kd = statistic["kd_reference"]
    assert kd["diff"] == pytest.approx(1.0) and kd["per_teacher_diff"][1] == pytest.approx(0.8) and kd["pairs"] == 12
    saved = json.loads((tmp_path / "results" / "ensemble_follow_up.json").read_text())
    assert saved["kd_reference_variant"] == "rgb_ft30" and len(saved["runs"]) == 36
    assert saved["kd_reference"]["diff"] == pytest.approx(1.0)
    text = (tmp_path / "tables" / "ensemble_follow_up.md").read_text()
    assert "KD from rgb_ens2 − KD from rgb_ft30" in text and "KD from rgb_ens2 beats KD from rgb_ft30" in text
    assert "Follow-up" in (tmp_path / "tables" / "ensemble_follow_up.tex").read_text()
    assert not (tmp_path / "tables" / "confirmatory.md").exists()  # the confirmatory comparison's files untouched


def test_the_factorial_follow_up_crosses_the_confirmatory_comparison_and_refuses_any_other_setting(monkeypatch):
    """docs/protocol.md, "Follow-up: what earns TMKD's CIFAR-100 gain, teacher × terms": the
    confirmatory comparison's 24 runs as they are, and the two crossed cells, KD from mv_ft10
    (the fused teacher TMKD reads) and TMKD from rgb_ft30, at the same student seeds."""
    study = Study.of("cpu")
    factorial, conf = study.factorial_follow_up, study.confirmatory
    assert factorial.label == "factorial follow-up" and factorial.crossed and not conf.crossed
    seeds = factorial.teacher_seeds
    assert set(factorial.runs(seeds)) == set(conf.runs(seeds)) and factorial.reference_runs(seeds) == []
    crossed = factorial.crossed_runs(seeds)
    assert len(crossed) == 24 and not set(crossed) & set(conf.runs(seeds))
    assert {(r.method, r.setting) for r in crossed} == {("KD", "teacher=mv_ft10"), ("TMKD", "teacher=rgb_ft30")}
    assert sorted({r.seed for r in crossed}) == sorted({r.seed for r in conf.runs(seeds)})
    kd_mv = next(r for r in crossed if r.method == "KD").config("cpu")
    tmkd_mv = next(r for r in conf.runs(seeds) if r.method == "TMKD").config("cpu")
    kd_rgb = next(r for r in conf.runs(seeds) if r.method == "KD").config("cpu")
    tmkd_rgb = next(r for r in crossed if r.method == "TMKD").config("cpu")
    # KD's loss on TMKD's teacher: the same fused teacher (views, fusion, its recipe), KD's distiller and weights
    assert (kd_mv.student.teacher, kd_mv.student.distiller) == ("multi", "kd")
    assert (kd_mv.views, kd_mv.fusion, kd_mv.teacher) == (tmkd_mv.views, tmkd_mv.fusion, tmkd_mv.teacher)
    assert (kd_mv.student.ce_weight, kd_mv.student.alpha, kd_mv.student.tau) == (
        kd_rgb.student.ce_weight, kd_rgb.student.alpha, kd_rgb.student.tau)
    # TMKD's loss on KD's teacher: rgb_ft30's one view, TMKD's distiller and terms
    assert tmkd_rgb.views.views == ("rgb",) and tmkd_rgb.teacher == kd_rgb.teacher
    assert (tmkd_rgb.student.distiller, tmkd_rgb.student.beta, tmkd_rgb.student.vlc) == (
        tmkd_mv.student.distiller, tmkd_mv.student.beta, tmkd_mv.student.vlc)
    # a fusion setting the confirmatory check adopted is the multi-view teacher's, whatever the loss
    adopted = replace(factorial, fusion_adopted=(("fusion.tau_w", 0.03),))
    fused = {r.method: r.config("cpu").fusion.tau_w for r in adopted.crossed_runs(seeds)}
    assert fused == {"KD": 0.03, "TMKD": tmkd_rgb.fusion.tau_w} and tmkd_rgb.fusion.tau_w != 0.03
    monkeypatch.setattr("tmkd_core.study.finished_record", lambda spec, profile, store: {"test_acc": 0.5})
    check = teacher_report.check_factorial_decisions
    check(factorial, conf)
    assert_each_refused(check, factorial, conf, [
        (dict(crossed=False), r"two losses; it has crossed = false \(set it to true\)$"),
        (dict(kd_variant=TeacherVariant.named("rgb_ens2")),
         r"it has kd_variant = \"rgb_ens2\" \(the confirmatory comparison's: \"rgb_ft30\"\)$"),
        (dict(tmkd_variant=TeacherVariant.named("mv_scratch20")), "reuses the confirmatory"),
        (dict(seed_base=300), "reuses the confirmatory"),
        (dict(teacher_seeds=(0, 1), max_teachers=2), r"TMKD runs are at teacher seeds \[0, 1, 2, 3\]"),
        (dict(max_teachers=8), r"but the factorial follow-up has no widening")])
    assert_unknown_key("ensemble_follow_up", "crossed", True)  # the factorial follow-up's key alone
    import copy

    from tmkd_core.config import PROFILE_PLANS
    from tmkd_core.study import StudyError

    plan = copy.deepcopy(PROFILE_PLANS["cpu"])
    plan["factorial_follow_up"]["crossed"] = "no"  # not a boolean: refused, never read as true
    with pytest.raises(StudyError, match=r"\['factorial_follow_up'\]\['crossed'\] must be true or false; it has 'no'"):
        Study.from_plan("cpu", plan)


def test_the_factorial_statistics_by_hand():
    """Teacher ½[(c − a) + (d − b)], terms ½[(b − a) + (d − c)], interaction (d − b) − (c − a),
    each over the teacher means, on cells whose effects are known; T + E = d − a."""
    from tmkd_core.teacher_report import factorial_statistics

    # per teacher t and student i (points): a = 50, b = 50.2 + g(t), c = 49.6 + e(t),
    # d = 51.0 + e(t) + 0.03 i; e(t) a teacher effect, g(t) a teacher's own gain from TMKD's terms
    e = {0: 0.3, 1: -0.1, 2: 0.2, 3: 0.0}
    g = {0: 0.1, 1: -0.1, 2: 0.0, 3: 0.2}
    cells = {("KD", "rgb_ft30"): lambda t, i: 50.0, ("TMKD", "rgb_ft30"): lambda t, i: 50.2 + g[t],
             ("KD", "mv_ft10"): lambda t, i: 49.6 + e[t], ("TMKD", "mv_ft10"): lambda t, i: 51.0 + e[t] + 0.03 * i}
    runs = [{"method": m, "teacher_variant": v, "teacher_seed": t, "seed": 200 + 10 * t + i,
             "test_acc": (f(t, i) + 0.05 * i) / 100} for (m, v), f in cells.items() for t in e for i in range(3)]
    f = factorial_statistics(runs, "rgb_ft30", "mv_ft10")
    # the mean of 0.03 i over i = 0, 1, 2 is 0.03; the 0.05 i shared by every cell cancels
    expected = {"teacher": {t: ((-0.4 + e[t]) + (0.8 + e[t] - g[t] + 0.03)) / 2 for t in e},
                "terms": {t: ((0.2 + g[t]) + (1.4 + 0.03)) / 2 for t in e},
                "interaction": {t: (0.8 + e[t] - g[t] + 0.03) - (-0.4 + e[t]) for t in e}}  # e(t) cancels
    for name, per_teacher in expected.items():
        means = list(per_teacher.values())
        assert f[name]["per_teacher_diff"] == pytest.approx(per_teacher), name
        assert f[name]["diff"] == pytest.approx(np.mean(means)), name
        assert f[name]["half_width"] == pytest.approx(3.1824 * np.std(means, ddof=1) / 2, rel=1e-4), name  # t(0.975, 3)
    # the students' spread within a teacher is kept: d − b differs between student seeds
    assert f["interaction"]["per_teacher_pairs"][0] == pytest.approx([1.2 - 0.1 + 0.03 * i for i in range(3)])
    total = {t: 1.0 + e[t] + 0.03 for t in e}  # d − a
    assert {t: f["teacher"]["per_teacher_diff"][t] + f["terms"]["per_teacher_diff"][t] for t in e} == pytest.approx(total)
    assert f["terms"]["verdict"] == "TMKD's loss beats KD's loss" and f["teacher"]["teachers"] == 4
    assert f["simple"]["b − a"]["diff"] == pytest.approx(0.2 + np.mean(list(g.values())))
    assert f["simple"]["d − c"]["diff"] == pytest.approx(1.43)
    assert all("verdict" not in s for s in f["simple"].values())  # no reading pre-registered for them
    assert f["cells"] == {"a": "KD from rgb_ft30", "b": "TMKD from rgb_ft30", "c": "KD from mv_ft10",
                          "d": "TMKD from mv_ft10"}
    with pytest.raises(ValueError, match=r"lacks 1 run\(s\): KD from mv_ft10 \(teacher seed 0, seed 200\)"):
        factorial_statistics([r for r in runs if (r["method"], r["teacher_variant"], r["seed"]) != ("KD", "mv_ft10", 200)],
                             "rgb_ft30", "mv_ft10")


def test_the_factorial_report_gives_every_effect_and_lists_all_48_runs(monkeypatch, tmp_path):
    """factorial_follow_up.{md,tex,json}: a row per effect (d − a, teacher, terms, interaction,
    the four simple effects), the 24 reused and 24 crossed runs, each cell's mean accuracy."""
    from tmkd_core.teacher_report import write_confirmatory_report

    factorial = Study.of("cpu").factorial_follow_up
    acc = {("KD", "rgb_ft30"): 0.50, ("TMKD", "rgb_ft30"): 0.502, ("KD", "mv_ft10"): 0.499, ("TMKD", "mv_ft10"): 0.506}

    def record(spec, profile, store):
        teacher = spec.setting.removeprefix("teacher=")
        a = acc[spec.method, teacher] + 0.001 * (spec.teacher_seed % 2) * (teacher == "mv_ft10")
        return {"test_acc": a, "val_acc": a, "train_time_s": 1.0, "run_key": f"{spec.method}{teacher}{spec.seed}",
                "seed": spec.seed, "config": {"teacher": {"seed": spec.teacher_seed}}}

    monkeypatch.setattr("tmkd_core.study.finished_record", record)
    table, statistic = write_confirmatory_report(factorial, tmp_path)
    assert statistic["diff"] == pytest.approx(0.6 + 0.05)  # d − a, the confirmatory statistic
    f = statistic["factorial"]
    assert f["teacher"]["diff"] == pytest.approx(((-0.1 + 0.05) + (0.4 + 0.05)) / 2)
    assert f["terms"]["diff"] == pytest.approx((0.2 + 0.7) / 2) and f["interaction"]["diff"] == pytest.approx(0.5)
    assert f["teacher"]["diff"] + f["terms"]["diff"] == pytest.approx(statistic["diff"])
    assert list(table["effect"]) == ["cell a", "cell b", "cell c", "cell d", "TMKD − KD (the confirmatory difference)",
                                     "teacher", "terms", "interaction"] + ["simple effect"] * 4
    assert list(table["contrast"][:4]) == ["KD from rgb_ft30", "TMKD from rgb_ft30", "KD from mv_ft10",
                                           "TMKD from mv_ft10"] and table["test accuracy (%)"][1] == "50.20 ± 0.00"
    saved = json.loads((tmp_path / "results" / "factorial_follow_up.json").read_text())
    assert len(saved["runs"]) == 48 and {r["teacher_variant"] for r in saved["runs"]} == {"rgb_ft30", "mv_ft10"}
    assert saved["factorial"]["cells_test_acc"]["TMKD from rgb_ft30"]["mean"] == pytest.approx(50.2)
    assert saved["factorial"]["cells_test_acc"]["KD from mv_ft10"]["n"] == 12
    text = (tmp_path / "tables" / "factorial_follow_up.md").read_text()
    assert "½[(c − a) + (d − b)]" in text and "(no reading)" in text
    assert "teacher × terms" in (tmp_path / "tables" / "factorial_follow_up.tex").read_text()
    from tmkd_core.figures import teacher_differences_figure  # notebook 04's factorial_effects.png

    fig = teacher_differences_figure([(name, f[name]) for name in ("teacher", "terms", "interaction")])
    assert [ax.get_title(loc="left") for ax in fig.axes] == ["teacher", "terms", "interaction"]
    # notebook 04's panels: the crossed comparison's effects in a figure of their own, its TMKD − KD not repeated
    from tmkd_core.teacher_report import comparison_panels

    study = Study.of("cpu")
    panels = comparison_panels(study.confirmatory_comparisons,
                               {"confirmatory": statistic, "ensemble_follow_up": {**statistic, "kd_reference": f["terms"]},
                                "factorial_follow_up": statistic})
    assert [t for t, _ in panels["teacher_differences"]] == [
        "cifar100 (confirmatory): TMKD from mv_ft10 − KD from rgb_ft30",
        "cifar100 (ensemble follow-up): TMKD from mv_ft10 − KD from rgb_ens2",
        "cifar100 (ensemble follow-up): KD from rgb_ens2 − KD from rgb_ft30"]
    assert [s for _, s in panels["factorial_effects"]] == [f["teacher"], f["terms"], f["interaction"]]
    assert not (tmp_path / "tables" / "confirmatory.md").exists()  # the confirmatory comparison's files untouched


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the figure of these few records has no legend
def test_the_teacher_report_compares_each_variant_with_the_ensemble_too(monkeypatch, tmp_path):
    """'Is a multi-view teacher more than an ensemble?' read directly: each variant's paired
    difference to `rgb_ens2` over teacher seeds, beside those to rgb_ft30 and rgb."""
    study = Study.of("cpu").teacher_study
    acc = {"rgb": (61.0, 62.0), "rgb_ft30": (63.0, 63.5), "rgb_ens2": (64.0, 63.0), "mv_ft10": (62.5, 62.9)}
    records = [{"dataset": "cifar100", "variant": v, "kind": TeacherVariant.named(v).kind, "teacher_seed": s,
                "compute_view_epochs": TeacherVariant.named(v).compute(dataset_config("cpu", "cifar100")),
                "train_time_s": 3600.0, "val": {"deployed": a}, "test": {"deployed": a}}
               for v, accs in acc.items() for s, a in enumerate(accs)]
    monkeypatch.setattr(teacher_report, "study_records", lambda study, cache_dirs: (records, []))
    payload = write_teacher_report(study, tmp_path)
    found = {(d["variant"], d["reference"]): d for d in payload["paired_differences"]
             if d["split"] == "test" and d["measure"] == "deployed"}
    d = found["mv_ft10", "rgb_ens2"]  # differences -1.5 and -0.1: mean -0.8, sd 0.99, t(0.975, 1) = 12.71
    assert d["diff"] == pytest.approx(-0.8) and d["ci_low"] == pytest.approx(-0.8 - 12.7062 * 1.4 / 2, abs=1e-3)
    assert found["rgb_ens2", "rgb_ft30"]["diff"] == pytest.approx(0.25)
    assert ("rgb_ens2", "rgb_ens2") not in found
