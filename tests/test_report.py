"""The statistics the tables report, against numbers worked out by hand: the primary
comparison's four readings and notebook 05's ablation table (which also recomputes, byte for
byte, the committed table from the committed run records)."""
import json

import pandas as pd
import pytest

from tmkd_core.config import config_from_dict, dataset_config
from tmkd_core.report import Outputs, ablation_table, mean_std, primary_comparison, reading

from conftest import ROOT


def pairs(diffs, kd=0.80):
    """KD and TMKD records of pairs (teacher seed, seed) whose TMKD − KD differences are `diffs`."""
    records = []
    for i, d in enumerate(diffs):
        records += [{"method": "KD", "teacher_seed": i % 2, "seed": 100 + i, "test_acc": kd},
                    {"method": "TMKD", "teacher_seed": i % 2, "seed": 100 + i, "test_acc": kd + d}]
    return records


def test_the_primary_comparison_reads_a_loss_and_an_inconclusive_interval():
    # the mirror image of test_plan's win: differences -0.4, -0.6, -0.2, -0.8 points
    lost = primary_comparison(pairs([-0.004, -0.006, -0.002, -0.008]))
    sd = 100 * (sum((d - 0.005) ** 2 for d in (0.004, 0.006, 0.002, 0.008)) / 3) ** 0.5
    half = 3.182446 * sd / 2  # t(0.975, 3) sd / sqrt(4)
    assert lost["diff"] == pytest.approx(-0.5)
    assert (lost["ci_low"], lost["ci_high"]) == pytest.approx((-0.5 - half, -0.5 + half), rel=1e-5)
    assert lost["ci_high"] < 0 and lost["verdict"] == "TMKD loses to KD"
    # +2, -1.5, +1, -1 points: mean +0.125, sd 1.652, interval [-2.50, +2.75]: contains 0 and
    # reaches past ±0.5
    wide = primary_comparison(pairs([0.02, -0.015, 0.01, -0.01]))
    assert (wide["ci_low"], wide["ci_high"]) == pytest.approx((-2.5037, 2.7537), abs=1e-3)
    assert wide["verdict"] == "inconclusive (the interval contains 0 and reaches past ±0.5 point)"
    # the same interval inside a wider tie margin is a tie; a loss stays a loss whatever the margin
    assert primary_comparison(pairs([0.02, -0.015, 0.01, -0.01]), tie_margin=3)["verdict"] == "a tie within ±3 point"
    assert primary_comparison(pairs([-0.004, -0.006, -0.002, -0.008]), tie_margin=3)["verdict"] == "TMKD loses to KD"


@pytest.mark.parametrize("low, high, verdict", [
    (0.1, 0.3, "TMKD beats KD"),            # excludes 0: a win even inside the tie margin
    (-0.3, -0.1, "TMKD loses to KD"),
    (-0.4, 0.5, "a tie within ±0.5 point"),
    (-0.6, 0.2, "inconclusive (the interval contains 0 and reaches past ±0.5 point)"),
    (-0.2, 0.6, "inconclusive (the interval contains 0 and reaches past ±0.5 point)"),
])
def test_each_reading_of_an_interval(low, high, verdict):
    assert reading(low, high, "TMKD", "KD") == verdict


def record(setting, seed, test_acc, val_acc=0.5, teacher_seed=0):
    return {"method": "KD" if not setting else "TMKD", "setting": setting, "teacher_seed": teacher_seed,
            "seed": seed, "val_acc": val_acc, "test_acc": test_acc}


def test_the_ablation_table_by_hand():
    base = dataset_config("cpu", "cifar10")
    groups = {"weights": {"text": {}, "uniform": {"fusion.weights": "uniform"}},  # {}: the default
              "tau": {"7.5": {"student.tau": 7.5}, "9": {"student.tau": 9.0}}}   # no setting is the default
    kd = [record("", s, a) for s, a in zip((1, 2, 3), (0.80, 0.81, 0.79))]
    tmkd = [record("weights=text", s, a, v) for s, a, v in zip((3, 1, 2), (0.80, 0.81, 0.83), (0.6, 0.7, 0.8))]
    tmkd += [record("weights=uniform", s, a) for s, a in zip((1, 2, 3), (0.79, 0.80, 0.80))]
    tmkd += [record(f"tau={label}", s, 0.8) for label in ("7.5", "9") for s in (1, 2, 3)]
    table = ablation_table(kd, tmkd, base, ["weights", "tau"], groups).set_index("setting")
    assert list(table.index) == ["text (default)", "uniform", "7.5", "9"]
    # text − KD, paired by seed: +1, +2, +1 points -> mean 4/3, sd 1/√3, t(0.975, 2) = 4.3027
    text = table.loc["text (default)"]
    assert (text["Δ test vs KD"], text["95% CI vs KD"]) == ("+1.33", "[-0.10, +2.77]")
    assert (text["Δ test vs TMKD"], text["95% CI vs TMKD"]) == ("", "")  # the default itself
    assert text["test (%)"] == "81.33 ± 1.53" and text["val (%)"] == "70.00 ± 10.00"
    assert text["test_mean"] == pytest.approx(244 / 3) and text["val_sd"] == pytest.approx(10.0)
    # uniform − KD: -1, -1, +1 -> -1/3, sd 2/√3; uniform − text: -2, -3, 0 -> -5/3, sd √(7/3)
    uniform = table.loc["uniform"]
    assert (uniform["Δ test vs KD"], uniform["95% CI vs KD"]) == ("-0.33", "[-3.20, +2.54]")
    assert (uniform["Δ test vs TMKD"], uniform["95% CI vs TMKD"]) == ("-1.67", "[-5.46, +2.13]")
    # a group without a default in this profile: nothing to compare with
    assert (table.loc[["7.5", "9"], "Δ test vs TMKD"] == "").all()
    assert table.loc["9", "Δ test vs KD"] == "+0.00"
    with pytest.raises(ValueError, match=r"weights=uniform: .*\(0, 4\).* no KD run"):
        ablation_table(kd, tmkd + [record("weights=uniform", 4, 0.8)], base, ["weights"], groups)


def test_the_committed_ablation_table_is_what_its_run_records_give(tmp_path):
    """figures/tables/ablations.* recomputed from the runs of figures/results/05_ablations.json
    (no training): what notebook 05 writes, byte for byte."""
    results = json.loads((ROOT / "figures" / "results" / "05_ablations.json").read_text())
    kd = [r for r in results["runs"] if r["method"] == "KD"]
    tmkd = [r for r in results["runs"] if r["method"] == "TMKD"]
    groups = list(dict.fromkeys(row["group"] for row in results["rows"]))
    table = ablation_table(kd, tmkd, config_from_dict(results["config"]), groups)
    assert table.to_dict("records") == results["rows"]
    kd_test = mean_std(r["test_acc"] for r in kd)
    assert list(kd_test) == pytest.approx(results["kd_test"])
    out = Outputs(tmp_path)
    out.table(table.drop(columns=["val_mean", "val_sd", "test_mean", "test_sd"]), "ablations",
              f"TMKD ablations on {results['dataset']}, seeds {results['seeds']}; "
              f"KD: {100 * kd_test[0]:.2f} ± {100 * kd_test[1]:.2f}")
    for ext in ("csv", "md", "tex"):
        committed = (ROOT / "figures" / "tables" / f"ablations.{ext}").read_bytes()
        assert (out.tables / f"ablations.{ext}").read_bytes() == committed, f"ablations.{ext} differs"


def test_markdown_tables_keep_signed_text_and_format_numbers(tmp_path):
    """A difference written as text ("+0.49") keeps its sign and, like every column whose
    cells all read as numbers, is right-aligned; numbers are shown to 2 decimals, a missing
    cell (None, NaN, pd.NA, "") is blank, never "nan", and a repeated column name keeps its own
    cells."""
    df = pd.DataFrame({"Δ": ["+0.49", ""], "95% CI": ["[+0.14, +0.85]", None], "pairs": [12, 3],
                       "acc (%)": [49.301, float("nan")], "n": pd.array([2, None], dtype="Int64")})
    lines = Outputs(tmp_path).table(df, "signed").read_text().splitlines()
    assert lines[1] == "|------:|:---------------|--------:|----------:|----:|"
    assert lines[2] == "| +0.49 | [+0.14, +0.85] |      12 |     49.30 |   2 |"
    assert lines[3] == "|       |                |       3 |           |     |"
    twice = pd.DataFrame([["a", 1.0]], columns=["x", "x"])
    assert Outputs(tmp_path).table(twice, "twice").read_text().splitlines()[2] == "| a   | 1.00 |"
