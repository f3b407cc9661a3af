"""The cpu profile's RGB teacher (CIFAR-10, seed 0) at 15 and 30 epochs, on the 5,000-image
validation split: the numbers behind docs/protocol.md's "Teacher strength". Trains a teacher
that is not under data/ yet (about 20 and 35 min on 2 cores).

    python docs/exploration/teacher_epochs.py   # -> docs/exploration/teacher_epochs.json
"""
import json
from pathlib import Path

from tmkd_core.config import dataset_config
from tmkd_core.experiment import Pipeline
from tmkd_core.train import evaluate

rows = []
for epochs in (15, 30):
    pipe = Pipeline(dataset_config("cpu", "cifar10", {"teacher.seed": 0, "teacher.optim.epochs": epochs}))
    model, info = pipe.train_or_load_rgb_teacher()
    rows.append({"epochs": epochs, "key": pipe.key("rgb_teacher"), "val_acc": 100 * evaluate(model, pipe.splits.val, device=pipe.device),
                 "train_acc_last_epoch": 100 * info["history"][-1]["train_acc"],
                 "epoch_s": [round(h["time_s"], 1) for h in info["history"]]})
    print(rows[-1]["epochs"], rows[-1]["key"], f"{rows[-1]['val_acc']:.2f}")
Path(__file__).with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
