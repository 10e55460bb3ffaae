"""The pseudo-label folder: the one format that gradcam, refine and train-student exchange.

Layout of a folder::

    provenance.json          what produced it (stage, config, model ids, source folder, git revision, time)
    manifest.csv             one row per person, merged from the parts (written by ``finalize``)
    summary.json             counts: persons, valid, invalid per reason, expected / missing persons, and the
                             content fingerprint of the parts it counted (written by ``finalize``, after
                             manifest.csv: a folder is final only while its summary's fingerprint is current)
    parts/format.json                     marks a folder whose every chunk has an index (written by new folders)
    parts/<shard>-<seq>.heatmap_64.npy    [N, 64, 64] float16, min-max normalised to [0, 1] (zeros if invalid)
    parts/<shard>-<seq>.raw.npy           [N, h, w] float32 raw maps on the producing model's grid (optional)
    parts/<shard>-<seq>.draws_64.npy      [N, K, 64, 64] float16, the K refined draws of each person, each min-max
                                          normalised (zeros if invalid); only refine with ``keep_draws``, whose
                                          chunk CSVs then also hold a ``draw_spread`` column (NaN if invalid)
    parts/<shard>-<seq>.index.json        the chunk's integrity record: rows, sha256 of its sample ids, and
                                          bytes + sha256 of each of its files (csv, heatmap_64.npy, raw.npy,
                                          draws_64.npy)
    parts/<shard>-<seq>.csv               manifest rows of one chunk (written LAST: marks the chunk done)
    previews/<n>_<sample id>.png          overlays a person can browse

Every file is written atomically, in the order arrays, index, CSV; a chunk counts as done only once its CSV
exists, so an interrupted job loses at most the chunk in flight (its arrays and index are orphans, removed
by the next writer of that shard) and a resumed job skips every sample id already in a CSV.
Several processes write disjoint shards (``shard="rank0"``, ``"rank1"``...) into one folder.

Integrity: opening a folder (:class:`PseudoLabelFolder`, :func:`read_manifest`, a :class:`PseudoLabelWriter`,
:func:`finalize`) checks every chunk once: its files' sizes and sha256 against its index, the CSV's ``part`` and
``row`` columns (row i of a chunk is map i), the arrays' headers and shapes against the CSV; and, when
``manifest.csv`` exists, that it agrees row by row with the parts (it may lag behind chunks written after
it, never disagree). Any disagreement raises :class:`PseudoLabelFolderError`, one line naming the file, what is
wrong and what to do; the parts are the only source of maps. Folders written before indexes existed
(no ``parts/format.json``) are still read: everything but the checksums is checked, and that is logged once.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from gcdr.atomic import atomic_path, write_json_atomic
from gcdr.errors import UserError
from gcdr.heatmaps import HEATMAP_SIZE
from gcdr.provenance import PROVENANCE_FILE

log = logging.getLogger(__name__)

FORMAT_FILE = "format.json"      # in parts/: every chunk of this folder has an index
INDEX_SUFFIX = ".index.json"
INDEX_VERSION = 1
MANIFEST_COLUMNS = [
    "sample_id", "image_path", "head_x1_px", "head_y1_px", "head_x2_px", "head_y2_px",
    "answer", "key_noun", "valid", "invalid_reason", "source", "part", "row", "raw_h", "raw_w",
]
DRAWS_SUFFIX = ".draws_64.npy"   # [N, K, 64, 64]: the K refined draws per person (refine.keep_draws)
DRAW_SPREAD = "draw_spread"      # the manifest column beside them (gcdr.heatmaps.argmax_spread of the draws)


@dataclass
class PseudoLabel:
    """One person's pseudo-label.

    heatmap_64: [64, 64] float in [0, 1] (min-max normalised), all zeros when invalid.
    raw_map:    [h, w] float32 map on the producing model's own grid (e.g. BLIP's 24x24 patches), or None.
    draws_64:   [K, 64, 64] float in [0, 1]: the K refined draws whose mean is heatmap_64, each min-max
                normalised (refine.keep_draws; only a writer made with ``draws=K`` takes them), or None.
    draw_spread: the draws' argmax spread around heatmap_64's argmax (gcdr.heatmaps.argmax_spread), NaN if none.
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
    draws_64: np.ndarray | None = None
    draw_spread: float = float("nan")


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


class PseudoLabelFolderError(UserError, ValueError):
    """A damaged pseudo-label folder: the message names the file, what is wrong and what to do."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _ids_sha256(sample_ids) -> str:
    return _sha256_bytes(json.dumps([str(s) for s in sample_ids]).encode("utf-8"))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _stage(folder: Path) -> str:
    """The stage that wrote the folder (from provenance.json), for error messages."""
    try:
        stage = json.loads((folder / PROVENANCE_FILE).read_text()).get("stage")
    except (OSError, ValueError, AttributeError):
        stage = None
    return f"the {stage} stage" if stage else "the stage that wrote it"


def _chunk_error(folder: Path, path: Path, problem: str) -> PseudoLabelFolderError:
    chunk = path.name.split(".")[0]
    return PseudoLabelFolderError(
        f"{path}: {problem}; delete {folder / 'parts' / chunk}.* and rerun {_stage(folder)} to redo that chunk")


def _manifest_error(folder: Path, problem: str) -> PseudoLabelFolderError:
    return PseudoLabelFolderError(
        f"{folder / 'manifest.csv'}: {problem}; rerun {_stage(folder)} to rewrite it from the parts "
        "(or delete it: the parts are read without it)")


def _chunk_names(parts_dir: Path) -> list[str]:
    """Done chunks (those whose CSV landed), sorted; temporary files (".name...") are not chunks."""
    return sorted(p.name[: -len(".csv")] for p in parts_dir.glob("*.csv") if not p.name.startswith("."))


def _read_csv(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data), keep_default_na=False,
                       dtype={"sample_id": str, "answer": str, "key_noun": str})


def _is_int(value) -> bool:
    """An integer as read_csv gives it (int, or a whole float in a column with gaps)."""
    return isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())


def _npy_shape(folder: Path, path: Path) -> tuple[int, ...]:
    """Shape from a .npy header; error if the header is damaged or the data is shorter/longer than it says."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(f)
            offset = f.tell()
    except (OSError, ValueError, EOFError) as error:
        raise _chunk_error(folder, path, f"is not a readable .npy file ({_first_line(error)})") from error
    if dtype.hasobject or dtype.kind != "f":
        raise _chunk_error(folder, path, f"holds {dtype}, not floats")
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        what = "is truncated" if size < expected else "is longer than its header says"
        raise _chunk_error(folder, path, f"{what} ({size} bytes, the header of shape {tuple(shape)} needs {expected})")
    return tuple(int(d) for d in shape)


def _check_index_files(folder: Path, chunk: str, index_path: Path, csv_data: bytes, checksums: bool) -> dict:
    parts = folder / "parts"
    try:
        index = json.loads(index_path.read_text())
        files = index["files"]
        ok = (index.get("chunk") == chunk and isinstance(files, dict) and f"{chunk}.csv" in files
              and f"{chunk}.heatmap_64.npy" in files
              and set(files) <= {f"{chunk}.csv", f"{chunk}.heatmap_64.npy", f"{chunk}.raw.npy",
                                 f"{chunk}{DRAWS_SUFFIX}"}
              and all(isinstance(e["bytes"], int) and isinstance(e["sha256"], str) for e in files.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise _chunk_error(folder, index_path, f"is damaged ({_first_line(error)})") from error
    if not ok:
        raise _chunk_error(folder, index_path, f"is not a valid index of chunk {chunk}")
    for optional in (parts / f"{chunk}.raw.npy", parts / f"{chunk}{DRAWS_SUFFIX}"):
        if optional.exists() and optional.name not in files:
            raise _chunk_error(folder, optional, f"is not recorded in {index_path.name}")
    for name, entry in files.items():
        path = parts / name
        if not path.is_file():
            raise _chunk_error(folder, path, f"is missing (recorded in {index_path.name})")
        size = len(csv_data) if name.endswith(".csv") else path.stat().st_size
        if size != entry["bytes"]:
            what = "is truncated" if size < entry["bytes"] else "is longer than recorded"
            raise _chunk_error(folder, path, f"{what} ({size} bytes, {index_path.name} records {entry['bytes']})")
        if checksums:
            digest = _sha256_bytes(csv_data) if name.endswith(".csv") else _sha256_file(path)
            if digest != entry["sha256"]:
                raise _chunk_error(folder, path, f"does not match its sha256 in {index_path.name} (damaged or edited)")
    return index


def _load_chunk(folder: Path, chunk: str, require_index: bool, checksums: bool) -> tuple[pd.DataFrame, bool]:
    """One done chunk's manifest rows, after checking the chunk's files agree; (rows, has an index)."""
    parts = folder / "parts"
    csv_path, index_path = parts / f"{chunk}.csv", parts / f"{chunk}{INDEX_SUFFIX}"
    heat_path, raw_path = parts / f"{chunk}.heatmap_64.npy", parts / f"{chunk}.raw.npy"
    try:
        csv_data = csv_path.read_bytes()
    except OSError as error:
        raise _chunk_error(folder, csv_path, f"cannot be read ({_first_line(error)})") from error
    index = None
    if index_path.exists():
        index = _check_index_files(folder, chunk, index_path, csv_data, checksums)
    elif require_index:
        raise _chunk_error(folder, index_path, f"is missing (parts/{FORMAT_FILE} says every chunk has one)")

    try:
        frame = _read_csv(csv_data)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise _chunk_error(folder, csv_path, f"cannot be parsed ({_first_line(error)})") from error
    absent = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if absent:
        raise _chunk_error(folder, csv_path, f"lacks the columns {absent}")
    n = len(frame)
    if n == 0:
        raise _chunk_error(folder, csv_path, "has no rows")
    # plain lists: a chunk has a few hundred rows, where pandas' per-call overhead would dominate
    def first(bad) -> int | None:
        return next((i for i, b in enumerate(bad) if b), None)

    def fail_at(i: int, problem: str) -> PseudoLabelFolderError:
        return _chunk_error(folder, csv_path, f"line {i + 2}: {problem}")

    parts_column = frame["part"].tolist()
    if (i := first(str(v) != chunk for v in parts_column)) is not None:
        raise fail_at(i, f"part {parts_column[i]!r} is not {chunk!r}")
    rows = frame["row"].tolist()
    if (i := first(not _is_int(v) or int(v) != k for k, v in enumerate(rows))) is not None:
        raise fail_at(i, f"row {rows[i]} where {i} belongs (row values must be 0..N-1 in order: rows swapped "
                         "or edited)")
    ids = [str(v) for v in frame["sample_id"].tolist()]
    seen: set[str] = set()
    if (i := first(not v or v in seen or seen.add(v) for v in ids)) is not None:
        raise fail_at(i, f"empty or repeated sample id {ids[i]!r}")
    valid = [str(v).lower() for v in frame["valid"].tolist()]
    if (i := first(v not in ("true", "false", "1", "0") for v in valid)) is not None:
        raise fail_at(i, f"valid is {frame['valid'].iloc[i]!r}, not True/False")
    raw_h, raw_w = frame["raw_h"].tolist(), frame["raw_w"].tolist()
    if (i := first(not (_is_int(h) and _is_int(w) and h >= 0 and w >= 0) for h, w in zip(raw_h, raw_w))) is not None:
        raise fail_at(i, f"raw_h, raw_w = {raw_h[i]!r}, {raw_w[i]!r} are not sizes")
    raw_hw = np.array([raw_h, raw_w], np.int64).T
    if index is not None and (index.get("rows") != n or index.get("sample_ids_sha256") != _ids_sha256(ids)):
        raise _chunk_error(folder, csv_path, f"its sample ids disagree with {index_path.name}")

    if not heat_path.is_file():
        raise _chunk_error(folder, heat_path, f"is missing ({csv_path.name} lists {n} persons)")
    shape = _npy_shape(folder, heat_path)
    if shape != (n, HEATMAP_SIZE, HEATMAP_SIZE):
        raise _chunk_error(folder, heat_path, f"has shape {shape}, {csv_path.name} lists {n} persons "
                                              f"(expected ({n}, {HEATMAP_SIZE}, {HEATMAP_SIZE}))")
    if raw_path.is_file():
        shape = _npy_shape(folder, raw_path)
        max_h, max_w = raw_hw.max(axis=0).astype(int)
        if len(shape) != 3 or shape[0] != n or shape[1] < max_h or shape[2] < max_w:
            raise _chunk_error(folder, raw_path, f"has shape {shape}, {csv_path.name} lists {n} persons with raw "
                                                 f"maps up to {max_h}x{max_w}")
    elif (raw_hw > 0).any():
        raise _chunk_error(folder, raw_path, f"is missing ({csv_path.name} lists raw maps)")
    draws_path = parts / f"{chunk}{DRAWS_SUFFIX}"
    if draws_path.is_file():
        shape = _npy_shape(folder, draws_path)
        if len(shape) != 4 or shape[0] != n or shape[1] < 1 or shape[2:] != (HEATMAP_SIZE, HEATMAP_SIZE):
            raise _chunk_error(folder, draws_path, f"has shape {shape}, {csv_path.name} lists {n} persons "
                                                   f"(expected ({n}, K, {HEATMAP_SIZE}, {HEATMAP_SIZE}))")
    frame["valid"] = [v in ("true", "1") for v in valid]
    return frame, index is not None


_WARNED_UNINDEXED: set[str] = set()


def _load_parts(folder: Path, checksums: bool = True) -> dict[str, pd.DataFrame]:
    """Every done chunk's rows (checked), by chunk name in sorted order."""
    parts = folder / "parts"
    require_index = (parts / FORMAT_FILE).exists()
    chunks, unindexed = {}, []
    for chunk in _chunk_names(parts):
        chunks[chunk], indexed = _load_chunk(folder, chunk, require_index, checksums)
        if not indexed:
            unindexed.append(chunk)
    if unindexed and str(folder.resolve()) not in _WARNED_UNINDEXED:
        _WARNED_UNINDEXED.add(str(folder.resolve()))
        log.warning("%s: %d of %d chunks were written without checksums (older gcdr); checked their sizes, "
                    "rows and shapes only", folder, len(unindexed), len(chunks))
    return chunks


def _merge(chunks: dict[str, pd.DataFrame]) -> pd.DataFrame:
    if not chunks:
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return pd.concat(list(chunks.values()), ignore_index=True)


def _manifest_text(manifest: pd.DataFrame) -> str:
    """What ``finalize`` writes as manifest.csv: the rows of the parts, the last of any repeated sample id."""
    return manifest[~manifest["sample_id"].duplicated(keep="last")].to_csv(index=False)


def _first_difference(expected: pd.DataFrame, found: pd.DataFrame) -> str:
    if list(expected.columns) != list(found.columns):
        return f"its columns {list(found.columns)} are not those of the parts {list(expected.columns)}"
    if len(expected) != len(found):
        return f"has {len(found)} rows where the parts hold {len(expected)} (truncated or edited)"
    for column in expected.columns:
        a, b = expected[column], found[column]
        same = a.astype(str).to_numpy() == b.astype(str).to_numpy()
        if not same.all():  # the same number written differently (e.g. 24 / 24.0) is the same
            numbers = [pd.to_numeric(x, errors="coerce").to_numpy(float) for x in (a, b)]
            same |= np.isclose(*numbers)
        if not same.all():
            i = int(np.flatnonzero(~same)[0])
            return (f"line {i + 2} (sample {found['sample_id'].iloc[i]!r}) has {column}={b.iloc[i]} where "
                    f"parts/{expected['part'].iloc[i]}.csv has {a.iloc[i]} (edited?)")
    return ""


def _check_merged(folder: Path, chunks: dict[str, pd.DataFrame]) -> None:
    """manifest.csv (when present) must agree with the parts; it may only lack chunks written after it."""
    path = folder / "manifest.csv"
    if not path.exists():
        return
    data = path.read_bytes()
    try:
        found = _read_csv(data)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise _manifest_error(folder, f"cannot be parsed ({_first_line(error)})") from error
    if "part" not in found.columns or "sample_id" not in found.columns:
        raise _manifest_error(folder, "has no part / sample_id columns")
    parts = found["part"].astype(str)
    unknown = np.flatnonzero(~parts.isin(list(chunks)).to_numpy())
    if len(unknown):
        i = int(unknown[0])
        raise _manifest_error(folder, f"line {i + 2} names chunk {parts.iloc[i]!r}, which is not in parts/ "
                                      "(a damaged or truncated line, or the chunk was deleted)")
    covered = set(parts)
    written = path.stat().st_mtime_ns
    # finalize merged every chunk older than manifest.csv; a chunk written after it (a resumed run, not
    # finalized yet) may be missing from it. Chunks whose every id is repeated in a later chunk add no rows.
    merged = {c: f for c, f in chunks.items()
              if c in covered or (folder / "parts" / f"{c}.csv").stat().st_mtime_ns < written}
    expected = _merge(merged)
    expected = expected[~expected["sample_id"].duplicated(keep="last")]
    older = [c for c in dict.fromkeys(expected["part"].astype(str)) if c not in covered]
    if older:
        raise _manifest_error(folder, f"lacks chunk {older[0]!r}, which is older than it (truncated or edited; "
                                      f"{len(older)} chunk(s) missing)")
    text = expected.to_csv(index=False)
    if text.encode("utf-8") == data:
        return
    problem = _first_difference(_read_csv(text.encode("utf-8")), found)
    if problem:
        raise _manifest_error(folder, problem)


class PseudoLabelWriter:
    """Append pseudo-labels to a folder in atomic chunks; skip-aware for resuming.

    Usage::

        with PseudoLabelWriter(folder, shard="rank0") as writer:
            todo = [s for s in samples if s.sample_id not in writer.done_ids]
            for label in compute(todo):
                writer.add(label, preview_rgb=overlay)   # preview is optional

    ``draws``: K, for a folder that keeps K refined draws per person (refine.keep_draws): every chunk then
    gets a draws file [N, K, 64, 64] and a ``draw_spread`` column, zeros and NaN for labels without draws.
    """

    def __init__(self, folder: str | Path, shard: str = "rank0", chunk_size: int = 256,
                 max_previews: int | None = 0, draws: int | None = None):
        self.folder = Path(folder)
        self.draws = draws
        self.parts_dir = self.folder / "parts"
        self.preview_dir = self.folder / "previews"
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.chunk_size = chunk_size
        self.max_previews = max_previews  # None = all
        self._remove_orphans()
        chunks = _load_parts(self.folder)  # checks every done chunk (all shards)
        self.done_ids: set[str] = set(_merge(chunks)["sample_id"])
        format_file = self.parts_dir / FORMAT_FILE
        if not format_file.exists() and all((self.parts_dir / f"{c}{INDEX_SUFFIX}").exists() for c in chunks):
            write_json_atomic(format_file, {"format": "gcdr-pseudolabels", "chunk_index": INDEX_VERSION})
        self._n_previews = len(list(self.preview_dir.glob("*.png"))) if self.preview_dir.is_dir() else 0
        self._seq = 1 + max((int(p.stem.split("-")[-1]) for p in self.parts_dir.glob(f"{shard}-*.csv")),
                            default=-1)
        self._pending: list[PseudoLabel] = []

    def _remove_orphans(self) -> None:
        # arrays and index of a chunk whose CSV never landed (the job died between the writes): redo that chunk
        leftovers = [*self.parts_dir.glob(f"{self.shard}-*.npy"), *self.parts_dir.glob(f"{self.shard}-*{INDEX_SUFFIX}")]
        for leftover in leftovers:
            chunk = leftover.name.split(".")[0]
            if not (self.parts_dir / f"{chunk}.csv").exists():
                leftover.unlink(missing_ok=True)
        for tmp in self.parts_dir.glob(f".{self.shard}-*"):
            tmp.unlink(missing_ok=True)

    def add(self, label: PseudoLabel, preview_rgb: np.ndarray | None = None) -> None:
        """Queue one label (flushed every ``chunk_size``); write its preview PNG if one is given and wanted."""
        if label.sample_id in self.done_ids:
            raise ValueError(f"sample {label.sample_id!r} is already in {self.folder}")
        if label.draws_64 is not None:
            shape = np.shape(label.draws_64)
            if not self.draws or shape != (self.draws, HEATMAP_SIZE, HEATMAP_SIZE):
                raise ValueError(f"sample {label.sample_id!r}: draws of shape {shape} for a writer of "
                                 f"{self.draws or 'no'} draws per person")
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
            if self.draws:
                rows[-1][DRAW_SPREAD] = float(lb.draw_spread) if lb.draws_64 is not None else float("nan")
        files: dict[str, bytes] = {f"{chunk}.heatmap_64.npy": _npy_bytes(heatmaps)}
        if self.draws:
            draws = np.zeros((len(labels), self.draws, HEATMAP_SIZE, HEATMAP_SIZE), np.float16)
            for i, lb in enumerate(labels):
                if lb.draws_64 is not None:
                    draws[i] = np.asarray(lb.draws_64, np.float32)
            files[f"{chunk}{DRAWS_SUFFIX}"] = _npy_bytes(draws)
        if has_raw:
            max_h = max(r.shape[0] for r in raws if r is not None)
            max_w = max(r.shape[1] for r in raws if r is not None)
            padded = np.zeros((len(raws), max_h, max_w), np.float32)
            for i, r in enumerate(raws):
                if r is not None:
                    padded[i, : r.shape[0], : r.shape[1]] = r
            files[f"{chunk}.raw.npy"] = _npy_bytes(padded)
        files[f"{chunk}.csv"] = pd.DataFrame(rows).to_csv(index=False).encode("utf-8")
        index = {"version": INDEX_VERSION, "chunk": chunk, "rows": len(rows),
                 "sample_ids_sha256": _ids_sha256(lb.sample_id for lb in labels),
                 "files": {name: {"bytes": len(data), "sha256": _sha256_bytes(data)} for name, data in files.items()}}
        # arrays, then the index, then the CSV: the CSV marks the chunk done, so a chunk without its CSV is an
        # orphan (removed and redone by the next writer) and a done chunk always has its index
        for name, data in files.items():
            if not name.endswith(".csv"):
                with atomic_path(self.parts_dir / name) as tmp:
                    tmp.write_bytes(data)
        write_json_atomic(self.parts_dir / f"{chunk}{INDEX_SUFFIX}", index)
        with atomic_path(self.parts_dir / f"{chunk}.csv") as tmp:  # last: marks the chunk as done
            tmp.write_bytes(files[f"{chunk}.csv"])
        self._seq += 1

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> PseudoLabelWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # flush finished work even when interrupted: nothing computed is lost
        self.close()


def read_manifest(folder: str | Path, merged: bool = True, checksums: bool = True) -> pd.DataFrame:
    """All manifest rows of a folder, from the parts (always current, also mid-run). Empty frame if none.

    Every chunk is checked (see the module docstring; ``checksums=False`` skips only the sha256 of the files).
    ``merged``: also check that ``manifest.csv``, when present, agrees with the parts.
    Raises :class:`PseudoLabelFolderError` naming the damaged file.
    """
    folder = Path(folder)
    chunks = _load_parts(folder, checksums)
    if merged:
        _check_merged(folder, chunks)
    return _merge(chunks)


SUMMARY_FILE = "summary.json"


class MissingFolderError(PseudoLabelFolderError, FileNotFoundError):
    """The folder does not exist or holds no pseudo-labels; the message names the command that makes one."""


class IncompleteFolderError(PseudoLabelFolderError):
    """A pseudo-label folder that is not final (its stage did not finish) or lacks persons a stage needs."""


def content_fingerprint(folder: str | Path) -> str:
    """sha256 over the folder's done chunks: each chunk's index (which records the sha256 of its files), or for a
    chunk written without one, its CSV and the sizes of its arrays. Cheap (no map is read); any change to the
    parts changes it, finalize / manifest.csv / previews do not."""
    parts = Path(folder) / "parts"
    digest = hashlib.sha256()
    for chunk in _chunk_names(parts) if parts.is_dir() else []:
        digest.update(f"{chunk}\n".encode())
        index = parts / f"{chunk}{INDEX_SUFFIX}"
        if index.exists():
            digest.update(index.read_bytes())
        else:
            digest.update((parts / f"{chunk}.csv").read_bytes())
            for suffix in (".heatmap_64.npy", ".raw.npy"):
                array = parts / f"{chunk}{suffix}"
                digest.update(f"{suffix}:{array.stat().st_size if array.exists() else -1}\n".encode())
    return digest.hexdigest()


def finalize(folder: str | Path, expected_ids: list[str] | None = None) -> dict:
    """Merge the parts into ``manifest.csv`` and write ``summary.json``; return the summary.

    ``expected_ids``: the sample ids the folder should cover; missing ones are counted (and logged).
    The summary records the :func:`content_fingerprint` of the parts it was made from (``fingerprint``).
    """
    folder = Path(folder)
    fingerprint = content_fingerprint(folder)
    manifest = read_manifest(folder, merged=False)
    duplicated = manifest["sample_id"].duplicated(keep="last")
    if duplicated.any():
        log.warning("%s: %d duplicated sample ids, keeping the last", folder, int(duplicated.sum()))
    with atomic_path(folder / "manifest.csv") as tmp:
        tmp.write_bytes(_manifest_text(manifest).encode("utf-8"))
    manifest = manifest[~duplicated]
    reasons = Counter(r for r, v in zip(manifest["invalid_reason"], manifest["valid"]) if not v)
    summary = {"persons": int(len(manifest)), "valid": int(manifest["valid"].sum()),
               "invalid": int((~manifest["valid"]).sum()), "invalid_reasons": dict(reasons)}
    if expected_ids is not None:
        missing = sorted(set(expected_ids) - set(manifest["sample_id"]))
        summary["expected"] = len(expected_ids)
        summary["missing"] = len(missing)
        if missing:
            log.warning("%s: %d expected samples are missing, e.g. %s", folder, len(missing), missing[:3])
    summary["fingerprint"] = fingerprint
    write_json_atomic(folder / SUMMARY_FILE, summary)
    return summary


def _finish_hint(folder: Path) -> str:
    """How to finish the stage that writes ``folder``, from its provenance.json."""
    try:
        record = json.loads((folder / PROVENANCE_FILE).read_text())
    except (OSError, ValueError):
        record = {}
    record = record if isinstance(record, dict) else {}
    request = record.get("request") if isinstance(record.get("request"), dict) else {}
    stage = record.get("stage")
    if stage == "gradcam":
        return f"`make gradcam SPLIT={record.get('split', '...')}`"
    if stage == "refine":
        method = request.get("method", "...")
        return f"`make refine METHOD={method}" + (f" T={request['T']}`" if "T" in request else "`")
    return f"`{record['command']}`" if record.get("command") else "the stage that wrote it"


def check_final(folder: str | Path, expected_ids, present_ids=None, what: str = "") -> dict:
    """The summary of a final folder that holds every id of ``expected_ids``; else :class:`IncompleteFolderError`.

    Final: ``summary.json`` exists, its fingerprint is that of the parts now (no chunk was added, removed or
    changed since ``finalize``; a summary without one, from an older gcdr, must count the persons there are) and
    provenance.json, when present, does not say the stage is still running.
    ``present_ids``: the folder's sample ids when already read (else read from the parts).
    ``what``: names ``expected_ids`` in the message (e.g. "split 'unlabeled'").
    Returns the summary, its ``fingerprint`` filled in for older folders.
    """
    folder = Path(folder)
    expected = list(dict.fromkeys(str(i) for i in expected_ids))
    if present_ids is None:
        present_ids = read_manifest(folder, merged=False)["sample_id"]
    present = set(present_ids)
    missing = [i for i in expected if i not in present]
    fingerprint = content_fingerprint(folder)
    try:
        summary = json.loads((folder / SUMMARY_FILE).read_text())
        summary = summary if isinstance(summary, dict) else None
    except (OSError, ValueError):
        summary = None
    try:
        status = json.loads((folder / PROVENANCE_FILE).read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        status = None
    if summary is None:
        why = "it has no summary.json: its stage did not finish"
    elif status == "running":
        why = "provenance.json says its stage is still running or was interrupted"
    elif summary.get("fingerprint", fingerprint) != fingerprint:
        why = "its parts changed after summary.json was written"
    elif "fingerprint" not in summary and summary.get("persons") != len(present):
        why = f"summary.json counts {summary.get('persons')} persons, the parts hold {len(present)}"
    else:
        why = ""
    hint = _finish_hint(folder)
    if why or (missing and summary.get("missing")):
        if not why:
            why = f"summary.json counts {summary['missing']} of {summary.get('expected')} persons missing"
        if missing:
            count = f"{len(missing)} of {len(expected)} persons{f' of {what}' if what else ''} missing"
            raise IncompleteFolderError(f"{folder} is incomplete ({count}; {why}): finish it with {hint} first")
        raise IncompleteFolderError(f"{folder} is not final ({why}): finish it with {hint} first")
    if missing:
        raise IncompleteFolderError(
            f"{folder} lacks {len(missing)} of {len(expected)} persons{f' of {what}' if what else ''} (e.g. "
            f"{missing[0]!r}) although its stage finished: it was made for other persons (another split or "
            f"--limit); make it for them with {hint}")
    return {**summary, "fingerprint": fingerprint}


class PseudoLabelFolder:
    """Read a pseudo-label folder; O(1) lookup by sample id, heatmaps memory-mapped.

    Opening checks the whole folder once (:func:`read_manifest`: sizes, rows, shapes, sha256 of every part
    file, manifest.csv against the parts); lookups then only index the memory maps.
    ``checksums=False`` skips the sha256 (the rest is still checked).
    """

    def __init__(self, folder: str | Path, checksums: bool = True):
        self.folder = Path(folder)
        if not (self.folder / "parts").is_dir():
            what = "does not exist" if not self.folder.exists() else "is not a pseudo-label folder (no parts/)"
            raise MissingFolderError(f"{self.folder} {what}; make it first: `make gradcam` writes Grad-CAM folders, "
                                     "`make refine` refined ones (with the same SPLIT / RATIO / SEED / OUT)")
        self.manifest = read_manifest(self.folder, checksums=checksums)
        self.manifest = self.manifest.drop_duplicates("sample_id", keep="last").reset_index(drop=True)
        self._index = {sid: i for i, sid in enumerate(self.manifest["sample_id"])}
        self._parts = self.manifest["part"].to_numpy()
        self._rows = self.manifest["row"].to_numpy()
        self._valid = self.manifest["valid"].to_numpy(bool)
        spread = self.manifest.get(DRAW_SPREAD)  # NaN is written as "" (read as text)
        self._spread = (np.full(len(self.manifest), np.nan) if spread is None
                        else pd.to_numeric(spread, errors="coerce").to_numpy(np.float64))
        self._heatmaps: dict[str, np.ndarray] = {}
        self._raws: dict[str, np.ndarray | None] = {}
        self._draws: dict[str, np.ndarray | None] = {}

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

    def _map(self, path: Path) -> np.ndarray:
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError) as error:  # changed since the folder was opened
            raise _chunk_error(self.folder, path, f"cannot be memory-mapped ({_first_line(error)})") from error

    def _part_heatmaps(self, part: str) -> np.ndarray:
        if part not in self._heatmaps:
            self._heatmaps[part] = self._map(self.folder / "parts" / f"{part}.heatmap_64.npy")
        return self._heatmaps[part]

    def _part_raws(self, part: str) -> np.ndarray | None:
        if part not in self._raws:
            path = self.folder / "parts" / f"{part}.raw.npy"
            self._raws[part] = self._map(path) if path.exists() else None
        return self._raws[part]

    def _part_draws(self, part: str) -> np.ndarray | None:
        if part not in self._draws:
            path = self.folder / "parts" / f"{part}{DRAWS_SUFFIX}"
            self._draws[part] = self._map(path) if path.exists() else None
        return self._draws[part]

    @property
    def has_draws(self) -> bool:
        """Whether the folder keeps refined draws (refine.keep_draws): every chunk has a draws file."""
        parts = dict.fromkeys(self._parts)
        return bool(parts) and all((self.folder / "parts" / f"{p}{DRAWS_SUFFIX}").is_file() for p in parts)

    @property
    def has_draw_spread(self) -> bool:
        """Whether any person has a ``draw_spread`` value (folders refined with refine.keep_draws)."""
        return bool(np.isfinite(self._spread).any())

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

    def draws_64(self, sample_id: str) -> np.ndarray | None:
        """[K, 64, 64] float32: the person's K refined draws, each min-max normalised (zeros when invalid); None
        for a folder written without draws (refine.keep_draws false, other methods, older folders)."""
        i = self._index[sample_id]
        draws = self._part_draws(self._parts[i])
        return None if draws is None else np.asarray(draws[self._rows[i]], np.float32)

    def draw_spread(self, sample_id: str) -> float:
        """The person's ``draw_spread`` (mean distance of its draws' argmax to its map's argmax, normalised image
        coordinates); NaN when invalid or when the folder keeps no draws."""
        return float(self._spread[self._index[sample_id]])

    def get(self, sample_id: str) -> PseudoLabel:
        i = self._index[sample_id]
        row = self.manifest.iloc[i]
        return PseudoLabel(
            sample_id=sample_id, heatmap_64=self.heatmap_64(sample_id), valid=bool(self._valid[i]),
            invalid_reason=str(row["invalid_reason"]), raw_map=self.raw_map(sample_id),
            answer=str(row["answer"]), key_noun=str(row["key_noun"]), image_path=str(row["image_path"]),
            head_box_xyxy_px=tuple(_float_or_nan(row[c]) for c in MANIFEST_COLUMNS[2:6]), source=str(row["source"]),
        )


class PseudoLabelFolders:
    """Read-only lookup of a sample id in several :class:`PseudoLabelFolder` (the first that holds it answers):
    e.g. the Grad-CAM folders of the train and of the test persons, read as one by a student whose input
    includes the Grad-CAM map (gcdr.students.vat.VATGCStudent). Offers what GazeDataset's ``pseudo`` reads."""

    def __init__(self, folders):
        self.folders = list(folders)

    def _holder(self, sample_id: str) -> PseudoLabelFolder:
        for folder in self.folders:
            if sample_id in folder:
                return folder
        raise KeyError(f"sample {sample_id!r} not in any of the folders {[str(f.folder) for f in self.folders]}")

    def __contains__(self, sample_id: str) -> bool:
        return any(sample_id in folder for folder in self.folders)

    def __len__(self) -> int:
        return len({sid for folder in self.folders for sid in folder.sample_ids})

    def is_valid(self, sample_id: str) -> bool:
        return self._holder(sample_id).is_valid(sample_id)

    def heatmap_64(self, sample_id: str) -> np.ndarray:
        """[64, 64] float32 of the first folder holding ``sample_id``; KeyError naming the folders otherwise."""
        return self._holder(sample_id).heatmap_64(sample_id)

    def draws_64(self, sample_id: str) -> np.ndarray | None:
        """[K, 64, 64] draws of the first folder holding ``sample_id`` (None when it keeps none)."""
        return self._holder(sample_id).draws_64(sample_id)

    def draw_spread(self, sample_id: str) -> float:
        """``draw_spread`` of the first folder holding ``sample_id`` (NaN when it has none)."""
        return self._holder(sample_id).draw_spread(sample_id)

    def fingerprints(self) -> list[str]:
        """The content fingerprint of each folder; :class:`IncompleteFolderError` for one its stage did not finish."""
        return [check_final(f.folder, [], f.sample_ids)["fingerprint"] for f in self.folders]
