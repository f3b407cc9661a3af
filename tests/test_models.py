"""Model output contracts and the multi-view teacher wrapper (method.md §2)."""
import copy

import pytest
import torch

from tmkd_core.models import MODELS, MultiViewTeacher, ViewBatchNorm2d, build_model, count_parameters


@pytest.mark.parametrize("arch", MODELS.names())
def test_every_model_returns_logits_and_pooled_features(arch):
    model = build_model(arch, num_classes=7, in_channels=3).eval()
    logits, feats = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 7)
    assert feats["pooled"].shape == (2, model.feature_dim)
    assert len(feats["stages"]) == 3
    torch.testing.assert_close(model.fc(feats["pooled"]), logits)


def test_grayscale_and_64px_inputs():
    model = build_model("resnet8", 10, in_channels=1).eval()
    assert model(torch.rand(2, 1, 28, 28))[0].shape == (2, 10)
    assert model(torch.rand(2, 1, 64, 64))[0].shape == (2, 10)


def test_sizes_order_as_expected():
    sizes = {a: count_parameters(build_model(a, 100)) for a in ("resnet8", "resnet20", "resnet8x4", "resnet32x4")}
    assert sizes["resnet8"] < sizes["resnet20"] < sizes["resnet8x4"] < sizes["resnet32x4"]
    assert 7.0e6 < sizes["resnet32x4"] < 7.6e6  # 7.4 M in the CRD benchmark


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(KeyError, match="resnet8x4"):
        build_model("resnet9000", 10)


def test_multiview_teacher_per_view_batchnorm_runs_one_backbone_call():
    backbone = build_model("resnet8", 10)
    teacher = MultiViewTeacher(backbone, ("rgb", "edge", "hf"), text_dim=12, view_bn="per_view")
    bns = [m for m in teacher.modules() if isinstance(m, ViewBatchNorm2d)]
    assert bns and all(len(m.bns) == 3 for m in bns)
    calls = []
    teacher.backbone.stem.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = teacher(torch.rand(3, 4, 3, 32, 32))
    assert calls == [12]  # one batched call over V*B images
    assert out["logits"].shape == (3, 4, 10) and out["pooled"].shape == (3, 4, 64) and out["text"].shape == (3, 4, 12)


def single_view_backbone(teacher: MultiViewTeacher, v: int) -> torch.nn.Module:
    """A copy of the teacher's backbone with view v's BatchNorms in place of the per-view ones:
    what view v alone should go through."""
    backbone = copy.deepcopy(teacher.backbone)
    for module in list(backbone.modules()):
        for name, child in module.named_children():
            if isinstance(child, ViewBatchNorm2d):
                setattr(module, name, child.bns[v])
    return backbone


def test_per_view_batchnorm_keeps_views_apart():
    """Each view alone, through a backbone with its own BatchNorms, gives what it gives in the
    stack: in training (batch statistics of that view only, running statistics kept per view)
    and in eval mode."""
    torch.manual_seed(0)
    teacher = MultiViewTeacher(build_model("resnet8", 10), ("rgb", "edge"), 4, "per_view").train()
    views = torch.stack([torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32) * 0.1 + 0.5])
    alone = [single_view_backbone(teacher, v).train() for v in range(2)]  # copies, before any step
    both = teacher(views)["pooled"]
    for v in range(2):
        torch.testing.assert_close(both[v], alone[v].features(views[v])[0])
    bns = [m for m in teacher.modules() if isinstance(m, ViewBatchNorm2d)]
    for v in range(2):  # the running statistics each view's own BatchNorms gathered alone
        singles = [m for m in alone[v].modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(singles) == len(bns)
        for bn, single in zip(bns, singles):
            torch.testing.assert_close(bn.bns[v].running_mean, single.running_mean)
            torch.testing.assert_close(bn.bns[v].running_var, single.running_var)
    assert not torch.allclose(bns[0].bns[0].running_mean, bns[0].bns[1].running_mean)
    teacher.eval()
    both = teacher(views)["logits"]
    for v in range(2):
        torch.testing.assert_close(both[v], single_view_backbone(teacher, v).eval()(views[v])[0])
    shared = MultiViewTeacher(build_model("resnet8", 10), ("rgb", "edge"), 4, "shared")
    assert not any(isinstance(m, ViewBatchNorm2d) for m in shared.modules())


def test_per_view_bn_starts_from_the_rgb_teacher():
    rgb = build_model("resnet8", 10)
    with torch.no_grad():
        rgb.stem[1].running_mean.fill_(0.7)
    teacher = MultiViewTeacher(rgb, ("rgb", "edge", "hf"), 4, "per_view")
    for bn in teacher.backbone.stem[1].bns:
        torch.testing.assert_close(bn.running_mean, torch.full_like(bn.running_mean, 0.7))


def test_eval_per_view_batchnorm_is_one_affine_per_view():
    bn = ViewBatchNorm2d(torch.nn.BatchNorm2d(8), 3).train()
    for _ in range(3):
        bn(torch.randn(3 * 16, 8, 5, 5) * 2 + 1)
    for b in bn.bns:
        torch.nn.init.uniform_(b.weight, 0.5, 2.0)
        torch.nn.init.normal_(b.bias)
    bn.eval()
    x = torch.randn(3 * 16, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    reference = torch.cat([b(c) for b, c in zip(bn.bns, x.chunk(3))])
    out = bn(x)
    torch.testing.assert_close(out, reference)
    assert out.is_contiguous(memory_format=torch.channels_last)
