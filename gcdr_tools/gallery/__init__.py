"""Inspect pseudo-label folders by eye: a static HTML gallery and a contact sheet.

``build_gallery`` writes into ``<folder>/inspect/`` (or ``out_dir``)::

    index.html            one self-contained page (inline CSS/JS, no server, no network): summary table,
                          legend, and a sortable, filterable, paginated grid of persons; opens from disk.
                          Rendered from templates/page.html.j2 with templates/gallery.css and gallery.js
                          inlined; the sort orders are computed here (persons.sort_persons) and given to
                          the page as data.
    thumbs/<xx>/<key>.jpg small JPEG tiles per person: the image with boxes and ground truth, then one
                          heatmap overlay per folder. ``key`` hashes everything drawn, so a rerun reuses the
                          tiles that did not change and never shows a stale one.
    contact_sheet.png     the first K persons in the chosen order (for slides)
    summary.json          the numbers of the page's summary
    provenance.json

Conventions: heatmaps are [64, 64] in [0, 1] over the whole image. The predicted point is the heatmap's
first maximum in row-major order, as (col / 64, row / 64) in normalised image coordinates (the cell's
top-left corner, no half-pixel offset); a person's error is its L2 distance to the mean of the ground-truth
points (GazeFollow's avg L2), min L2 the distance to the nearest point. Errors exist only for persons with an
in-frame ground truth and a valid heatmap.

Persons are named (head-box file stem, VAT person, else "person N" left to right in the image) and drawn in one
colour per name with a label (name · key noun), the other persons of the image thinly in theirs. A dataset
without gaze labels (head-box files) gives a gallery without ground truth, metric columns or orders by error.

Modules: config (InspectConfig), persons (who is shown, names, errors, orders), tiles (thumbnails), summary
(numbers), page (index.html), contact_sheet, build (build_gallery, inspect_from_config).
"""

from gcdr_tools.gallery.build import build_gallery, inspect_from_config
from gcdr_tools.gallery.config import InspectConfig
from gcdr_tools.gallery.persons import (
    GROUND_TRUTH_SPLITS,
    SORT_ORDERS,
    GalleryColumn,
    GalleryPerson,
    collect_persons,
    ground_truth_samples,
    open_columns,
    page_orders,
    sort_persons,
)

__all__ = [
    "GROUND_TRUTH_SPLITS", "SORT_ORDERS", "GalleryColumn", "GalleryPerson", "InspectConfig", "build_gallery",
    "collect_persons", "ground_truth_samples", "inspect_from_config", "open_columns", "page_orders", "sort_persons",
]
