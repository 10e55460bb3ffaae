"""One-off check (2026-12-05): the ablation's labeled-only and full-supervision Gaze-LLE models scored on the first
200 test persons (2026-12-04's test split) and on all 1,000, with seed sd and gap. Run from the repository root after
`make ablation`: `.venv/bin/python docs/results/check_first200.py`."""
import json
from pathlib import Path
import numpy as np
from gcdr.config import load_config
from gcdr.data import load_samples
from gcdr.metrics import evaluate
from gcdr.students.export import load_student
from gcdr.students.evaluation import dataset_for_student, predict_dataset
from gcdr.students.gazelle import configured_gazelle_backbone
cfg = load_config("configs/synthgaze.yaml", ["student.model=gazelle"])
samples = load_samples(cfg, "test")
root = Path("outputs/synthgaze/ablation")
rows = {}
for r, name in (("r0.05", "labeled-only"), ("r0.1", "labeled-only"), ("full", "full-supervision")):
    for s in range(3):
        d = root / f"seed{s}" / r / "students" / f"gazelle-{name}"
        student, _ = load_student(d / "model", backbone=configured_gazelle_backbone(cfg))
        ds = dataset_for_student(samples, student)
        hm, _ = predict_dataset(student, ds, 32, "cpu", progress=False)
        scored = [ds.sample(i) for i in range(len(ds))]  # with their image sizes, read by the dataset
        out = {}
        for part, sl in [("first200", slice(0, 200)), ("all", slice(0, len(scored)))]:
            m = evaluate(hm[sl], scored[sl], dataset="gazefollow", protocol=student.protocol)
            out[part] = (m["avg_l2"], m["auc"])
        logged = json.loads((d / "metrics.json").read_text())["final"]
        print(r, s, out, "logged", round(logged["avg_l2"], 4), flush=True)
        rows[(r, s)] = out
for part in ("first200", "all"):
    full = np.array([rows[("full", s)][part] for s in range(3)])
    for r in ("r0.05", "r0.1"):
        lab = np.array([rows[(r, s)][part] for s in range(3)])
        for k, metric in ((0, "avg L2"), (1, "AUC")):
            gap = abs(lab[:, k].mean() - full[:, k].mean())
            sd = max(lab[:, k].std(ddof=1), full[:, k].std(ddof=1))
            print(f"{part} {r} {metric}: labeled {lab[:,k].mean():.3f}+-{lab[:,k].std(ddof=1):.3f} "
                  f"full {full[:,k].mean():.3f}+-{full[:,k].std(ddof=1):.3f} gap {gap:.3f} ({gap/sd:.1f} sd)")
