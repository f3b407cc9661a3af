"""`make tune` on an Optuna study in a real SQLite file: the profile's setting first, every
trial queryable, and a search started again resumes its study instead of starting over."""
from dataclasses import replace

import optuna
import pandas as pd
from optuna.trial import TrialState

from tmkd_core import tune
from tmkd_core.config import with_overrides

SPACE = {"student.tau": [2.0, 4.0, 8.0]}


def test_a_search_started_again_resumes_its_study(cifar_cfg, tmp_path, monkeypatch):
    base = with_overrides(cifar_cfg, {"data.train_size": 200, "data.val_size": 100, "data.test_size": 200,
                                      "teacher.optim.epochs": 1, "teacher.optim.batch_size": 50,
                                      "student.optim.batch_size": 50, "student.optim.epochs": 1, "progress": False})
    monkeypatch.setattr(tune, "dataset_config", lambda *args, **kwargs: replace(base))
    monkeypatch.setattr(tune, "SEARCH_SPACES", {"KD": SPACE})
    storage = f"sqlite:///{tmp_path / 'tuning.db'}"
    argv = ["--profile", "smoke", "--methods", "KD", "--trials", "2", "--sampler", "random", "--trial-seeds", "0",
            "--seeds", "--storage", storage, "--out-dir", str(tmp_path / "figures")]
    tune.main(argv)
    (name,) = optuna.get_all_study_names(storage)
    first = optuna.load_study(study_name=name, storage=storage).trials
    assert [t.state for t in first] == [TrialState.COMPLETE] * 2
    assert first[0].params == {"student.tau": base.student.tau}  # the profile's own setting first
    assert 0 < first[0].value <= 1 and "run_key seed 0" in first[0].user_attrs

    tune.main(argv)  # started again: the study is complete, nothing is added or redone
    assert [(t.number, t.params, t.value) for t in optuna.load_study(study_name=name, storage=storage).trials] == \
        [(t.number, t.params, t.value) for t in first]

    tune.main([a if a != "2" else "3" for a in argv])  # asked for more: continues from trial 2
    trials = optuna.load_study(study_name=name, storage=storage).trials
    assert len(trials) == 3 and [t.params for t in trials[:2]] == [t.params for t in first]
    exported = pd.read_csv(tmp_path / "figures" / "tables" / "tuning_cifar10.csv")
    assert list(exported["trial"]) == [0, 1, 2] and exported["val_acc"].between(0, 100).all()
    assert "params_student.tau" in exported.columns
