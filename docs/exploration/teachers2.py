"""Exploration run (see README.md here); settings pinned to what they were when it ran."""
import sys, time, json
from tmkd_core.config import dataset_config
from tmkd_core.experiment import Pipeline


def teacher_report(cfg, split):  # trained the teachers as well when this ran
    pipe = Pipeline(cfg)
    pipe.train_or_load_teachers()
    return pipe.teacher_report(split)
ds, ep = sys.argv[1], int(sys.argv[2])
E = {"views.edge_mode": "enhance", "views.hf_mode": "enhance"}
settings = [
 {"views.views": ["rgb"]},
 E,
 {},
 {**E, "teacher.multiview_optim.epochs": 4},
 {"views.views": ["rgb"], "teacher.multiview_optim.epochs": 4},
]
for s in settings:
    t0 = time.time()
    cfg = dataset_config("cpu", ds, {"views.edge_mode": "map", "views.hf_mode": "map", **s, "teacher.optim.epochs": ep, "progress": False})
    r = teacher_report(cfg, split="val")
    print(json.dumps({"setting": s, **{k: (round(100*v,2) if isinstance(v,float) and v<=1 else v) for k,v in r.items() if k not in ("teacher_params","arch","split")}, "s": round(time.time()-t0)}), flush=True)
