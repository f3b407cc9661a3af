"""Evaluating the teacher study's teachers (docs/protocol.md, "Amendment: powerful teachers"):
each trained teacher on validation and test, as deployed (fusion conditioned on its own
prediction), label-conditioned (what a student learns from), with uniform weights, per view,
and over the fusion grid (`FUSION_GRID`); kept as JSON under the teachers' stage keys
(`teacher_record`), so that it is computed once per teacher and committed with it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ExperimentConfig
from .teacher_study import StudyTeacher


# The fusion settings the protocol's rule compares for the chosen variant: (fusion.score, fusion.tau_w)
FUSION_GRID = (("cosine", 0.03), ("cosine", 0.1), ("cosine", 0.3),
               ("class_prob", 0.03), ("class_prob", 0.1), ("class_prob", 0.3))


# per teacher stage, bumped when what its evaluation computes changes: cached evaluations are
# redone. multiview_teacher 2: `selectivity` gained the one-view-always baseline
EVAL_VERSION = {"rgb_teacher": 1, "multiview_teacher": 2}


def _multiview_outputs(cfg: ExperimentConfig, split: str):
    """A trained multi-view-stage teacher's per-view logits (V, N, K) and text projections
    (V, N, D) on a split, its labels and class texts: one backbone pass, every fusion after."""
    import torch

    from .data import to_float
    from .experiment import Pipeline
    from .priors import make_views

    pipe = Pipeline(cfg)
    mv, _ = pipe._multiview_teacher(train=False)
    data = getattr(pipe.splits, split)
    logits, text = [], []
    with torch.no_grad():
        for _, images, _ in data.batches(256):
            out = mv.heads(mv.pooled(make_views(to_float(images, pipe.device), cfg.views)))
            logits.append(out["logits"].float().cpu())
            text.append(out["text"].float().cpu())
    return torch.cat(logits, 1), torch.cat(text, 1), data.labels, pipe.class_text.cpu()


def _fused_accuracy(cfg: ExperimentConfig, logits, text, labels, class_text, **fusion) -> tuple[float, Any]:
    """Accuracy (%) of the views fused by `cfg.fusion` with `fusion` changed, and the weights."""
    from dataclasses import replace

    from .fusion import ViewFusion
    from .train import accuracy

    weights = ViewFusion(replace(cfg.fusion, **fusion), class_text).weights({"logits": logits, "text": text}, labels)
    return 100 * accuracy((weights[..., None] * logits).sum(0), labels), weights


def evaluate_teacher(teacher: StudyTeacher, split: str) -> dict[str, Any]:
    """One study teacher's accuracies (%) on a split. Every kind: `deployed`, the teacher as it
    would be used at test time (a multi-view teacher fused with weights conditioned on its own
    prediction; an ensemble's mean softmax). A multi-view-stage teacher also: `label_conditioned`
    (the fused teacher TMKD's students learn from), `uniform`, `view_<name>` per view, the
    label- and prediction-conditioned accuracy of each `FUSION_GRID` setting (`fusion_grid`),
    and whether the default weights follow which view is right (`selectivity`,
    `analysis.weights_against_views`)."""
    import torch

    from .analysis import weights_against_views
    from .experiment import Pipeline
    from .train import accuracy, predict

    v = teacher.variant
    if v.stage == "rgb_teacher":
        probs = []
        for cfg in teacher.configs:
            pipe = Pipeline(cfg)
            model, _ = pipe._rgb_teacher(train=False)
            data = getattr(pipe.splits, split)
            probs.append(predict(lambda x: model(x)[0], data, device=pipe.device).softmax(-1))
        return {"deployed": 100 * accuracy(torch.stack(probs).mean(0), data.labels)}
    cfg = teacher.configs[0]
    logits, text, labels, class_text = _multiview_outputs(cfg, split)
    views = list(cfg.views.views)
    out: dict[str, Any] = {
        "deployed": _fused_accuracy(cfg, logits, text, labels, class_text, condition="pred")[0],
        "label_conditioned": _fused_accuracy(cfg, logits, text, labels, class_text, condition="label")[0],
        "uniform": 100 * accuracy(logits.mean(0), labels),
        **{f"view_{name}": 100 * accuracy(logits[i], labels) for i, name in enumerate(views)}}
    if len(views) > 1:
        out["fusion_grid"] = [{"score": score, "tau_w": tau_w, **{
            f"{condition}_conditioned": _fused_accuracy(cfg, logits, text, labels, class_text, condition=condition,
                                                        score=score, tau_w=tau_w)[0] for condition in ("label", "pred")}}
            for score, tau_w in FUSION_GRID]
        weights = _fused_accuracy(cfg, logits, text, labels, class_text, condition="label")[1]
        out["selectivity"] = weights_against_views(weights, logits, labels, views)
    return out


def train_time_s(teacher: StudyTeacher) -> float:
    """Seconds of training the teacher recorded, what it starts from included (both of an
    ensemble's teachers; the RGB teacher a fine-tuned one starts from)."""
    from .experiment import Pipeline

    seconds = 0.0
    for cfg in teacher.configs:
        pipe = Pipeline(cfg)
        if pipe.uses("rgb_teacher") or teacher.variant.stage == "rgb_teacher":
            seconds += pipe._rgb_teacher(train=False)[1]["train_time_s"]
        if teacher.variant.stage == "multiview_teacher":
            seconds += pipe._multiview_teacher(train=False)[1]["train_time_s"]
    return seconds


def stage_keys(teacher: StudyTeacher) -> list[str]:
    from .experiment import Pipeline

    return [Pipeline(cfg).key(teacher.variant.stage) for cfg in teacher.configs]


def evaluation_name(teacher: StudyTeacher, keys: list[str] | None = None) -> str:
    """The file a teacher's evaluation is kept in: its stage keys (`keys`, if already
    resolved) and what the evaluation computes."""
    from .config import config_hash

    keys = stage_keys(teacher) if keys is None else keys
    version = EVAL_VERSION[teacher.variant.stage]
    return f"teacher_{config_hash({'keys': keys, 'version': version, 'grid': FUSION_GRID}, length=16)}.json"


def teacher_record(teacher: StudyTeacher, cache_dirs=()) -> dict[str, Any]:
    """What `figures/results/teacher_study.json` keeps of one teacher (docs/protocol.md's
    names: dataset, kind, variant, teacher_seed, val_acc, test_acc as deployed, train_time_s),
    with its validation and test evaluations and its compute. An evaluation is kept as JSON
    under its teachers' stage keys (`evals/` of the data root, and of each of `cache_dirs`,
    e.g. the profile's store), and read back from the first that has it; TeacherNotTrained
    if a teacher it needs is not trained."""
    import json

    from .utils import atomic_write_text

    keys = stage_keys(teacher)
    name = evaluation_name(teacher, keys)
    root = Path(teacher.configs[0].data.root) / "evals"
    places = [root / name, *(Path(d) / "evals" / name for d in cache_dirs)]
    found = next((p for p in places if p.exists()), None)
    if found is not None:
        record = json.loads(found.read_text())
    else:
        record = {"dataset": teacher.dataset, "kind": teacher.variant.kind, "variant": teacher.variant.name,
                  "teacher_seed": teacher.teacher_seed, "stage_keys": keys,
                  "compute_view_epochs": teacher.variant.compute(teacher.configs[0]),
                  "train_time_s": train_time_s(teacher),
                  "val": evaluate_teacher(teacher, "val"), "test": evaluate_teacher(teacher, "test"),
                  "eval_version": EVAL_VERSION[teacher.variant.stage]}
        record["val_acc"], record["test_acc"] = record["val"]["deployed"], record["test"]["deployed"]
    text = json.dumps(record, indent=1, sort_keys=True) + "\n"
    for place in places:
        if not place.exists():
            place.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(text, place)
    return record
