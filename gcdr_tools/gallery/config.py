"""The gallery's settings: config section ``inspect``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InspectConfig:
    """Config section ``inspect`` (every field optional; the command line overrides it)."""

    max_persons: int = 2000  # show a seeded random sample of at most this many persons; 0 = all
    seed: int = 0  # of that sample and of the "random" order
    thumb_px: int = 320  # longer side of each tile, pixels (a 1920x1080 frame: 320x180, head boxes stay visible)
    jpeg_quality: int = 85
    per_page: int = 200  # persons per page of the HTML grid (changeable in the page)
    contact_sheet_persons: int = 48  # the first K persons of the chosen order go on the contact sheet
    sort: str = "worst"  # worst | best (L2 of the first folder) | id | invalid | random
    colormap: str = "turbo"  # any matplotlib colormap name
    auc: bool = True  # AUC through gcdr.metrics.evaluate (GazeFollow protocol upsamples to image size)
    on_missing_image: str = "placeholder"  # placeholder (grey tile, counted, logged) | raise
