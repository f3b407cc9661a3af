"""Do the fusion weights follow which view is right? The cpu profile's multi-view teacher
(CIFAR-10, teacher seed 0, the one the pilot distilled from) on the 5,000-image validation
split, with label-conditioned weights as in distillation: `weights_against_views` per view,
and the fused teacher's accuracy by weighting. Notebook 03 computes the same table for the
profile's first dataset; this file keeps it from before the final runs finish. Trains the
teacher if it is not under data/ (about 1 h 20 min on 2 cores).

    python docs/exploration/weights_vs_views.py   # -> docs/exploration/weights_vs_views.json
"""
import json
from pathlib import Path

from tmkd_core.analysis import fusion_weights, weights_against_views
from tmkd_core.config import dataset_config
from tmkd_core.experiment import Pipeline

pipe = Pipeline(dataset_config("cpu", "cifar10", {"teacher.seed": 0}))
fw = fusion_weights(pipe, "val")
result = {"dataset": "cifar10", "split": "val", "teacher_seed": 0, "condition": pipe.cfg.fusion.condition,
          "multiview_teacher_key": pipe.key("multiview_teacher"),
          **weights_against_views(fw["weights"], fw["view_logits"], fw["labels"], pipe.cfg.views.views)}
for row in result["per_view"]:
    print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()})
print(result["top_view"], result["fused"], sep="\n")
Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
