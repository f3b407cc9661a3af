"""Importing RepDistiller / mdistiller CIFAR teachers: a checkpoint written here in the peer
layout (the peer models re-implemented as those codebases define them) gives the peer
model's logits, alone and as the pipeline's RGB teacher."""
import hashlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from tmkd_core.checkpoints import load_peer_checkpoint
from tmkd_core.config import method_config, with_overrides
from tmkd_core.experiment import Pipeline
from tmkd_core.models import INPUT_NORMS, build_model, count_parameters


# --- the peer models, layer names as in RepDistiller's models/resnet.py and models/wrn.py -------

class PeerBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class PeerResNet(nn.Module):
    def __init__(self, depth, num_filters, num_classes=100):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3], num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [PeerBasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [PeerBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class PeerWideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal = in_planes == out_planes
        self.convShortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)

    def forward(self, x):
        if not self.equal:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equal else self.convShortcut(x)) + out


class PeerNetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[PeerWideBlock(in_planes if i == 0 else out_planes, out_planes,
                                                   stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class PeerWRN(nn.Module):
    def __init__(self, depth, widen, num_classes=100):
        super().__init__()
        ch = [16, 16 * widen, 32 * widen, 64 * widen]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = PeerNetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = PeerNetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = PeerNetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(self.relu(self.bn1(out)), 1).flatten(1))


def randomised(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, as a trained model has."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def write_peer_checkpoint(model, path, prefix=""):
    torch.save({"model": {prefix + k: v for k, v in model.state_dict().items()}, "epoch": 240}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def peer_input(x):
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in INPUT_NORMS["cifar100"])
    return (x - mean) / std  # RepDistiller's transforms.Normalize on [0, 1] images


@pytest.mark.parametrize("arch, peer", [("resnet8x4", lambda: PeerResNet(8, [32, 64, 128, 256])),
                                        ("resnet20", lambda: PeerResNet(20, [16, 16, 32, 64])),
                                        ("wrn_16_2", lambda: PeerWRN(16, 2))])
def test_a_peer_checkpoint_gives_the_peer_models_logits(arch, peer, tmp_path):
    source = randomised(peer())
    sha = write_peer_checkpoint(source, tmp_path / "ckpt.pth", prefix="module." if arch == "resnet20" else "")
    ours = build_model(arch, 100, input_norm="cifar100")
    assert count_parameters(ours) == count_parameters(source)
    load_peer_checkpoint(ours, tmp_path / "ckpt.pth", sha).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], source(peer_input(x)), atol=1e-5, rtol=1e-5)


def test_a_wrong_checksum_or_architecture_is_named(tmp_path):
    sha = write_peer_checkpoint(PeerResNet(8, [32, 64, 128, 256]), tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match="sha256 is .* teacher.checkpoint_sha256 says 00"):
        load_peer_checkpoint(build_model("resnet8x4", 100), tmp_path / "ckpt.pth", "00" * 32)
    with pytest.raises(ValueError, match="does not fit teacher.arch"):
        load_peer_checkpoint(build_model("resnet32x4", 100), tmp_path / "ckpt.pth", sha)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_peer_checkpoint(build_model("resnet8x4", 100), tmp_path / "missing.pth", sha)


def test_the_pipeline_imports_it_as_the_rgb_teacher_and_the_multiview_teacher_starts_from_it(cifar_cfg, tmp_path):
    source = randomised(PeerResNet(8, [16, 16, 32, 64], num_classes=10))
    sha = write_peer_checkpoint(source, tmp_path / "resnet8.pth")
    cfg = with_overrides(method_config(cifar_cfg, "KD"), {
        "teacher.arch": "resnet8", "teacher.checkpoint": str(tmp_path / "resnet8.pth"),
        "teacher.checkpoint_sha256": sha, "teacher.input_norm": "cifar100",
        "teacher_precision": "fp32"})  # compared with float32 below (`auto` is bf16 on CPUs that have it)
    pipe = Pipeline(cfg)
    x, labels = torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        torch.testing.assert_close(pipe.frozen_teacher()(x, labels)["logits"], source(peer_input(x)),
                                   atol=1e-5, rtol=1e-5)
    info = pipe.train_or_load_rgb_teacher()[1]
    assert info["imported_from"].endswith("resnet8.pth") and info["history"] == []  # kept by checksum
    # the multi-view teacher (teacher_init=rgb) is built from the imported weights
    mv = Pipeline(method_config(cfg, "TMKD"))
    assert mv.key("rgb_teacher") == pipe.key("rgb_teacher")
    build = mv._train_or_load
    mv._train_or_load = lambda stage, model, train: (  # the multi-view teacher as built, before its training
        {} if stage == "multiview_teacher" else build(stage, model, train))
    teacher, _ = mv.train_or_load_multiview_teacher()
    torch.testing.assert_close(teacher.backbone.stem[0].weight, source.conv1.weight)
    assert teacher.backbone.norm.name == "cifar100"
    other = Pipeline(with_overrides(cfg, {"teacher.checkpoint_sha256": "ab" * 32}))
    assert other.key("rgb_teacher") != pipe.key("rgb_teacher")  # the checksum stands for the weights
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        with_overrides(cfg, {"teacher.checkpoint_sha256": None})


def test_the_paper_profile_follows_the_cifar100_protocol():
    from tmkd_core.config import make_config
    from tmkd_core.train import make_optimizer

    kd = method_config(make_config("paper"), "KD")
    assert (kd.student.ce_weight, kd.student.alpha, kd.student.tau) == (0.1, 0.9, 4.0)
    assert method_config(make_config("paper"), "TMKD").student.ce_weight == 0.1
    dkd = method_config(make_config("paper"), "DKD")
    assert (dkd.student.ce_weight, dkd.student.dkd_beta, dkd.student.dkd_warmup_epochs) == (1.0, 8.0, 20.0)
    optim = kd.student.optim
    assert (optim.lr, optim.batch_size, optim.weight_decay, optim.momentum) == (0.05, 64, 5e-4, 0.9)
    opt, schedule = make_optimizer([nn.Parameter(torch.zeros(1))], optim, steps_per_epoch=3)
    lrs = []
    for _ in range(optim.epochs * 3):
        lrs.append(schedule.get_last_lr()[0])
        opt.step()
        schedule.step()
    at = {epoch: lrs[epoch * 3] for epoch in (0, 149, 150, 179, 180, 210, 239)}
    assert at == pytest.approx({0: 0.05, 149: 0.05, 150: 0.005, 179: 0.005, 180: 5e-4, 210: 5e-5, 239: 5e-5})
    assert method_config(make_config("cpu"), "KD").student.ce_weight == 1.0  # other profiles keep CE + KD
