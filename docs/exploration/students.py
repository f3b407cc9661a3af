"""Exploration run (see README.md here); settings pinned to what they were when it ran."""
import sys, time, json
from tmkd_core.config import dataset_config, method_config
from tmkd_core.experiment import run_student
ds = sys.argv[1]
E = {"views.edge_mode": "enhance", "views.hf_mode": "enhance"}
trials = [
 ("KD", {}),
 ("TMKD", {}),
 ("TMKD", E),
 ("TMKD", {**E, "views.enhance_lambda": 1.0}),
 ("TMKD", {**E, "teacher.multiview_optim.epochs": 6}),
 ("KD (multi-view, uniform)", {**E}),
 ("KD (multi-view, uniform)", {"views.views": ["rgb"]}),
 ("KD (multi-view, uniform)", {"views.views": ["rgb"], "teacher.multiview_optim.epochs": 6}),
 ("TMKD", {**E, "student.vlc": "teacher_text"}),
]
base = dataset_config("cpu", ds, {"views.edge_mode": "map", "views.hf_mode": "map", "teacher.optim.epochs": 12, "teacher_precision": "fp32", "progress": False})
for m, s in trials:
    t0 = time.time()
    accs = [run_student(method_config(base, m, {**s, "seed": seed}))["val_acc"] for seed in (0, 1)]
    print(json.dumps({"method": m, "setting": s, "val": [round(100*a, 2) for a in accs],
                      "mean": round(50*sum(accs), 2), "s": round(time.time()-t0)}), flush=True)
