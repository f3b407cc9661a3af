"""The command line: one JSON line on stdout, the notebooks' caches, settings checked as in
the library."""
import json

from tmkd_core.cli import main, parse_set
from tmkd_core.config import dataset_config, method_config
from tmkd_core.experiment import Pipeline

from conftest import DATA_ROOT, MIRROR

TINY = ["--set", f"data.root={DATA_ROOT}", "--set", f"data.mirror={MIRROR}", "--set", "device=cpu",
        "--set", "data.train_size=200", "--set", "data.val_size=100", "--set", "data.test_size=200",
        "--set", "student.optim.batch_size=50", "--set", "student.optim.epochs=1"]


def test_a_student_run_prints_one_json_line_and_lands_where_the_notebooks_read_it(capsys):
    # (as a subprocess under torchrun, with stdout captured whole: tests/test_distributed.py)
    assert main(["student", "--profile", "smoke", "--method", "CE", "--seed", "5", *TINY, "--set", "student.tau=2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    result = json.loads(lines[0])
    overrides = parse_set([a for a in TINY if a != "--set"] + ["student.tau=2"])
    pipe = Pipeline(method_config(dataset_config("smoke", "cifar10", {**overrides, "seed": 5}), "CE", overrides))
    assert result["run_key"] == pipe.key("student") and result["seed"] == 5
    assert json.loads(pipe.run_path.read_text())["test_acc"] == result["test_acc"]  # the library reads it back


def test_a_bad_setting_exits_2_naming_it(capsys):
    assert main(["student", "--profile", "smoke", "--method", "KD", "--set", "fusion.tau_w=abc"]) == 2
    assert "fusion.tau_w" in capsys.readouterr().err
    assert main(["report", "--profile", "smoke", "--set", "no_such.key=1"]) == 2
    assert "no_such" in capsys.readouterr().err
    assert main(["student", "--profile", "smoke", "--method", "CE", "--set", "seed"]) == 2
    assert "expected key=value" in capsys.readouterr().err


def test_values_are_json_where_they_parse():
    assert parse_set(["a=0.3", "b=null", "c=[\"rgb\", \"edge\"]", "d=sobel", "e=true"]) == {
        "a": 0.3, "b": None, "c": ["rgb", "edge"], "d": "sobel", "e": True}


def test_switches_lists_every_switch(capsys):
    assert main(["switches"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "sobel" in out["switches"]["views.edge_operator"] and "TMKD" in out["methods"]
