"""The step-time benchmark runs every variant on the same student and writes its table."""
from dataclasses import replace

import pandas as pd

from tmkd_core import bench


def test_bench_writes_one_row_per_variant(cifar_cfg, tmp_path, monkeypatch):
    # the smoke configuration, with the test session's data paths
    monkeypatch.setattr(bench, "dataset_config", lambda *args, **kwargs: replace(cifar_cfg, progress=False))
    bench.main(["--profile", "smoke", "--steps", "2", "--out-dir", str(tmp_path)])
    table = pd.read_csv(tmp_path / "tables" / "bench.csv")
    assert list(table["variant"]) == list(bench.VARIANTS)
    assert (table["step_ms"] > 0).all() and (table["peak_memory_mb"] > 0).all()
    assert table.loc[table["variant"] == "CE", "x CE"].item() == 1.0
    assert (tmp_path / "results" / "bench.json").exists()
