"""The pseudo-label folder: the one format that gradcam, refine and train-student exchange.

Layout of a folder::

    provenance.json          what produced it (stage, config, model ids, source folder, git revision, time)
    manifest.csv             one row per person, merged from the parts (written by ``finalize``)
    summary.json             counts: persons, valid, invalid per reason
    parts/<shard>-<seq>.csv               manifest rows of one chunk (written LAST: marks the chunk done)
    parts/<shard>-<seq>.heatmap_64.npy    [N, 64, 64] float16, min-max normalised to [0, 1] (zeros if invalid)
    parts/<shard>-<seq>.raw.npy           [N, h, w] float32 raw maps on the producing model's grid (optional)
    previews/<n>_<sample id>.png          overlays a person can browse

Every file is written atomically; a chunk counts as done only once its CSV exists, so an interrupted
job loses at most the chunk in flight and a resumed job skips every sample id already in a CSV.
Several processes write disjoint shards (``shard="rank0"``, ``"rank1"``...) into one folder.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gcdr.atomic import atomic_path, write_json_atomic
from gcdr.provenance import PROVENANCE_FILE

log = logging.getLogger(__name__)

HEATMAP_SIZE = 64
MANIFEST_COLUMNS = [
    "sample_id", "image_path", "head_x1_px", "head_y1_px", "head_x2_px", "head_y2_px",
    "answer", "key_noun", "valid", "invalid_reason", "source", "part", "row", "raw_h", "raw_w",
]


@dataclass
class PseudoLabel:
    """One person's pseudo-label.

    heatmap_64: [64, 64] float in [0, 1] (min-max normalised), all zeros when invalid.
    raw_map:    [h, w] float32 map on the producing model's own grid (e.g. BLIP's 24x24 patches), or None.
    """

    sample_id: str
    heatmap_64: np.ndarray
    valid: bool = True
    invalid_reason: str = ""
    raw_map: np.ndarray | None = None
    answer: str = ""
    key_noun: str = ""
    image_path: str = ""
    head_box_xyxy_px: tuple[float, float, float, float] = (np.nan, np.nan, np.nan, np.nan)
    source: str = ""
    extra: dict = field(default_factory=dict)


def normalize_heatmap(heatmap: np.ndarray, eps: float = 1e-11) -> np.ndarray:
    """Min-max normalise to [0, 1] as GCDR does, (h - min) / (max - min + eps); float32."""
    heatmap = np.asarray(heatmap, np.float32)
    return (heatmap - heatmap.min()) / (heatmap.max() - heatmap.min() + eps)


def resize_to_64(raw_map: np.ndarray) -> np.ndarray:
    """Bilinear resize of a raw [h, w] map to [64, 64] (half-pixel centres, as torch align_corners=False)."""
    return cv2.resize(np.asarray(raw_map, np.float32), (HEATMAP_SIZE, HEATMAP_SIZE), interpolation=cv2.INTER_LINEAR)


def invalid_reason(raw_map: np.ndarray | None, answer: str | None = None, require_answer: bool = False) -> str:
    """Why a raw map cannot serve as a pseudo-label ("" when it can): nan, all_zero, constant, no_answer."""
    if require_answer and not (answer or "").strip():
        return "no_answer"
    if raw_map is None:
        return "missing"
    raw_map = np.asarray(raw_map, np.float32)
    if not np.all(np.isfinite(raw_map)):
        return "nan"
    if not np.any(raw_map):
        return "all_zero"
    if float(raw_map.max() - raw_map.min()) <= 1e-12:
        return "constant"
    return ""


def _float_or_nan(value) -> float:
    return float(value) if value not in ("", None) else float("nan")


def _safe_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id).strip("_")[-80:]


class PseudoLabelWriter:
    """Append pseudo-labels to a folder in atomic chunks; skip-aware for resuming.

    Usage::

        with PseudoLabelWriter(folder, shard="rank0") as writer:
            todo = [s for s in samples if s.sample_id not in writer.done_ids]
            for label in compute(todo):
                writer.add(label, preview_rgb=overlay)   # preview is optional
    """

    def __init__(self, folder: str | Path, shard: str = "rank0", chunk_size: int = 256,
                 max_previews: int | None = 0):
        self.folder = Path(folder)
        self.parts_dir = self.folder / "parts"
        self.preview_dir = self.folder / "previews"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.chunk_size = chunk_size
        self.max_previews = max_previews  # None = all
        self._remove_orphans()
        self.done_ids: set[str] = set(read_manifest(self.folder, merged=False)["sample_id"])
        self._n_previews = len(list(self.preview_dir.glob("*.png"))) if self.preview_dir.is_dir() else 0
        self._seq = 1 + max((int(p.stem.split("-")[-1]) for p in self.parts_dir.glob(f"{shard}-*.csv")),
                            default=-1)
        self._pending: list[PseudoLabel] = []

    def _remove_orphans(self) -> None:
        # arrays of a chunk whose CSV never landed (the job died between the writes): redo that chunk
        for array_file in self.parts_dir.glob(f"{self.shard}-*.npy"):
            chunk = array_file.name.split(".")[0]
            if not (self.parts_dir / f"{chunk}.csv").exists():
                array_file.unlink(missing_ok=True)
        for tmp in self.parts_dir.glob(f".{self.shard}-*"):
            tmp.unlink(missing_ok=True)

    def add(self, label: PseudoLabel, preview_rgb: np.ndarray | None = None) -> None:
        """Queue one label (flushed every ``chunk_size``); write its preview PNG if one is given and wanted."""
        if label.sample_id in self.done_ids:
            raise ValueError(f"sample {label.sample_id!r} is already in {self.folder}")
        self.done_ids.add(label.sample_id)
        self._pending.append(label)
        if preview_rgb is not None and self.wants_preview():
            path = self.preview_dir / f"{self._n_previews:06d}_{_safe_name(label.sample_id)}.png"
            with atomic_path(path) as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(preview_rgb, cv2.COLOR_RGB2BGR))
            self._n_previews += 1
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def wants_preview(self) -> bool:
        return self.max_previews is None or self._n_previews < self.max_previews

    def flush(self) -> None:
        if not self._pending:
            return
        chunk = f"{self.shard}-{self._seq:05d}"
        labels, self._pending = self._pending, []
        heatmaps = np.stack([np.asarray(lb.heatmap_64, np.float32) for lb in labels]).astype(np.float16)
        raws = [lb.raw_map for lb in labels]
        has_raw = any(r is not None for r in raws)
        rows = []
        for i, lb in enumerate(labels):
            raw_h, raw_w = (lb.raw_map.shape if lb.raw_map is not None else (0, 0))
            rows.append({
                "sample_id": lb.sample_id, "image_path": lb.image_path,
                "head_x1_px": lb.head_box_xyxy_px[0], "head_y1_px": lb.head_box_xyxy_px[1],
                "head_x2_px": lb.head_box_xyxy_px[2], "head_y2_px": lb.head_box_xyxy_px[3],
                "answer": lb.answer, "key_noun": lb.key_noun, "valid": bool(lb.valid),
                "invalid_reason": lb.invalid_reason, "source": lb.source, "part": chunk, "row": i,
                "raw_h": raw_h, "raw_w": raw_w, **lb.extra,
            })
        with atomic_path(self.parts_dir / f"{chunk}.heatmap_64.npy") as tmp:
            np.save(tmp, heatmaps)
        if has_raw:
            max_h = max(r.shape[0] for r in raws if r is not None)
            max_w = max(r.shape[1] for r in raws if r is not None)
            padded = np.zeros((len(raws), max_h, max_w), np.float32)
            for i, r in enumerate(raws):
                if r is not None:
                    padded[i, : r.shape[0], : r.shape[1]] = r
            with atomic_path(self.parts_dir / f"{chunk}.raw.npy") as tmp:
                np.save(tmp, padded)
        with atomic_path(self.parts_dir / f"{chunk}.csv") as tmp:  # last: marks the chunk as done
            pd.DataFrame(rows).to_csv(tmp, index=False)
        self._seq += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> PseudoLabelWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # flush finished work even when interrupted: nothing computed is lost
        self.close()


def read_manifest(folder: str | Path, merged: bool = True) -> pd.DataFrame:
    """All manifest rows of a folder (from the parts: always current, also mid-run). Empty frame if none."""
    folder = Path(folder)
    merged_file = folder / "manifest.csv"
    if merged and merged_file.exists():
        parts_mtime = max((p.stat().st_mtime for p in (folder / "parts").glob("*.csv")), default=0)
        if merged_file.stat().st_mtime >= parts_mtime:
            return pd.read_csv(merged_file, keep_default_na=False, dtype={"sample_id": str})
    frames = [pd.read_csv(p, keep_default_na=False, dtype={"sample_id": str, "answer": str, "key_noun": str})
              for p in sorted((folder / "parts").glob("*.csv"))]
    if not frames:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    manifest = pd.concat(frames, ignore_index=True)
    manifest["valid"] = manifest["valid"].astype(str).str.lower().isin(["true", "1"])
    return manifest


def finalize(folder: str | Path, expected_ids: list[str] | None = None) -> dict:
    """Merge the parts into ``manifest.csv`` and write ``summary.json``; return the summary.

    ``expected_ids``: the sample ids the folder should cover; missing ones are counted (and logged).
    """
    folder = Path(folder)
    manifest = read_manifest(folder, merged=False)
    duplicated = manifest["sample_id"].duplicated(keep="last")
    if duplicated.any():
        log.warning("%s: %d duplicated sample ids, keeping the last", folder, int(duplicated.sum()))
        manifest = manifest[~duplicated]
    with atomic_path(folder / "manifest.csv") as tmp:
        manifest.to_csv(tmp, index=False)
    reasons = Counter(r for r, v in zip(manifest["invalid_reason"], manifest["valid"]) if not v)
    summary = {"persons": int(len(manifest)), "valid": int(manifest["valid"].sum()),
               "invalid": int((~manifest["valid"]).sum()), "invalid_reasons": dict(reasons)}
    if expected_ids is not None:
        missing = sorted(set(expected_ids) - set(manifest["sample_id"]))
        summary["expected"] = len(expected_ids)
        summary["missing"] = len(missing)
        if missing:
            log.warning("%s: %d expected samples are missing, e.g. %s", folder, len(missing), missing[:3])
    write_json_atomic(folder / "summary.json", summary)
    return summary


class PseudoLabelFolder:
    """Read a pseudo-label folder; O(1) lookup by sample id, heatmaps memory-mapped."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "parts").is_dir():
            raise FileNotFoundError(f"not a pseudo-label folder (no parts/): {self.folder}")
        self.manifest = read_manifest(self.folder)
        self.manifest = self.manifest.drop_duplicates("sample_id", keep="last").reset_index(drop=True)
        self._index = {sid: i for i, sid in enumerate(self.manifest["sample_id"])}
        self._parts = self.manifest["part"].to_numpy()
        self._rows = self.manifest["row"].to_numpy()
        self._valid = self.manifest["valid"].to_numpy(bool)
        self._heatmaps: dict[str, np.ndarray] = {}
        self._raws: dict[str, np.ndarray | None] = {}

    def __len__(self) -> int:
        return len(self.manifest)

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self._index

    @property
    def sample_ids(self) -> list[str]:
        return list(self.manifest["sample_id"])

    @property
    def provenance(self) -> dict:
        import json

        path = self.folder / PROVENANCE_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def is_valid(self, sample_id: str) -> bool:
        return bool(self._valid[self._index[sample_id]])

    def _part_heatmaps(self, part: str) -> np.ndarray:
        if part not in self._heatmaps:
            self._heatmaps[part] = np.load(self.folder / "parts" / f"{part}.heatmap_64.npy", mmap_mode="r")
        return self._heatmaps[part]

    def _part_raws(self, part: str) -> np.ndarray | None:
        if part not in self._raws:
            path = self.folder / "parts" / f"{part}.raw.npy"
            self._raws[part] = np.load(path, mmap_mode="r") if path.exists() else None
        return self._raws[part]

    def heatmap_64(self, sample_id: str) -> np.ndarray:
        """[64, 64] float32 in [0, 1]; KeyError naming the folder when the id is absent."""
        try:
            i = self._index[sample_id]
        except KeyError:
            raise KeyError(f"sample {sample_id!r} not in pseudo-label folder {self.folder}") from None
        return np.asarray(self._part_heatmaps(self._parts[i])[self._rows[i]], np.float32)

    def raw_map(self, sample_id: str) -> np.ndarray | None:
        i = self._index[sample_id]
        raws = self._part_raws(self._parts[i])
        if raws is None:
            return None
        h, w = int(self.manifest.at[i, "raw_h"]), int(self.manifest.at[i, "raw_w"])
        return None if h == 0 else np.asarray(raws[self._rows[i], :h, :w], np.float32)

    def get(self, sample_id: str) -> PseudoLabel:
        i = self._index[sample_id]
        row = self.manifest.iloc[i]
        return PseudoLabel(
            sample_id=sample_id, heatmap_64=self.heatmap_64(sample_id), valid=bool(self._valid[i]),
            invalid_reason=str(row["invalid_reason"]), raw_map=self.raw_map(sample_id),
            answer=str(row["answer"]), key_noun=str(row["key_noun"]), image_path=str(row["image_path"]),
            head_box_xyxy_px=tuple(_float_or_nan(row[c]) for c in MANIFEST_COLUMNS[2:6]), source=str(row["source"]),
        )
