"""The whole gallery: persons, tiles, summary, page, contact sheet, summary.json and provenance; and
``inspect_from_config``, what ``make inspect`` runs (the config's dataset gives the ground truth)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gcdr.atomic import write_json_atomic, write_text_atomic
from gcdr.data.sample import PersonSample
from gcdr.errors import UserError
from gcdr.metrics import DATASETS
from gcdr.provenance import write_provenance
from gcdr_tools.gallery.config import InspectConfig
from gcdr_tools.gallery.contact_sheet import write_contact_sheet
from gcdr_tools.gallery.page import render_html
from gcdr_tools.gallery.persons import (
    ERROR_ORDERS,
    GROUND_TRUTH_SPLITS,
    SORT_ORDERS,
    GalleryColumn,
    collect_persons,
    ground_truth_samples,
    open_columns,
    sample_person_ids,
    sort_persons,
)
from gcdr_tools.gallery.summary import summarize
from gcdr_tools.gallery.tiles import write_thumbnails

log = logging.getLogger(__name__)


def build_gallery(folders: Sequence[str | os.PathLike | GalleryColumn], out_dir: str | os.PathLike | None = None,
                  samples: Sequence[PersonSample] | None = None, config: InspectConfig | None = None, *,
                  dataset: str = "gazefollow", ground_truth_note: str | None = None,
                  run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the gallery of ``folders`` (the first one defines the persons; the others are compared column by
    column) into ``out_dir`` (default ``<first folder>/inspect``).

    samples: annotations of (some of) the persons, for ground truth and body boxes (None: none known).
    dataset: evaluate()'s dataset ("gazefollow" | "videoattentiontarget") for the AUC.
    Returns the summary (also in summary.json) with "index_html", "contact_sheet", "timings_s" added.
    """
    config = config or InspectConfig()
    if config.sort not in SORT_ORDERS:
        raise ValueError(f"inspect.sort must be one of {SORT_ORDERS}, got {config.sort!r}")
    if config.on_missing_image not in ("placeholder", "raise"):
        raise ValueError(f"inspect.on_missing_image must be placeholder or raise, got {config.on_missing_image!r}")
    timings: dict[str, float] = {}
    start = time.perf_counter()
    columns = [f for f in folders if isinstance(f, GalleryColumn)]
    if len(columns) != len(folders):
        columns = open_columns([f.folder if isinstance(f, GalleryColumn) else f for f in folders])
    out_dir = Path(out_dir) if out_dir is not None else columns[0].folder / "inspect"
    out_dir.mkdir(parents=True, exist_ok=True)
    all_ids = columns[0].labels.sample_ids
    if not all_ids:
        raise UserError(f"pseudo-label folder {columns[0].folder} has no persons; run the stage that made it again")
    ids, random_ranks = sample_person_ids(all_ids, config.max_persons, config.seed)
    samples_by_id = {s.sample_id: s for s in samples or []}
    persons = collect_persons(columns, ids, samples_by_id, random_ranks)
    timings["collect"] = time.perf_counter() - start

    tick = time.perf_counter()
    thumb_counts = write_thumbnails(persons, columns, out_dir, config)
    timings["thumbnails"] = time.perf_counter() - tick

    tick = time.perf_counter()
    summary = summarize(columns, persons, samples_by_id, total_persons=len(all_ids), dataset=dataset,
                        auc=config.auc)
    timings["summary"] = time.perf_counter() - tick

    tick = time.perf_counter()
    labelled = summary["with_ground_truth"] > 0
    if not labelled and config.sort in ERROR_ORDERS:
        config = dataclasses.replace(config, sort="id")  # no errors to sort by: image by image, person by person
    ordered = sort_persons(persons, config.sort)
    if len(ids) < len(all_ids):
        sampling_note = (f"A random sample (seed {config.seed}) of {len(ids):,}; use --all (or --max-persons) "
                         "to show more.")
    else:
        sampling_note = "All persons are shown."
    n_gt = summary["with_ground_truth"]
    ground_truth_note = ground_truth_note or (f"found for {n_gt:,} of {len(ids):,} shown persons" if n_gt
                                              else "none found (no annotations matched the sample ids)")
    title = f"gcdr inspect · {columns[0].name}"
    page = render_html(title, columns, ordered, summary, config, sampling_note, ground_truth_note, labelled)
    index_html = out_dir / "index.html"
    write_text_atomic(index_html, page)
    contact_sheet = out_dir / "contact_sheet.png"
    sheet_layout = write_contact_sheet(
        contact_sheet, ordered[: config.contact_sheet_persons], columns, out_dir, config,
        f"{title} — first {min(len(ordered), config.contact_sheet_persons)} by '{config.sort}'", labelled)
    timings["html_and_sheet"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - start

    summary.update(index_html=str(index_html), contact_sheet=str(contact_sheet), sort=config.sort, labels=labelled,
                   contact_sheet_layout=sheet_layout,
                   sampling_note=sampling_note, ground_truth_note=ground_truth_note, thumbnails=thumb_counts,
                   timings_s={k: round(v, 2) for k, v in timings.items()})
    write_json_atomic(out_dir / "summary.json", summary)
    write_provenance(out_dir, "inspect", run_config or {}, folders=[str(c.folder) for c in columns],
                     columns=[c.name for c in columns], inspect=dataclasses.asdict(config),
                     shown=len(persons), persons=len(all_ids),
                     folder_provenance={c.name: c.labels.provenance for c in columns})
    log.info("gallery of %d persons (%d columns): open %s (contact sheet %s); %.1f s", len(persons), len(columns),
             index_html, contact_sheet, timings["total"])
    return summary


def inspect_from_config(cfg: dict[str, Any], folders: Sequence[str | os.PathLike],
                        out_dir: str | os.PathLike | None = None, config: InspectConfig | None = None, *,
                        ground_truth_splits: Sequence[str] | None = GROUND_TRUTH_SPLITS) -> dict[str, Any]:
    """``build_gallery`` with ground truth from the config's dataset: the persons of the first folder are
    looked up split by split in ``ground_truth_splits`` (None: not looked up). A head-box dataset
    (``dataset.format: headboxes``) gives image paths and head boxes but no gaze labels: the gallery then
    has no errors and says "no labels". Returns the gallery's summary.

    Raises UserError (one line) when a folder does not exist or is not a pseudo-label folder.
    """
    columns = open_columns(folders)  # the folders' errors first, before any dataset is read
    dataset_format = (cfg.get("dataset") or {}).get("format", "gazefollow")
    samples, note = [], "not looked up (--no-gt)"
    if ground_truth_splits is not None:
        ids = columns[0].labels.sample_ids
        splits = ("train",) if dataset_format == "headboxes" else ground_truth_splits  # one split holds them all
        found, used = ground_truth_samples(cfg, ids, splits)
        samples = list(found.values())
        if dataset_format == "headboxes":
            note = f"the dataset is head-box files ({len(found):,} of {len(ids):,} persons matched), no gaze labels"
        elif found:
            note = f"{len(found):,} of {len(ids):,} persons of the first folder matched in " + ", ".join(used)
        else:
            note = "none found in the dataset splits"
    metric_dataset = dataset_format if dataset_format in DATASETS else "gazefollow"  # head boxes: no labels
    return build_gallery(columns, out_dir, samples, config, dataset=metric_dataset, ground_truth_note=note,
                         run_config=cfg)
