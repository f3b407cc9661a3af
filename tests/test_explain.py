"""What the notebooks show a reader: one image's views and weights taken apart, one TMKD step
taken apart, and the interactive explorer (without a browser)."""
import dataclasses
import io

import pytest
import torch
import torch.nn.functional as F

from tmkd_core.analysis import explain_views, tmkd_step_trace
from tmkd_core.config import method_config
from tmkd_core.data import to_float
from tmkd_core.experiment import Pipeline
from tmkd_core.explorer import FUSION_SWITCHES, VIEW_SWITCHES, ViewExplorer, image_from_bytes
from tmkd_core.losses import kd_loss


@pytest.fixture(scope="module")
def tmkd(cifar_cfg):
    return Pipeline(method_config(cifar_cfg, "TMKD", {"teacher_precision": "fp32"}))


@pytest.fixture(scope="module")
def batch(tmkd):
    train = tmkd.splits.train
    return to_float(train.images[:8]), train.labels[:8]


def test_explain_views_is_the_fused_teacher_taken_apart(tmkd, batch):
    teacher = tmkd.frozen_teacher()
    x, y = batch
    e = explain_views(teacher, x, y)
    online = teacher(x, y)
    torch.testing.assert_close(e["logits"], online["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(e["weights"], online["weights"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(e["weights"], torch.softmax(e["scores"] / tmkd.cfg.fusion.tau_w, 0))
    torch.testing.assert_close((e["weights"][..., None] * e["view_logits"]).sum(0), e["logits"])
    v = len(teacher.view_names)
    assert e["priors"].shape == e["views"].shape == (v, *x.shape)
    assert e["spectra"].shape == (v, len(x), *x.shape[-2:])
    torch.testing.assert_close(e["priors"][0], x)  # rgb has no prior: the image itself


def test_explain_views_under_other_switches_changes_what_it_should(tmkd, batch):
    teacher = tmkd.frozen_teacher()
    x, y = batch
    base = explain_views(teacher, x, y)
    canny = explain_views(teacher, x, y, dataclasses.replace(teacher.view_cfg, edge_operator="canny"))
    assert torch.equal(canny["views"][0], base["views"][0]) and not torch.equal(canny["views"][1], base["views"][1])
    sharp = explain_views(teacher, x, y, fusion=dataclasses.replace(teacher.fusion.cfg, tau_w=0.01))
    entropy = lambda w: float(-(w * w.clamp_min(1e-12).log()).sum(0).mean())  # noqa: E731
    assert entropy(sharp["weights"]) < entropy(base["weights"])
    by_pred = explain_views(teacher, x, y, fusion=dataclasses.replace(teacher.fusion.cfg, condition="pred"))
    assert torch.equal(by_pred["classes"], base["view_logits"].mean(0).argmax(-1))
    with pytest.raises(ValueError, match="not the teacher's"):
        explain_views(teacher, x, y, dataclasses.replace(teacher.view_cfg, views=("rgb", "edge")))


def test_the_step_trace_shows_the_target_and_loss_terms_the_distiller_uses(tmkd):
    trace = tmkd_step_trace(tmkd, n_images=6)
    s = tmkd.cfg.student
    assert set(trace["losses"]) == {"ce", "kd", "feat", "vlc"}
    assert trace["total_loss"] == pytest.approx(sum(trace["losses"].values()))
    z_s, z_t, y = trace["student_logits"], trace["logits"], trace["labels"]
    # the terms are recomputed from the traced student logits and fused target
    assert trace["losses"]["ce"] == pytest.approx(float(F.cross_entropy(z_s, y)), rel=1e-5)
    assert trace["losses"]["kd"] == pytest.approx(float(s.alpha * kd_loss(z_s, z_t, s.tau)), rel=1e-4)
    again = tmkd_step_trace(tmkd, n_images=6)  # a seeded fresh student: the same step
    assert again["losses"] == trace["losses"]
    with pytest.raises(ValueError, match="student.distiller='tmkd'"):
        tmkd_step_trace(tmkd.with_overrides({"student.distiller": "kd", "student.teacher": "single"}))


def test_explorer_draws_uploads_and_redraws_on_every_control(tmkd, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    explorer = ViewExplorer({"cifar10": tmkd})
    v = len(tmkd.cfg.views.views)
    fig = explorer.draw("cifar10", 3, tau_w=0.05, condition="pred")
    assert len(fig.axes) == 3 * (v + 1)
    plt.close(fig)
    with pytest.raises(TypeError, match="available: edge_operator"):
        explorer.draw("cifar10", 0, radius=0.3)
    with pytest.raises(IndexError, match="outside the"):
        explorer.draw("cifar10", 10**6)

    x, _ = explorer.image("cifar10", 3)
    buf = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0) * 255).round().byte().numpy()).save(buf, format="PNG")
    upload = image_from_bytes(buf.getvalue(), 3, (32, 32))
    torch.testing.assert_close(upload, x, atol=1 / 255, rtol=0)  # a lossless round trip
    with pytest.raises(ValueError, match="needs a label"):
        explorer.draw("cifar10", image=upload)

    pytest.importorskip("ipywidgets")
    calls = []
    monkeypatch.setattr(explorer, "draw", lambda *a, **k: calls.append((a, k)) or plt.figure())
    panel = explorer.widget()
    assert len(calls) == 1  # drawn once on creation
    controls = {c.description: c for box in panel.children[0].children for c in box.children}
    controls["tau_w"].value = 0.05
    controls["edge"].value = "canny"
    assert calls[-1][1]["tau_w"] == 0.05 and calls[-1][1]["edge_operator"] == "canny"
    assert set(calls[-1][1]) == set(VIEW_SWITCHES + FUSION_SWITCHES)
    plt.close("all")
