"""`make bench` writes every row and column, its goals and its scaling figure (tiny sizes
here: speed itself is never asserted by a test)."""
import copy
import json
from dataclasses import replace
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from tmkd_core import bench
from tmkd_core.data import ImageSet
from tmkd_core.models import build_model


def test_bench_writes_every_variant_with_every_column(cifar_cfg, tmp_path, monkeypatch):
    # the smoke configuration, with the test session's data paths; the compile levers are
    # left out (a minute of compiling), bf16 stays in
    monkeypatch.setattr(bench, "dataset_config", lambda *args, **kwargs: replace(cifar_cfg, progress=False))
    bench.main(["--profile", "smoke", "--batch-size", "16", "--steps", "1", "--rounds", "1", "--levers", "bf16",
                "--scaling-batches", "8", "--scaling-sizes", "32", "64", "--scaling-steps", "1",
                "--out-dir", str(tmp_path)])
    table = pd.read_csv(tmp_path / "tables" / "bench.csv")
    assert list(table.columns) == bench.COLUMNS
    references = [f"reference loop ({arch})" for arch in dict.fromkeys((cifar_cfg.student.arch, cifar_cfg.teacher.arch))]
    assert list(table["variant"]) == references + list(bench.VARIANTS) + [bench.TEACHER, "CE, bf16 autocast"]
    assert (table[["step_ms", "img_per_s", "gflops_per_s", "fraction_of_peak"]] > 0).all().all()
    by = table.set_index("variant")
    assert by.loc[references[0], "x_reference"] == 1.0
    assert by.loc["CE", "x_reference"] == pytest.approx(by.loc["CE", "img_per_s"] / by.loc[references[0], "img_per_s"])
    assert by.loc["CE", "step_ms"] == pytest.approx(16 / by.loc["CE", "img_per_s"] * 1000)
    assert by.loc["CE, bf16 autocast", "precision"] == "bf16"
    goals = pd.read_csv(tmp_path / "tables" / "bench_goals.csv")
    assert len(goals) == 4 and set(goals["met"]) <= {True, False}
    result = json.loads((tmp_path / "results" / "bench.json").read_text())
    assert result["machine"]["threads"] >= 1 and result["machine"]["cpu"]
    assert {"float32", "bf16"} == set(result["peaks"]) and result["peaks"]["float32"]["gflops_per_s"] > 0
    # FLOPs counted, not estimated: the TMKD step adds the teacher's forward on 3 views to CE's
    flops = {r["variant"]: r["flops_per_step"] for r in result["rows"]}
    assert flops["KD (online)"] > flops["CE"] and flops["TMKD (online)"] > flops["KD (online)"]
    assert flops["CE"] == flops[references[0]]  # the same model and batch as the reference loop
    assert len(result["scaling"]) == 2 * 2 and (tmp_path / "bench_scaling.png").exists()
    ops = pd.read_csv(tmp_path / "tables" / "bench_ops.csv")
    ce = ops[ops["variant"] == "CE"].set_index("category")
    assert ce["share"].sum() == pytest.approx(1.0) and ce.loc["convolution backward", "ms_per_step"] > 0


def test_the_compiled_teacher_stop_fires_when_its_outputs_differ():
    """`make bench` times a compiled teacher only if it gives the eager teacher's logits and
    weights within the tolerance of their precision (`bench.check_compiled_teacher`). Stand-ins
    for the two pipelines here: a teacher whose outputs move by more than that must stop the
    bench; by float rounding, not."""
    g = torch.Generator().manual_seed(0)
    train = ImageSet(torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8, generator=g),
                     torch.randint(0, 4, (16,), generator=g), list("abcd"))
    torch.manual_seed(0)
    net = build_model("resnet8", 4).eval()

    def pipeline(logit_shift=0.0, weight_shift=0.0, dtype=None):
        moved = copy.deepcopy(net)
        with torch.no_grad():
            moved.fc.bias += logit_shift

        @torch.no_grad()
        def teacher(x, labels):
            weights = torch.full((3, len(x)), 1 / 3) + weight_shift * torch.tensor([1.0, -1.0, 0.0])[:, None]
            return {"logits": moved(x)[0], "weights": weights}

        return SimpleNamespace(splits=SimpleNamespace(train=train), device=torch.device("cpu"), teacher_dtype=dtype,
                               frozen_teacher=lambda: teacher)

    eager = pipeline()
    assert net(train.images.float() / 255)[0].abs().max() < 1  # the bounds below are the tolerances themselves
    bench.check_compiled_teacher(eager, pipeline())               # the same outputs
    bench.check_compiled_teacher(eager, pipeline(1e-6, 1e-6))     # float rounding
    with pytest.raises(RuntimeError, match=r"teacher's logits by 1\.00e-03 \(> 1\.00e-04, the float32 tolerance\)"):
        bench.check_compiled_teacher(eager, pipeline(logit_shift=1e-3))
    with pytest.raises(RuntimeError, match=r"teacher's weights by 1\.00e-02"):
        bench.check_compiled_teacher(eager, pipeline(weight_shift=1e-2))
    bf16 = pipeline(dtype=torch.bfloat16)  # within bf16 rounding: no stop; far past it: the stop
    bench.check_compiled_teacher(bf16, pipeline(logit_shift=1e-3, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match=r"teacher's logits by 1\.00e-01 .*the bfloat16 tolerance"):
        bench.check_compiled_teacher(bf16, pipeline(logit_shift=0.1, dtype=torch.bfloat16))
