"""The paper profile, end to end on the CPU and offline, before any GPU is at hand: CIFAR-100
from the local mirror, the CIFAR-100 protocol's schedule and loss weights, online teacher
outputs, through the command line (the notebooks' library calls). Shrunk to fit the test
budget: 192 training images, one epoch, the MiniLM text teacher instead of CLIP, and
resnet8 as the teacher (resnet32x4 costs ~6 s a step here; `tmkd teachers --profile
paper` with it ran by hand: docs/paper_cpu_dry_run.md)."""
import json

import pytest

from tmkd_core.cli import main

from conftest import DATA_ROOT, MIRROR

TINY = {"device": "cpu", "data.root": str(DATA_ROOT), "data.mirror": str(MIRROR), "data.train_size": 192,
        "data.val_size": 100, "data.test_size": 100, "data.num_workers": 0, "teacher.arch": "resnet8",
        "teacher.optim.epochs": 1, "teacher.multiview_optim.epochs": 1, "student.optim.epochs": 1,
        "text.backend": "sentence_transformers", "text.model": None, "text.pretrained": None, "progress": False}


def run(capsys, *args):
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]
    assert main([*args, "--profile", "paper", "--dataset", "cifar100", *sets]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_the_paper_profile_runs_end_to_end_on_the_cpu(capsys):
    teachers = run(capsys, "teachers", "--split", "test")
    assert set(teachers["mean_weights"]) == {"rgb", "edge", "hf"} and 0 <= teachers["fused"] <= 1
    for method in ("KD", "TMKD"):
        result = run(capsys, "student", "--method", method, "--seed", "0")
        record = json.loads(open(result["record"]).read())
        cfg = record["config"]
        assert cfg["data"]["name"] == "cifar100" and cfg["student"]["teacher_outputs"] == "online"
        assert cfg["student"]["optim"]["milestones"] == [150, 180, 210] and cfg["student"]["ce_weight"] == 0.1
        assert record["history"][0]["lr"] == pytest.approx(0.05) and 0 <= result["test_acc"] <= 1
        assert {"ce", "kd"} <= {k.removeprefix("loss_") for k in record["history"][0]}
