"""The one record every loader produces and every stage consumes: one person in one image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IN_FRAME, OUT_OF_FRAME, INOUT_UNKNOWN = 1, 0, -1


@dataclass
class PersonSample:
    """One annotated (or unannotated) person.

    Coordinates say their convention in their name: ``_px`` = pixels of the original image,
    ``_norm`` = divided by image width / height (x/W, y/H), ``xyxy`` = (left, top, right, bottom).

    sample_id:         stable unique id, the key of pseudo-label folders and split membership.
                       GazeFollow: ``"<rel path>|<eye_x:.6f>|<eye_y:.6f>"`` (the field's (path, eye_x) key);
                       VideoAttentionTarget: ``"<show>/<clip>/<person>/<frame file>"``;
                       head-box files: ``"<frame file>|<head-box file stem>"``.
    image_path:        absolute path of the image file.
    head_box_xyxy_px:  head box as annotated (NOT enlarged; the transforms enlarge per protocol).
    body_box_xyxy_px:  body box of the GCDR extension, None when absent (negative in the files).
    gaze_points_norm:  [K, 2] float64 gaze points (x, y), the annotation file's values unrounded (the metrics
                       round them only where a protocol's own code does, gcdr.metrics); K = 1 for train rows,
                       ~10 annotators for GazeFollow test persons, K = 0 when the gaze is unknown
                       (unlabeled image folders). Out-of-frame persons keep whatever the file says but it is
                       never a target.
    inout:             1 in frame, 0 out of frame, -1 unknown.
    image_size_wh:     (W, H) in pixels when known from the annotation, else None (read with the image).
    eye_point_norm:    (x, y) eye position when the format has one.
    meta:              the free-text metadata column where the format has one (SynthGaze stores the
                       target object there, e.g. "synth:target=cup").
    source:            "file:line" of the (first) annotation row, for error messages and provenance.
    """

    sample_id: str
    image_path: str
    head_box_xyxy_px: tuple[float, float, float, float]
    gaze_points_norm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    inout: int = INOUT_UNKNOWN
    body_box_xyxy_px: tuple[float, float, float, float] | None = None
    image_size_wh: tuple[int, int] | None = None
    eye_point_norm: tuple[float, float] | None = None
    meta: str = ""
    source: str = ""

    @property
    def has_gaze(self) -> bool:
        """True when the sample has a usable in-frame gaze target."""
        return self.inout == IN_FRAME and len(self.gaze_points_norm) > 0

    @property
    def mean_gaze_point_norm(self) -> np.ndarray:
        """Mean of the annotators' points, [2] float32 (mean of the float32-rounded points, the precision of
        the model-side tensors that use it; gcdr.metrics computes its avg-L2 reference in float64)."""
        return np.asarray(self.gaze_points_norm, np.float32).mean(axis=0)
