"""Exploration run (see README.md here); settings pinned to what they were when it ran."""
import sys, time, json
from tmkd_core.config import dataset_config, method_config
from tmkd_core.experiment import run_student
ds, sep, tep = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
E = {"views.edge_mode": "enhance", "views.hf_mode": "enhance"}
trials = [("KD", {}), ("TMKD", {**E, "teacher.multiview_optim.epochs": 4}), ("TMKD", {}), ("CE", {})]
base = dataset_config("cpu", ds, {"views.edge_mode": "map", "views.hf_mode": "map", "progress": False, "teacher.optim.epochs": tep, "student.optim.epochs": sep})
for m, s in trials:
    t0 = time.time()
    accs = [run_student(method_config(base, m, {**s, "seed": seed}))["val_acc"] for seed in (0, 1)]
    print(json.dumps({"method": m, "setting": s, "val": [round(100*a, 2) for a in accs],
                      "mean": round(50*sum(accs), 2), "s": round(time.time()-t0)}), flush=True)
