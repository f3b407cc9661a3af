"""What the notebooks show a reader: one image's views and weights taken apart, whether the
weights follow the views' accuracy, one TMKD step taken apart, and the interactive explorer (without a browser)."""
import dataclasses
from datetime import datetime, timezone
import io
import math

import pytest
import torch

from tmkd_core.analysis import (explain_views, fusion_weights, tmkd_step_trace, weight_entropy, weight_sweep,
                                weights_against_views)
from tmkd_core.config import method_config
from tmkd_core.data import first_of_each_class, to_float
from tmkd_core.experiment import Pipeline
from tmkd_core.explorer import (FUSION_SWITCHES, VIEW_SWITCHES, ViewExplorer, draw_step_trace, image_from_bytes,
                                step_trace_tables)
from tmkd_core.losses import kd_loss
from tmkd_core.teachers import FusedTeacher


@pytest.fixture(scope="module")
def tmkd(cifar_cfg):
    return Pipeline(method_config(cifar_cfg, "TMKD", {"teacher_precision": "fp32"}))


@pytest.fixture(scope="module")
def batch(tmkd):
    train = tmkd.splits.train
    return to_float(train.images[:8]), train.labels[:8]


def test_weight_entropy_by_hand():
    # sample 0: one view takes all (H = 0); sample 1: two views share (H = ln 2)
    w = torch.tensor([[1.0, 0.5], [0.0, 0.5], [0.0, 0.0]])
    assert weight_entropy(w) == pytest.approx(math.log(2) / 2)
    assert weight_entropy(torch.full((3, 5), 1 / 3)) == pytest.approx(math.log(3))


def test_weights_against_views_by_hand():
    # 2 views, 3 samples, 2 classes, labels 0, 1, 0. View "a" is right on samples 0 and 1,
    # view "b" only on sample 2; the largest weight is on "b" for samples 0 and 2.
    # Logit margins 10 (view a) and 5 (view b): each view's p(y) is near 1 or 0, and uniform
    # fusion never ties.
    view_logits = torch.tensor([[[10.0, 0], [0, 10], [0, 10]],
                                [[0, 5.0], [5, 0], [5, 0]]])
    labels = torch.tensor([0, 1, 0])
    weights = torch.tensor([[0.2, 0.6, 0.3], [0.8, 0.4, 0.7]])
    got = weights_against_views(weights, view_logits, labels, ["a", "b"])
    a, b = got["per_view"]
    assert (a["view"], b["view"]) == ("a", "b")
    assert a["accuracy"] == pytest.approx(200 / 3) and b["accuracy"] == pytest.approx(100 / 3)
    assert a["mean_weight"] == pytest.approx(1.1 / 3) and b["mean_weight"] == pytest.approx(1.9 / 3)
    assert a["weight_when_right"] == pytest.approx(0.4) and a["weight_when_wrong"] == pytest.approx(0.3)
    assert b["weight_when_right"] == pytest.approx(0.7) and b["weight_when_wrong"] == pytest.approx(0.6)
    # p_a(y) = (q, q, 1 - q) and w_a = (.2, .6, .3), centred: in the directions (1, 1, -2) and
    # (-5, 7, -2), so corr = 6 / (√6 · √78) = 1/√13
    assert a["corr_weight_p_label"] == pytest.approx(13 ** -0.5)
    assert got["top_view"]["top_weight_on_most_confident"] == pytest.approx(2 / 3)  # samples 1 and 2
    assert got["top_view"]["top_weight_on_wrong_view"] == pytest.approx(1 / 3)      # sample 0
    # "a" is the most confident view on samples 0 and 1: always weighting it highest does as well
    assert got["top_view"]["most_confident_share"] == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    assert got["top_view"]["one_view"] == "a" and got["top_view"]["one_view_always"] == pytest.approx(2 / 3)
    # z_T = sum_v w_v z_v: text weights give (2, 4), (2, 6), (3.5, 3): samples 1 and 2 right;
    # uniform gives (5, 2.5), (2.5, 5), (2.5, 5): samples 0 and 1 right; confidence weights
    # follow the right view on each sample
    assert got["fused"] == pytest.approx({"fusion_weights": 200 / 3, "uniform": 200 / 3,
                                          "confidence_weights": 100.0, "best_single_view": 200 / 3})
    uniform = weights_against_views(torch.full((2, 3), 0.5, dtype=torch.float64), view_logits, labels, ["a", "b"])
    assert uniform["per_view"][0]["corr_weight_p_label"] is None  # constant weights: no correlation
    with pytest.raises(ValueError, match="do not agree"):
        weights_against_views(weights, view_logits, labels, ["a"])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explain_views_is_the_distillers_teacher_taken_apart(tmkd, batch, precision):
    teacher = tmkd.with_overrides({"teacher_precision": precision}).frozen_teacher()
    x, y = batch
    e = explain_views(teacher, x, y)
    online = teacher(x, y)  # what the distiller reads, in the teacher's own precision
    torch.testing.assert_close(e["logits"], online["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e["weights"], online["weights"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(e["weights"], torch.softmax(e["scores"] / tmkd.cfg.fusion.tau_w, 0))
    torch.testing.assert_close((e["weights"][..., None] * e["view_logits"]).sum(0), e["logits"])
    v = len(teacher.view_names)
    assert e["priors"].shape == e["views"].shape == (v, *x.shape)
    assert e["spectra"].shape == (v, len(x), *x.shape[-2:])
    torch.testing.assert_close(e["priors"][0], x)  # rgb has no prior: the image itself


def test_explain_views_under_other_switches_is_a_teacher_built_with_them(tmkd, batch):
    teacher = tmkd.frozen_teacher()
    x, y = batch
    canny = dataclasses.replace(teacher.view_cfg, edge_operator="canny")
    e = explain_views(teacher, x, y, canny)
    rebuilt = FusedTeacher(teacher.teacher, teacher.fusion, canny)(x, y)
    torch.testing.assert_close(e["weights"], rebuilt["weights"], atol=1e-6, rtol=1e-6)
    assert not torch.equal(e["views"][1], explain_views(teacher, x, y)["views"][1])

    by_pred = explain_views(teacher, x, y, fusion=dataclasses.replace(teacher.fusion.cfg, condition="pred"))
    reference = tmkd.with_overrides({"fusion.condition": "pred"}).frozen_teacher()(x, y)
    torch.testing.assert_close(by_pred["weights"], reference["weights"], atol=1e-6, rtol=1e-6)
    sharp = explain_views(teacher, x, y, fusion=dataclasses.replace(teacher.fusion.cfg, tau_w=0.01))
    assert weight_entropy(sharp["weights"]) < weight_entropy(explain_views(teacher, x, y)["weights"])

    with pytest.raises(ValueError, match="not the teacher's"):
        explain_views(teacher, x, y, dataclasses.replace(teacher.view_cfg, views=("rgb", "edge")))
    with pytest.raises(ValueError, match="fusion.weights='uniform' is not the teacher's 'text'"):
        explain_views(teacher, x, y, fusion=dataclasses.replace(teacher.fusion.cfg, weights="uniform"))
    uniform = explain_views(tmkd.with_overrides({"fusion.weights": "uniform"}).frozen_teacher(), x, y)
    assert uniform["scores"] is None and torch.allclose(uniform["weights"], torch.full_like(uniform["weights"], 1 / 3))


def by_hand(pipe: Pipeline, trace: dict) -> dict:
    """The TMKD step's terms recomputed from its parts (docs/method.md §5): the fresh student's
    pooled feature h_S and the frozen teacher's per-view features h_v and text projections
    P_v h_v on the traced images, fused with the traced weights w, then

        ce   = CE(z_S, y)
        kd   = alpha * tau^2 * KL(softmax(z_T / tau) || softmax(z_S / tau))
        feat = beta * mean((C h_S - sum_v w_v h_v)^2)
        vlc  = gamma * (-log softmax_c(cos(G h_S, t_{rgb,c}) / tau_c)[y])       (class_text)
             + gamma * (-log softmax_j(cos(G h_S_i, q_T_j) / tau_c)[i])       (teacher_text)

    with C, G the distiller's connector and text head and q_T = sum_v w_v P_v h_v."""
    s = pipe.cfg.student
    teacher = pipe.frozen_teacher(train=False)
    distiller = pipe.student_distiller(teacher).train()  # the seeded fresh student the trace used
    train = pipe.splits.train
    idx = first_of_each_class(train.labels, len(trace["labels"]))
    x, y = to_float(train.load(idx)), trace["labels"]
    with torch.no_grad():
        z_s, feats = distiller.student(x)
        out = teacher.teacher(trace["views"])  # per view: pooled h_v, text P_v h_v
    torch.testing.assert_close(z_s, trace["student_logits"])  # the same student on the same images
    w = trace["weights"][..., None]
    h_s, h_t, q_t = feats["pooled"], (w * out["pooled"]).sum(0), (w * out["text"]).sum(0)

    def unit(a):
        return a / a.norm(dim=-1, keepdim=True)

    def nll(logits, target):  # mean over rows of -log softmax(logits)[target]
        return float((logits.logsumexp(-1) - logits.gather(1, target[:, None])[:, 0]).mean())

    z_t = trace["logits"]
    log_ps, pt = (z_s / s.tau).log_softmax(-1), (z_t / s.tau).softmax(-1)
    terms = {"ce": nll(z_s, y), "kd": s.alpha * s.tau ** 2 * float((pt * (pt.log() - log_ps)).sum(-1).mean())}
    with torch.no_grad():
        c_h = h_s @ distiller.connector.weight.T + distiller.connector.bias
        terms["feat"] = s.beta * float(((c_h - h_t) ** 2).mean())
        q_s = unit(h_s @ distiller.text_head.weight.T + distiller.text_head.bias)
        vlc = 0.0
        if s.vlc in ("class_text", "both"):
            vlc += nll(q_s @ unit(teacher.class_text[0]).T / s.tau_c, y)
        if s.vlc in ("teacher_text", "both"):
            vlc += nll(q_s @ unit(q_t).T / s.tau_c, torch.arange(len(y)))
        terms["vlc"] = s.gamma * vlc
    return terms


@pytest.mark.parametrize("vlc", ["class_text", "both"])
def test_the_step_trace_shows_the_target_and_loss_terms_the_distiller_uses(tmkd, vlc):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    # no coefficient or temperature at 1, so that a dropped one shows
    pipe = tmkd.with_overrides({"student.vlc": vlc, "student.alpha": 0.7, "student.beta": 1.3, "student.gamma": 0.4,
                                "student.tau": 3.0, "student.tau_c": 0.2})
    s = pipe.cfg.student
    trace = tmkd_step_trace(pipe, n_images=6)
    assert trace["labels"].tolist() == list(range(6))  # one image of each class
    assert set(trace["losses"]) == {"ce", "kd", "feat", "vlc"}
    assert trace["total_loss"] == pytest.approx(sum(trace["losses"].values()))
    # every term recomputed from the traced student logits, fused target, weights and views
    assert trace["losses"] == pytest.approx(by_hand(pipe, trace), rel=1e-4)
    assert trace["losses"]["kd"] == pytest.approx(float(s.alpha * kd_loss(trace["student_logits"], trace["logits"],
                                                                          s.tau)), rel=1e-4)
    again = tmkd_step_trace(pipe, n_images=6)  # a seeded fresh student: the same step
    assert again["losses"] == trace["losses"]
    if vlc == "both":
        return
    fig = draw_step_trace(trace, tmkd.splits.class_names)
    assert len(fig.axes) == 6 * (len(trace["view_names"]) + 2)
    per_view, losses = step_trace_tables(trace, tmkd.splits.class_names)
    assert len(per_view) == 6 * len(trace["view_names"]) and losses["value"].iloc[-1] == trace["total_loss"]
    with pytest.raises(ValueError, match="student.distiller='tmkd'"):
        tmkd_step_trace(tmkd.with_overrides({"student.distiller": "kd", "student.teacher": "single"}))


def test_the_weight_sweep_is_the_fusion_weights_under_each_setting(tmkd):
    rows = weight_sweep(tmkd, {"sharp": {"fusion.tau_w": 0.01}, "flat": {"fusion.tau_w": 100.0}}, max_images=64)
    views = tmkd.cfg.views.views
    assert [r["setting"] for r in rows] == ["sharp", "flat"] and list(rows[0]) == ["setting", *views, "entropy"]
    w = fusion_weights(tmkd.with_overrides({"fusion.tau_w": 0.01}), "val", max_images=64)["weights"]
    assert w.shape[1] == 64
    assert [rows[0][v] for v in views] == pytest.approx(w.mean(1).tolist())
    assert rows[0]["entropy"] == pytest.approx(weight_entropy(w))
    assert rows[0]["entropy"] < rows[1]["entropy"] <= math.log(len(views)) + 1e-6
    assert rows[1]["entropy"] == pytest.approx(math.log(len(views)), rel=1e-3)  # tau_w = 100: near uniform


def png_bytes(x: torch.Tensor) -> bytes:
    from PIL import Image

    arr = (x[0].permute(1, 2, 0).squeeze(-1) * 255).round().byte().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("channels, size", [(3, 32), (1, 28), (3, 64)])
def test_an_upload_is_prepared_as_the_datasets_images(channels, size):
    x = torch.rand(1, channels, size, size).mul(255).round().div(255)
    torch.testing.assert_close(image_from_bytes(png_bytes(x), channels, size), x)  # lossless at the same size
    big = image_from_bytes(png_bytes(torch.rand(1, channels, 2 * size, 3 * size)), channels, size)
    assert big.shape == (1, channels, size, size)  # short side resized, centre crop
    with pytest.raises(ValueError, match="cannot decode image"):
        image_from_bytes(b"not an image", channels, size)


def test_explorer_draws_and_every_control_redraws(tmkd, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    explorer = ViewExplorer({"cifar10": tmkd})
    v = len(tmkd.cfg.views.views)
    fig = explorer.draw("cifar10", 3, tau_w=0.05, condition="pred")
    assert len(fig.axes) == 3 * (v + 1)
    x, _ = explorer.image("cifar10", 3)
    plt.close(explorer.draw("cifar10", image=x))  # an upload of unknown class conditions on the prediction
    with pytest.raises(TypeError, match="available: edge_operator"):
        explorer.draw("cifar10", 0, radius=0.3)
    with pytest.raises(IndexError, match="outside the"):
        explorer.draw("cifar10", 10**6)
    plt.close("all")

    pytest.importorskip("ipywidgets")
    calls = []
    monkeypatch.setattr(explorer, "draw", lambda *a, **k: calls.append((a, k)) or plt.figure())
    panel = explorer.widget(index=5)
    assert len(calls) == 1 and calls[0][0] == ("cifar10", 5)  # drawn once, at the index asked for
    controls = {c.description: c for box in panel.children[0].children for c in box.children}
    assert set(calls[0][1]) == set(VIEW_SWITCHES + FUSION_SWITCHES)
    assert {k: calls[0][1][k] for k in explorer.defaults("cifar10")} == explorer.defaults("cifar10")
    for name, value, switch in [("tau_w", 0.05, "tau_w"), ("edge", "canny", "edge_operator"),
                                ("hf mode", "map", "hf_mode"), ("radius", 0.5, "hf_radius"),
                                ("edge mode", "detail", "edge_mode"), ("detail lambda", 2.0, "detail_lambda"),
                                ("score", "class_prob", "score")]:
        controls[name].value = value
        assert calls[-1][1][switch] == value
    n = len(calls)
    content = png_bytes(x)
    controls["upload"].value = ({"name": "cat.png", "type": "image/png", "size": len(content),
                                 "content": memoryview(content), "last_modified": datetime.now(timezone.utc)},)
    assert len(calls) == n + 1 and calls[-1][1]["label"] is None  # an upload: class unknown
    torch.testing.assert_close(calls[-1][1]["image"], x)
    controls["its class"].value = 3
    assert calls[-1][1]["label"] == 3
    controls["val image"].value = 7  # a new index replaces the upload
    assert calls[-1][0] == ("cifar10", 7) and not controls["upload"].value
    plt.close("all")
