"""The torch Dataset every model trains and evaluates through: PersonSample -> dict of fixed-size tensors.

One item = one person. The image is decoded once, wrapped in a ``View`` (image, head box, gaze, body box,
prior map), augmented when training, then rendered into the model inputs of its style:

    style "vat":     scene [3, 224, 224], face [3, 224, 224], head_channel [1, 224, 224]; head boxes
                     enlarged by 10 % first (GazeFollow, docs/official-code.md#head-box-enlargement-and-head-channel) unless told otherwise
    style "gazelle": scene [3, 448, 448] only; boxes clamped to the image, never enlarged (docs/official-code.md#gaze-lle-preprocessing)

Every item holds the same keys with the same shapes, so ``default_collate`` batches them:

    index               int64 []        position in this dataset (``dataset.sample(index)``)
    scene               float32 [3, S, S] ImageNet-normalised
    face, head_channel  float32 [3, 224, 224], [1, 224, 224]  (vat style only)
    head_box_xyxy_norm  float32 [4]     the box as the model uses it, in the augmented frame
    target_heatmap_64   float32 [64, 64] Gaussian at the (mean) gaze point; zeros unless has_target
    has_target          bool []         labeled and in frame with a gaze point
    prior_heatmap_64    float32 [64, 64] the pseudo-label folder's map, cropped / flipped with the image
                                        (``pseudo_draws="per_pass"``: an unlabeled person's draw of the epoch)
    prior_valid         bool []         the folder has a valid map for this sample
    prior_weight        float32 []      only with ``prior_weights``: the person's pseudo-label weight (1 if absent)
    inout               float32 []      1 in frame, 0 out, -1 unknown
    is_labeled          bool []
    gaze_points_norm    float32 [20, 2] all annotators' points in the augmented frame, padded with -1
                                        (none for out-of-frame persons)
    num_gaze_points     int64 []
    image_size_wh       int64 [2]       size of the image as read (before augmentation; for AUC)

Randomness: item ``i`` of epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i, d])``, so a seed
gives the same tensors whatever the number of workers or the order of access. ``d`` is the draw: index the
dataset with ``(i, d)`` to get the d-th differently augmented view of item ``i`` within one epoch (a sampler that
passes over the data several times per epoch does; plain ``i`` = draw 0). Call ``set_epoch`` before each
epoch (with ``persistent_workers=True`` the workers keep the epoch they were started with).

Two views (``two_views=True``, vat style; the mean teacher, docs/method.md#mean-teacher): each item also holds

    view2_scene, view2_face, view2_head_channel, view2_head_box_xyxy_norm
                                        a second view of the same person, as GCDR's double augmentation makes
                                        it: own head-box jitter and colour, same crop and flip as the plain keys
                                        (view 1), so the labels (target, prior, gaze) hold for both views

drawn from ``numpy.random.default_rng([seed, e, i, d, 2])``, a stream of its own (``item_views`` gives both
views as full items). ``two_views=False`` (the default) leaves every item exactly as described above.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from gcdr.data import images
from gcdr.data.images import ImageReadError
from gcdr.data.sample import IN_FRAME, OUT_OF_FRAME, PersonSample
from gcdr.data.transforms import (
    FACE_SIZE,
    GAZEFOLLOW_ENLARGEMENT,
    GAZELLE_SCENE_SIZE,
    VAT_SCENE_SIZE,
    AugmentConfig,
    Style,
    View,
    augment,
    augment_vat_two_views,
    clamp_box,
    enlarge_head_box,
    face_crop,
    head_channel,
    imagenet_normalize,
    jitter_colour,
    resize_scene,
)
from gcdr.errors import UserError
from gcdr.heatmaps import HEATMAP_SIZE, gaussian_heatmap_64
from gcdr.pseudolabels import PseudoLabelFolder

log = logging.getLogger(__name__)

MAX_GAZE_POINTS = 20  # GazeFollow test persons are padded to 20 annotators with (-1, -1) (docs/formats.md#test-rows-and-grouping)
OnError = Literal["raise", "skip"]

gaze_collate = default_collate  # every tensor of an item has a fixed size
# what a second view changes (its pixels and its jittered head box); item key "view2_<key>"
VIEW2_KEYS = ("scene", "face", "head_channel", "head_box_xyxy_norm")


class GazeDataset(Dataset):
    """PersonSamples as model-ready tensors (see the module docstring for the keys).

    samples:          the persons, e.g. ``gcdr.data.load_samples(cfg, "train")``.
    train:            augment (jitter, crop, flip, colour per ``augment``); False = deterministic.
    style:            "vat" (VAT / GCDR students and the diffusion teacher) or "gazelle" (Gaze-LLE).
    labeled:          one flag for all samples or one per sample; unlabeled samples get no target and
                      their gaze never steers a crop (GCDR does not crop them at all by default).
    pseudo:           pseudo-label folder providing ``prior_heatmap_64`` (zeros, invalid when absent).
    scene_size:       scene side; default 224 (vat) / 448 (gazelle).
    on_error:         "raise": a missing / undecodable image raises ImageReadError naming the file and the
                      sample. "skip": samples whose image is missing are dropped at construction
                      (logged, counted in ``skipped``); an image that exists but fails to decode is logged,
                      counted in ``unreadable`` and replaced by the next readable sample (fine for training;
                      evaluation calls :meth:`drop_unreadable` first, so that no person is scored on another
                      person's image and every person left out is counted).
    augment:          augmentation settings; default GCDR's (vat) or Gaze-LLE's (gazelle).
    enlarge_head_box: vat style: grow boxes by 10 % (GazeFollow, the default); False for
                      VideoAttentionTarget-like data. Gaze-LLE boxes are never enlarged.
    seed:             base seed of the augmentation.
    two_views:        vat style: add GCDR's second view of every item (``view2_*`` keys, module docstring).
    pseudo_draws:     "mean": the prior is the folder's map; "per_pass": for an unlabeled person with a valid
                      map, one of the folder's K refined draws (refine.keep_draws), draw
                      :func:`pseudo_draw_index` of (seed, epoch, index): another one each epoch.
    prior_weights:    sample id -> pseudo-label loss weight, given to items as ``prior_weight`` (1 if absent);
                      None: items have no such key.
    """

    def __init__(self, samples: Sequence[PersonSample], *, train: bool, style: Style = "vat",
                 labeled: bool | Sequence[bool] = True, pseudo: PseudoLabelFolder | None = None,
                 scene_size: int | None = None, on_error: OnError = "raise",
                 augment: AugmentConfig | None = None, enlarge_head_box: bool | None = None, seed: int = 0,
                 two_views: bool = False, pseudo_draws: str = "mean",
                 prior_weights: Mapping[str, float] | None = None):
        if style not in ("vat", "gazelle"):
            raise ValueError(f"style must be 'vat' or 'gazelle', got {style!r}")
        if two_views and style != "vat":
            raise ValueError("two_views is GCDR's mean-teacher augmentation: vat style only")
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if pseudo_draws not in ("mean", "per_pass"):
            raise ValueError(f"pseudo_draws must be 'mean' or 'per_pass', got {pseudo_draws!r}")
        labeled_flags = _labeled_flags(labeled, len(samples))
        _check_gaze_point_counts(samples)
        self.train = train
        self.style = style
        self.pseudo = pseudo
        self.scene_size = scene_size or (VAT_SCENE_SIZE if style == "vat" else GAZELLE_SCENE_SIZE)
        self.on_error = on_error
        self.augment = augment or (AugmentConfig() if style == "vat" else AugmentConfig.gazelle())
        self.enlarge_head_box = style == "vat" and enlarge_head_box is not False  # None: on for vat
        self.seed = seed
        self.two_views = bool(two_views)
        self.pseudo_draws = pseudo_draws
        self.prior_weights = dict(prior_weights) if prior_weights is not None else None
        self.epoch = 0
        self.skipped: list[tuple[str, str]] = []     # (sample id, reason) dropped at construction
        self.unreadable: dict[int, str] = {}         # index -> error, found while reading (this process)
        self.samples, self.labeled = self._drop_missing_images(list(samples), labeled_flags)
        self._size_cache: dict[int, tuple[int, int]] = {}

    # -- bookkeeping ------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (same seed + epoch -> same tensors)."""
        self.epoch = int(epoch)

    def sample(self, index: int) -> PersonSample:
        """The PersonSample of item ``index``; ``image_size_wh`` filled in when the loader left it out."""
        sample = self.samples[index]
        if sample.image_size_wh is None:
            sample = dataclasses.replace(sample, image_size_wh=self.image_size_wh(index))
        return sample

    def image_size_wh(self, index: int) -> tuple[int, int]:
        """(W, H) of item ``index``'s image: from the sample when known, else the file header (cached)."""
        known = self.samples[index].image_size_wh
        if known is not None:
            return tuple(int(v) for v in known)
        if index not in self._size_cache:
            self._size_cache[index] = images.image_size_wh(self.samples[index].image_path)
        return self._size_cache[index]

    def _drop_missing_images(self, samples: list[PersonSample],
                             labeled: list[bool]) -> tuple[list[PersonSample], list[bool]]:
        """Check every image file exists, once per file: raise naming the first missing one, or drop them."""
        exists = {path: os.path.isfile(path) for path in {s.image_path for s in samples}}
        missing = [s for s in samples if not exists[s.image_path]]
        if not missing:
            return samples, labeled
        first = missing[0]
        if self.on_error == "raise":
            raise ImageReadError(f"image not found: {first.image_path} (sample {first.sample_id!r}, "
                                 f"{first.source or 'no source'}; {len(missing)} samples lack their image; "
                                 "on_error='skip' drops them)")
        self.skipped = [(s.sample_id, f"image not found: {s.image_path}") for s in missing]
        log.warning("skipping %d of %d samples whose image is missing (%d files), e.g. %s",
                    len(missing), len(samples), sum(not e for e in exists.values()), first.image_path)
        kept = [i for i, s in enumerate(samples) if exists[s.image_path]]
        return [samples[i] for i in kept], [labeled[i] for i in kept]

    def drop_unreadable(self) -> list[tuple[str, str]]:
        """Decode every image once, here, and drop the samples whose image cannot be read (empty, undecodable),
        as missing images are at construction: "skip" records them in ``skipped``; "raise" raises
        ImageReadError naming the file and the sample. Returns the (sample id, reason) pairs dropped.

        After it no item is ever replaced by another (``__getitem__`` reads only images decoded here), so
        evaluation scores exactly ``len(self)`` persons and ``skipped`` counts all the others.
        """
        errors: dict[str, str] = {}
        for sample in self.samples:
            if sample.image_path in errors:
                continue
            try:
                images.load_image_rgb(sample.image_path)
            except ImageReadError as error:
                if self.on_error == "raise":
                    raise ImageReadError(f"sample {sample.sample_id!r} ({sample.source or 'no source'}): "
                                         f"{error}") from error
                errors[sample.image_path] = str(error)
                log.warning("skipping sample %r: %s", sample.sample_id, error)
            else:
                errors.setdefault(sample.image_path, "")
        dropped = [(s.sample_id, errors[s.image_path]) for s in self.samples if errors[s.image_path]]
        if dropped:
            kept = [i for i, s in enumerate(self.samples) if not errors[s.image_path]]
            self.samples = [self.samples[i] for i in kept]
            self.labeled = [self.labeled[i] for i in kept]
            self.skipped = self.skipped + dropped
            self.unreadable = {}
            self._size_cache = {}
            log.warning("dropped %d samples whose image cannot be read (%d files)", len(dropped),
                        sum(bool(e) for e in errors.values()))
        return dropped

    # -- one item ---------------------------------------------------------------------------------------

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        if self.two_views:
            first, second = self.item_views(key)
            first.update({f"view2_{k}": second[k] for k in VIEW2_KEYS})
            return first
        index, draw = key if isinstance(key, tuple) else (key, 0)
        index, image = self._read_image(index)  # index changes only when a skipped image is replaced
        view, prior_valid = self._view(index, image)
        if self.train:
            view = augment(view, self._rng(index, draw), self.style, self.augment)
        return self._item(index, image, view, prior_valid)

    def item_views(self, key: int | tuple[int, int]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """GCDR's two views of item ``key`` (vat style) as two full items: own head-box jitter and colour,
        one shared crop and flip (gcdr.data.transforms.augment_vat_two_views), so every label agrees. Without
        ``train`` both are the un-augmented item."""
        if self.style != "vat":
            raise ValueError("two views are GCDR's mean-teacher augmentation: vat style only")
        index, draw = key if isinstance(key, tuple) else (key, 0)
        index, image = self._read_image(index)
        view, prior_valid = self._view(index, image)
        views = (view, view)
        if self.train:
            views = augment_vat_two_views(view, self._rng(index, draw, stream=2), self.augment)
        return self._item(index, image, views[0], prior_valid), self._item(index, image, views[1], prior_valid)

    def _item(self, index: int, image: np.ndarray, view: View, prior_valid: bool) -> dict[str, torch.Tensor]:
        item = {"index": torch.tensor(index, dtype=torch.int64)}
        item.update(self._pixels(view))
        item.update(self._labels(index, view, prior_valid))
        item["image_size_wh"] = torch.tensor([image.shape[1], image.shape[0]], dtype=torch.int64)
        return item

    def _rng(self, index: int, draw: int = 0, stream: int | None = None) -> np.random.Generator:
        key = [self.seed, self.epoch, index, draw] + ([] if stream is None else [stream])
        return np.random.default_rng(key)

    def _read_image(self, index: int) -> tuple[int, np.ndarray]:
        """Decode item ``index``'s image ([H, W, 3] uint8). In skip mode an undecodable image is recorded
        and the next readable item is returned instead (with its own index)."""
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self.unreadable:
                continue
            sample = self.samples[candidate]
            try:
                return candidate, images.load_image_rgb(sample.image_path)
            except ImageReadError as error:
                if self.on_error == "raise":
                    raise ImageReadError(f"sample {sample.sample_id!r} ({sample.source or 'no source'}): "
                                         f"{error}") from error
                self.unreadable[candidate] = str(error)
                log.warning("skipping sample %r (%d unreadable so far): %s", sample.sample_id,
                            len(self.unreadable), error)
        raise ImageReadError(f"none of the {len(self)} images of this dataset can be read")

    def _view(self, index: int, image: np.ndarray) -> tuple[View, bool]:
        """The un-augmented view: model-convention head box, gaze in pixels, prior attached."""
        sample = self.samples[index]
        frame_wh = (image.shape[1], image.shape[0])
        head_box = np.asarray(sample.head_box_xyxy_px, np.float64)
        if self.enlarge_head_box:
            head_box = enlarge_head_box(head_box, GAZEFOLLOW_ENLARGEMENT)
        if self.style == "gazelle":
            head_box = clamp_box(head_box, frame_wh)
        gaze_px = np.asarray(sample.gaze_points_norm, np.float64).reshape(-1, 2) * frame_wh  # [K, 2]
        prior, prior_valid = self.prior_64(index)
        view = View(image=image, head_box_xyxy_px=head_box, gaze_points_px=gaze_px, inout=sample.inout,
                    body_box_xyxy_px=sample.body_box_xyxy_px, prior_64=prior, labeled=self.labeled[index])
        return view, prior_valid

    def prior_64(self, index: int, epoch: int | None = None) -> tuple[np.ndarray | None, bool]:
        """Item ``index``'s un-augmented prior map [64, 64] and whether it is valid ((None, False) when the folder
        lacks the person): the folder's map, or with ``pseudo_draws="per_pass"`` the draw of ``epoch`` (default:
        the dataset's) of an unlabeled person with a valid map."""
        sample_id = self.samples[index].sample_id
        if self.pseudo is None or sample_id not in self.pseudo:
            return None, False
        valid = self.pseudo.is_valid(sample_id)
        if self.pseudo_draws == "per_pass" and valid and not self.labeled[index]:
            draws = self.pseudo.draws_64(sample_id)
            if draws is None:
                where = getattr(self.pseudo, "folder", "the pseudo-label folders")
                raise UserError(f"{where} holds no refined draws of sample {sample_id!r}, which pseudo_draws="
                                "per_pass reads: refine it with refine.keep_draws=true")
            epoch = self.epoch if epoch is None else epoch
            return draws[pseudo_draw_index(self.seed, epoch, index, len(draws))], valid
        return self.pseudo.heatmap_64(sample_id), valid

    def _pixels(self, view: View) -> dict[str, torch.Tensor]:
        """Scene (and face + head channel for vat), colour-jittered after resizing (it is per pixel)."""
        rgb = [resize_scene(view.image, self.scene_size)]                       # [S, S, 3]
        if self.style == "vat":
            rgb.append(face_crop(view.image, view.head_box_xyxy_px, FACE_SIZE))  # [224, 224, 3]
        if view.colour is not None:
            rgb = jitter_colour(rgb, view.colour)
        pixels = {"scene": imagenet_normalize(rgb[0])}
        if self.style == "vat":
            pixels["face"] = imagenet_normalize(rgb[1])
            pixels["head_channel"] = torch.from_numpy(head_channel(_box_norm(view), FACE_SIZE))
        return pixels

    def _labels(self, index: int, view: View, prior_valid: bool) -> dict[str, torch.Tensor]:
        frame_wh = np.array(view.size_wh, np.float64)
        gaze_norm = view.gaze_points_px / frame_wh  # [K, 2]
        if view.inout == OUT_OF_FRAME:  # the file's numbers are no point of this frame: report none
            gaze_norm = gaze_norm[:0]
        has_target = self.labeled[index] and view.inout == IN_FRAME and len(gaze_norm) > 0
        if has_target:  # GCDR: one Gaussian at the annotators' mean point (docs/official-code.md#gaussian-target)
            target = gaussian_heatmap_64(gaze_norm.mean(axis=0), integer_center=self.style == "gazelle")
        else:
            target = np.zeros((HEATMAP_SIZE, HEATMAP_SIZE), np.float32)
        prior = view.prior_64 if view.prior_64 is not None else np.zeros((HEATMAP_SIZE, HEATMAP_SIZE))
        padded = np.full((MAX_GAZE_POINTS, 2), -1.0, np.float32)
        padded[: len(gaze_norm)] = gaze_norm
        labels = {
            "head_box_xyxy_norm": torch.from_numpy(_box_norm(view).astype(np.float32)),
            "target_heatmap_64": torch.from_numpy(target),
            "has_target": torch.tensor(has_target),
            "prior_heatmap_64": torch.from_numpy(np.asarray(prior, np.float32)),
            "prior_valid": torch.tensor(prior_valid),
            "inout": torch.tensor(float(view.inout), dtype=torch.float32),
            "is_labeled": torch.tensor(self.labeled[index]),
            "gaze_points_norm": torch.from_numpy(padded),
            "num_gaze_points": torch.tensor(len(gaze_norm), dtype=torch.int64),
        }
        if self.prior_weights is not None:
            weight = self.prior_weights.get(self.samples[index].sample_id, 1.0)
            labels["prior_weight"] = torch.tensor(weight, dtype=torch.float32)
        return labels


def pseudo_draw_index(seed: int, epoch: int, index: int, draws: int) -> int:
    """Which of ``draws`` stored draws item ``index`` trains on in ``epoch``: (o + epoch) mod draws, with the
    offset o drawn once per (seed, index), so each draw is used once every ``draws`` epochs, persons out of step."""
    offset = int(np.random.default_rng([seed, index]).integers(draws))
    return (offset + int(epoch)) % draws


def _box_norm(view: View) -> np.ndarray:
    width, height = view.size_wh
    return view.head_box_xyxy_px / np.array([width, height, width, height], np.float64)  # [4]


def _labeled_flags(labeled: bool | Sequence[bool], n_samples: int) -> list[bool]:
    if isinstance(labeled, (bool, np.bool_)):
        return [bool(labeled)] * n_samples
    flags = [bool(flag) for flag in labeled]
    if len(flags) != n_samples:
        raise ValueError(f"labeled has {len(flags)} flags for {n_samples} samples")
    return flags


def _check_gaze_point_counts(samples: Sequence[PersonSample]) -> None:
    for sample in samples:
        count = len(np.asarray(sample.gaze_points_norm).reshape(-1, 2))
        if count > MAX_GAZE_POINTS:
            raise ValueError(f"sample {sample.sample_id!r} ({sample.source or 'no source'}) has {count} gaze "
                             f"points; at most {MAX_GAZE_POINTS} fit the padded tensor")


def enlarges_head_boxes(cfg: dict) -> bool:
    """Whether VAT-style inputs grow head boxes by 10 % for the config's dataset: GazeFollow-format data only
    (VAT's GazeFollow loader does, its VideoAttentionTarget loader does not). One rule for teacher, refine and
    students."""
    return (cfg.get("dataset") or {}).get("format", "gazefollow") == "gazefollow"
