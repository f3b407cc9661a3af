"""Training: exact resume, the fast paths against the plain ones, the teacher cache, and a
short real distillation."""
import pytest
import numpy as np
import torch

from tmkd_core.config import OptimConfig, method_config, with_overrides
from tmkd_core.data import AugmentPlan, load_splits, to_float
from tmkd_core.distillers import build_distiller
from tmkd_core.experiment import Pipeline
from tmkd_core.models import build_model
from tmkd_core.teachers import TeacherCache
from tmkd_core.train import Batch, fit, make_optimizer, prepare_batch, supervised_loss, train_step


class Interrupt(Exception):
    pass


def _train(splits, epochs_before_interrupt, checkpoint):
    torch.manual_seed(0)
    model = build_model("resnet8", 10)

    def stop(epoch, record):
        if epoch == epochs_before_interrupt:
            raise Interrupt

    kwargs = dict(seed=3, augment_seed=5, checkpoint=checkpoint, progress=False)
    optim = OptimConfig(epochs=3, lr=0.05, batch_size=100)
    try:
        fit(model, supervised_loss(model), splits.train, optim, on_epoch_end=stop, **kwargs)
    except Interrupt:
        torch.manual_seed(123)  # a resumed process starts from other weights and RNG state
        model = build_model("resnet8", 10)
        history = fit(model, supervised_loss(model), splits.train, optim, **kwargs)
        return model, history
    raise AssertionError("the run was not interrupted")


def test_resumed_run_continues_from_its_checkpoint(cifar_cfg, tmp_path):
    splits = load_splits(cifar_cfg.data)
    torch.manual_seed(0)
    straight = build_model("resnet8", 10)
    ref_history = fit(straight, supervised_loss(straight), splits.train, OptimConfig(epochs=3, lr=0.05, batch_size=100),
                      seed=3, augment_seed=5, progress=False)
    resumed, history = _train(splits, 2, tmp_path / "ckpt.pt")
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[:2] == torch.load(tmp_path / "ckpt.pt", weights_only=True)["history"][:2]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 3 * (len(splits.train) // 100)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=f"{k} differs after resume")
    assert history[-1]["loss_ce"] == pytest.approx(ref_history[-1]["loss_ce"], rel=1e-5)


def test_augment_plan_is_a_fixed_crop_and_flip():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    plan = AugmentPlan.draw(10, seed=1, replica=2, pad=2)
    again = AugmentPlan.draw(10, seed=1, replica=2, pad=2)
    assert torch.equal(plan.dy, again.dy) and torch.equal(plan.flip, again.flip)
    idx = torch.tensor([7, 3])
    out = plan.apply(x, idx)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b, i in enumerate(idx):
        crop = padded[b, :, plan.dy[i]:plan.dy[i] + 6, plan.dx[i]:plan.dx[i] + 6]
        torch.testing.assert_close(out[b], crop.flip(-1) if plan.flip[i] else crop)
    assert not torch.equal(AugmentPlan.draw(10, 1, 3, 2).dx, plan.dx)


def test_a_uint8_batch_is_augmented_exactly_as_its_float_copy():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    idx = torch.tensor([9, 0, 4, 4, 7, 2])
    plan = AugmentPlan.draw(10, seed=0, replica=1)
    x = prepare_batch(images, idx, plan, torch.device("cpu"), torch.channels_last)
    assert torch.equal(x, plan.apply(to_float(images), idx))  # the zero padding is 0.0 either way
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_a_bf16_autocast_step_matches_float32_within_bf16_rounding():
    """bf16 keeps 8 bits of mantissa (~0.4% per rounding), accumulated over resnet8's layers
    forward and backward: loss within 1%, the whole gradient within 10% relative error
    (measured: 0.03% and 6%)."""
    x, labels = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    results = {}
    for dtype in (None, torch.bfloat16):
        torch.manual_seed(0)
        model = build_model("resnet8", 10)
        opt, _ = make_optimizer(model.parameters(), OptimConfig(), 1)  # .grad: of the weights before the step
        _, losses = train_step(supervised_loss(model), opt, Batch(x, labels, torch.arange(16), 0.0, 0), dtype)
        results[dtype] = (losses["ce"].item(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    (loss32, grad32), (loss16, grad16) = results[None], results[torch.bfloat16]
    assert loss16 == pytest.approx(loss32, rel=0.01) and loss16 != loss32  # bf16 really ran
    assert (grad16 - grad32).norm() / grad32.norm() < 0.1


def test_a_non_finite_loss_stops_before_the_update_naming_the_stage(cifar_cfg):
    splits = Pipeline(cifar_cfg).splits
    torch.manual_seed(0)
    model = build_model("resnet8", 10)
    before = [p.detach().clone() for p in model.parameters()]

    def loss_fn(batch):
        logits, _ = model(batch.x)
        return logits, {"ce": torch.nn.functional.cross_entropy(logits, batch.labels) * float("nan")}

    with pytest.raises(FloatingPointError, match="RGB teacher: loss is nan .* at epoch 1; lower this stage's optim.lr"):
        fit(model, loss_fn, splits.train, OptimConfig(epochs=1, batch_size=100), seed=0, augment_seed=0,
            progress=False, desc="RGB teacher")
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_cpu_bf16_training_is_refused_without_native_bf16(cifar_cfg, monkeypatch):
    import tmkd_core.utils as utils

    cfg = with_overrides(cifar_cfg, {"cpu_amp": True})
    monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="cpu_amp=True needs a CPU with native bf16"):
        Pipeline(cfg)
    monkeypatch.setattr(utils, "cpu_has_native_bf16", lambda: True)
    pipe = Pipeline(cfg)
    assert pipe.train_dtype is torch.bfloat16 and pipe.precision()["training"] == "bf16 autocast"
    assert Pipeline(cifar_cfg).train_dtype is None  # float32 unless asked for


def test_teacher_cache_equals_the_online_teacher(cifar_cfg, tmp_path):
    pipe = Pipeline(cifar_cfg)
    teacher = pipe.fused_teacher()
    small = pipe.splits.train.subset(torch.arange(64))
    cache = TeacherCache.build(tmp_path / "cache", teacher, small, replicas=2, augment_seed=0, batch_size=32,
                               device="cpu")
    idx = torch.tensor([50, 3, 17, 9])
    images, labels = small.load(idx), small.labels[idx]
    for replica in (0, 1):
        x = AugmentPlan.draw(64, 0, replica).apply(to_float(images), idx)
        online = teacher(x, labels)
        cached = teacher.from_pooled(cache.get(idx, replica, "cpu"), labels, x)
        torch.testing.assert_close(cached["logits"], online["logits"], atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(cached["weights"], online["weights"], atol=2e-2, rtol=1e-2)
    with pytest.raises(ValueError, match="holds replicas 0..1; asked for replica 2"):  # never a silent wrap
        cache.get(idx, 2, "cpu")


def test_a_teacher_cache_stopped_part_way_resumes_after_its_last_replica(cifar_cfg, tmp_path, monkeypatch):
    import tmkd_core.teachers as teachers

    pipe = Pipeline(cifar_cfg)
    teacher = pipe.fused_teacher()
    small = pipe.splits.train.subset(torch.arange(32))
    build = dict(teacher=teacher, train=small, replicas=3, augment_seed=0, batch_size=32, device="cpu")
    whole = TeacherCache.build(tmp_path / "whole", **build)
    draw, drawn = AugmentPlan.draw, []

    def killed_at_replica_2(n, seed, k):
        if k == 2:
            raise KeyboardInterrupt("killed")
        drawn.append(k)
        return draw(n, seed, k)

    monkeypatch.setattr(teachers.AugmentPlan, "draw", staticmethod(killed_at_replica_2))
    with pytest.raises(KeyboardInterrupt):
        TeacherCache.build(tmp_path / "part", **build)
    assert not (tmp_path / "part" / "meta.json").exists() and drawn == [0, 1]
    monkeypatch.setattr(teachers.AugmentPlan, "draw", staticmethod(lambda n, seed, k: drawn.append(k) or draw(n, seed, k)))
    resumed = TeacherCache.build(tmp_path / "part", **build)
    assert drawn == [0, 1, 2]  # replicas 0 and 1 were not computed again
    assert np.array_equal(np.asarray(resumed.array), np.asarray(whole.array))
    assert not (tmp_path / "part" / "replicas_written.json").exists()
    # a count left without its partial file (or for another shape) is never trusted
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / "replicas_written.json").write_text('{"replicas": 2, "shape": [3, 32, 3, 64]}')
    drawn.clear()
    stale = TeacherCache.build(tmp_path / "stale", **build)
    assert drawn == [0, 1, 2] and np.array_equal(np.asarray(stale.array), np.asarray(whole.array))


def test_bf16_teacher_gives_float32_outputs_close_to_fp32(cifar_cfg):
    splits = Pipeline(cifar_cfg).splits
    x, labels = to_float(splits.train.load(torch.arange(16))), splits.train.labels[:16]
    outs = {}
    for precision in ("fp32", "bf16"):
        teacher = Pipeline(method_config(cifar_cfg, "TMKD", {"teacher_precision": precision})).frozen_teacher()
        assert teacher.inference_dtype is (torch.bfloat16 if precision == "bf16" else None)
        outs[precision] = teacher(x, labels)
    assert outs["bf16"]["pooled"].dtype == torch.float32
    err = (outs["bf16"]["pooled"] - outs["fp32"]["pooled"]).norm() / outs["fp32"]["pooled"].norm()
    assert 0 < err < 0.02  # bf16 rounding: changed, but by well under 2%


def test_distiller_keeps_the_teacher_frozen_and_in_eval(cifar_cfg):
    cfg = method_config(cifar_cfg, "TMKD")
    pipe = Pipeline(cfg)
    splits, teacher = pipe.splits, pipe.frozen_teacher()
    distiller = build_distiller(build_model("resnet8", 10), teacher, cfg.student)
    distiller.train()
    assert distiller.student.training and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    names = {n for n, p in distiller.named_parameters() if p.requires_grad}
    assert any(n.startswith("connector") for n in names) and any(n.startswith("text_head") for n in names)
    assert len(distiller.trainable_parameters()) == len(names)
    batch = Batch(to_float(splits.train.load(torch.arange(8))), splits.train.labels[:8], torch.arange(8), 0.0, 0)
    logits, losses = distiller.forward_train(batch)
    assert set(losses) == {"ce", "kd", "feat", "vlc"} and logits.shape == (8, 10)
    off_cfg = with_overrides(cfg, {"student.vlc": "off", "student.beta": 0.0}).student
    off = build_distiller(build_model("resnet8", 10), teacher, off_cfg)
    assert set(off.forward_train(batch)[1]) == {"ce", "kd"}


@pytest.mark.slow
def test_short_tmkd_distillation_on_real_cifar10_beats_chance(cifar_cfg):
    # the smoke teachers (shared with the other tests), a 6-epoch student: 29-32% over seeds here
    cfg = with_overrides(method_config(cifar_cfg, "TMKD"), {"student.optim.epochs": 6, "student.cache_replicas": 3})
    result = Pipeline(cfg).run_student(force=True)
    assert result["test_acc"] > 0.20, result["test_acc"]  # twice chance (0.10 on the 1,000 test images)
    losses = [h["loss_ce"] for h in result["history"]]
    assert losses[-1] < losses[0]
    assert {"loss_kd", "loss_feat", "loss_vlc"} <= set(result["history"][-1])


def test_a_model_with_nan_weights_gets_no_accuracy(cifar_cfg):
    from tmkd_core.train import evaluate

    data = load_splits(with_overrides(cifar_cfg, {}).data).val
    model = build_model("resnet8", 10, 3)
    assert 0.0 <= evaluate(model, data) <= 1.0  # a sound (untrained) model is scored
    with torch.no_grad():
        model.fc.weight[3, 0] = float("nan")  # one damaged weight: every sample's logits
    with pytest.raises(FloatingPointError, match="500 of 500 samples have NaN or infinite logits"):
        evaluate(model, data)
