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


def test_tuning_trials_start_from_the_default_and_never_repeat():
    from tmkd_core.tune import SEARCH_SPACES, sample_trials

    trials = sample_trials(SEARCH_SPACES["TMKD"], 12, seed=0)
    assert trials[0] == {} and len(trials) == 12
    assert len({tuple(sorted(t.items())) for t in trials}) == 12
    assert sample_trials(SEARCH_SPACES["TMKD"], 12, seed=0) == trials
    assert len(sample_trials({"a": [1, 2]}, 10, seed=0)) == 3  # default + the whole 2-point grid
