"""What the smoke demo computes, in a form a test can compare across code changes (tests/test_demo.py).

``smoke_digest(out)``: for every pseudo-label folder under ``out``, its person count, a sha256 over every
person's id, validity and float16 map, and each person's map sum (for a tolerant comparison on another CPU);
plus the demo's student and quality tables. ``python tests/smoke_reference.py OUT`` prints it as JSON (how
tests/fixtures/smoke_demo_reference.json was recorded, from the code before the redesign).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import torch

from gcdr.pseudolabels import PseudoLabelFolder


def cpu_signature() -> str:
    """The CPU's model name, its vector-instruction flags and torch's kernel class: runs agree to the bit only
    where these agree (the same kernels, the same float arithmetic)."""
    model, flags = "unknown", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = " ".join(sorted(f for f in value.split() if f.startswith(("avx", "fma", "sse", "amx"))))
    except OSError:
        pass
    return f"{model} | {torch.backends.cpu.get_cpu_capability()} | {hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def smoke_digest(out: Path) -> dict:
    digest: dict = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": cpu_signature(),
                    "folders": {}}
    for folder in sorted(p.parent for p in out.glob("**/pseudo/**/summary.json")):
        labels = PseudoLabelFolder(folder)
        sha, sums = hashlib.sha256(), []
        for sample_id in labels.sample_ids:
            heatmap = labels.heatmap_64(sample_id).astype("float16")
            sha.update(sample_id.encode() + (b"1" if labels.is_valid(sample_id) else b"0") + heatmap.tobytes())
            sums.append(round(float(heatmap.astype("float64").sum()), 4))
        digest["folders"][folder.relative_to(out).as_posix()] = {
            "persons": len(labels), "sha256": sha.hexdigest(), "map_sums": sums}
    for name in ("students.csv", "quality.csv"):
        digest[name] = pd.read_csv(out / "demo" / name).to_dict("records")
    return digest


if __name__ == "__main__":
    print(json.dumps(smoke_digest(Path(sys.argv[1])), indent=1))
