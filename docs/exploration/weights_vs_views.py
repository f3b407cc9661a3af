"""Do the fusion weights follow which view is right? The cpu profile's two multi-view
teachers (CIFAR-10, teacher seeds 0 and 1: those the final runs distil from; seed 0 is the
pilot's) on the 5,000-image validation split, with label-conditioned weights as in
distillation: `weights_against_views` per view, the fused teacher's accuracy by weighting,
and the accuracy of the RGB teacher each was fine-tuned from. Notebook 03 computes the same
table for the profile's first dataset and teacher seed 0; this file keeps it from before the
final runs finish. Trains a teacher that is not under data/ (about 1 h 20 min on 2 cores).

    python docs/exploration/weights_vs_views.py   # -> docs/exploration/weights_vs_views.json
"""
import json
from pathlib import Path

from tmkd_core.analysis import fusion_weights, weights_against_views
from tmkd_core.config import dataset_config
from tmkd_core.experiment import Pipeline
from tmkd_core.train import evaluate

results = []
for seed in (0, 1):
    pipe = Pipeline(dataset_config("cpu", "cifar10", {"teacher.seed": seed}))
    rgb_teacher, _ = pipe.train_or_load_rgb_teacher()
    fw = fusion_weights(pipe, "val")
    results.append({"dataset": "cifar10", "split": "val", "teacher_seed": seed, "condition": pipe.cfg.fusion.condition,
                    "rgb_teacher_key": pipe.key("rgb_teacher"), "multiview_teacher_key": pipe.key("multiview_teacher"),
                    "rgb_teacher_accuracy": 100 * evaluate(rgb_teacher, pipe.splits.val, device=pipe.device),
                    **weights_against_views(fw["weights"], fw["view_logits"], fw["labels"], pipe.cfg.views.views)})
    print(f"teacher seed {seed}: RGB teacher {results[-1]['rgb_teacher_accuracy']:.2f}")
    for row in results[-1]["per_view"]:
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
    print(results[-1]["top_view"], results[-1]["fused"], sep="\n")
Path(__file__).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
