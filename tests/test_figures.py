"""The figures that show a comparison: a forest row is the paired differences of the pairs
both methods ran, the primary comparison on top, and legends stay off the data."""
import matplotlib

matplotlib.use("Agg")  # a test draws without a display

import pytest

from tmkd_core.figures import distillation_forest, paired_row
from tmkd_core.report import GAIN_STEPS


def _runs(method, offset, pairs, dataset="cifar10"):
    return [{"dataset": dataset, "method": method, "teacher_seed": t, "seed": s, "setting": "",
             "test_acc": 0.8 + offset + 0.001 * s} for t, s in pairs]


def test_a_forest_row_is_the_pairs_differences_with_their_interval():
    ref = _runs("KD", 0.0, [(0, 100), (1, 101), (0, 102)])
    row = paired_row("TMKD − KD", _runs("TMKD", -0.005, [(0, 100), (1, 101), (0, 102)]), ref)
    assert row["label"] == "TMKD − KD (3)" and row["diff"] == pytest.approx(-0.5)
    assert sorted(row["points"]) == [(pytest.approx(-0.5), 0), (pytest.approx(-0.5), 0), (pytest.approx(-0.5), 1)]
    assert row["ci_low"] == pytest.approx(-0.5) and row["ci_high"] == pytest.approx(-0.5)  # no spread
    assert paired_row("x", _runs("TMKD", 0.0, [(0, 100), (1, 101)]), ref)["ci_low"] is None  # 2 pairs: no interval
    with pytest.raises(ValueError, match=r"\(0, 104\)\] have no reference run"):
        paired_row("x", _runs("TMKD", 0.0, [(0, 104)]), ref)


def test_the_distillation_forest_puts_the_primary_on_top_and_its_legends_off_the_data():
    pairs = [(s % 2, s) for s in range(100, 106)]
    records = (_runs("KD", 0.0, pairs) + _runs("TMKD", -0.005, pairs) + _runs("CE", -0.04, pairs)
               + _runs("TMKD terms, RGB teacher", 0.0, pairs[:4]) + _runs("KD (multi-view, uniform)", -0.006, pairs[:4])
               + _runs("KD", 0.0, pairs[:3], "cifar100") + _runs("TMKD", 0.003, pairs[:3], "cifar100"))
    fig = distillation_forest(records, ("cifar10", "TMKD", "KD"), GAIN_STEPS)
    top, bottom = fig.axes[:2]
    labels = [t.get_text() for t in top.get_yticklabels()]
    assert labels[-1] == "cifar10 (primary): TMKD − KD (6)"  # y ticks run bottom to top: the first row on top
    assert not any("CE" in label for label in labels) and "cifar100: TMKD − KD (3)" in labels
    assert len(bottom.get_yticklabels()) == len(GAIN_STEPS)  # every step: all its methods ran
    fig.canvas.draw()
    for ax in (top, bottom):
        legend, frame = ax.get_legend().get_window_extent(), ax.get_window_extent()
        assert legend.x0 >= frame.x1  # beside the axes, not on the data
