"""`make bench` writes every row and column, its goals and its scaling figure (tiny sizes
here: speed itself is never asserted by a test)."""
import json
from dataclasses import replace

import pandas as pd
import pytest

from tmkd_core import bench


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
