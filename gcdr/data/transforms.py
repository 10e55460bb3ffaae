"""Preprocessing and augmentation of VAT / GCDR / Gaze-LLE (docs/official-code.md#preprocessing-and-augmentation), one small function each.

Conventions: ``_px`` = pixels of the *current* frame (the image after any crop / flip so far),
``_norm`` = x / W, y / H of that frame, boxes are ``xyxy`` = (left, top, right, bottom), images are
[H, W, 3] uint8 RGB arrays, heatmaps are [64, 64] float32 covering the whole current frame.

Randomness comes only from a ``numpy.random.Generator`` passed in, so one seed gives one result.

The pieces, in the order a training sample meets them:
  enlarge_head_box            fixed 10 % enlargement of GazeFollow boxes (docs/official-code.md#head-box-enlargement-and-head-channel)
  View + augment_vat / augment_gazelle
                              jitter, crop, flip, colour of docs/official-code.md#gazefollow-augmentation-vat-gcdr / #gaze-lle-preprocessing on image, boxes, gaze and an
                              attached prior heatmap together
  augment_vat_two_views       GCDR's two mean-teacher views: shared crop and flip, own jitter and colour each
  resize_rgb, face_crop, head_channel, jitter_colour, imagenet_normalize
                              the model inputs (docs/official-code.md#model-inputs)
  (the training target, gaussian_heatmap_64, and the other heatmap building blocks: gcdr.heatmaps)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gcdr.data.sample import IN_FRAME
from gcdr.heatmaps import gaussian_heatmap_64 as gaussian_heatmap_64  # re-export for two tests
from gcdr.heatmaps import normalize_heatmap

FACE_SIZE = 224          # face crop and head channel side (VAT)
VAT_SCENE_SIZE = 224
GAZELLE_SCENE_SIZE = 448
GAZEFOLLOW_ENLARGEMENT = 0.1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Style = Literal["vat", "gazelle"]
BoxXYXY = Sequence[float] | np.ndarray


# ---------------------------------------------------------------------------------------------------
# Head box (docs/official-code.md#head-box-enlargement-and-head-channel)

def enlarge_head_box(box_xyxy_px: BoxXYXY, k: float) -> np.ndarray:
    """Grow a box by ``k`` with GazeFollow's sequential update (docs/official-code.md#head-box-enlargement-and-head-channel, also the jitter of #gazefollow-augmentation-vat-gcdr).

    x_min and y_min move out by k * size first; x_max and y_max then move by k * the already-grown size,
    so left/top grow by k and right/bottom by k(1 + k) of the original size (10 % / 11 % for k = 0.1).
    Returns [4] float64.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in box_xyxy_px)
    x_min -= k * abs(x_max - x_min)
    y_min -= k * abs(y_max - y_min)
    x_max += k * abs(x_max - x_min)
    y_max += k * abs(y_max - y_min)
    return np.array([x_min, y_min, x_max, y_max])


def head_channel(head_box_xyxy_norm: BoxXYXY, size: int = FACE_SIZE) -> np.ndarray:
    """Binary head-position mask [1, size, size] float32 (docs/official-code.md#head-box-enlargement-and-head-channel).

    Corners times ``size``, truncated toward zero, clipped to [0, size - 1]; ones on rows y1..y2-1 and
    columns x1..x2-1 (end exclusive, so a box reaching the border stops one short of it, as coded).
    """
    corners = np.asarray(head_box_xyxy_norm, np.float64) * size
    x1, y1, x2, y2 = np.clip(corners.astype(np.int64), 0, size - 1)  # astype truncates toward zero
    mask = np.zeros((1, size, size), np.float32)
    mask[0, y1:y2, x1:x2] = 1.0
    return mask


def clamp_box(box_xyxy_px: BoxXYXY, frame_wh: tuple[int, int]) -> np.ndarray:
    """Box clipped to [0, W] x [0, H] (Gaze-LLE's preprocessing and jitter). Returns [4] float64."""
    width, height = frame_wh
    return np.clip(np.asarray(box_xyxy_px, np.float64), 0, [width, height, width, height])


# ---------------------------------------------------------------------------------------------------
# Pixels: crops, resizes, colour, normalisation

def crop_with_padding(image: np.ndarray, window_xyxy: Sequence[int]) -> np.ndarray:
    """Integer crop (x0, y0, x1, y1), end exclusive; parts outside the image are black (PIL crop semantics).

    Returns [y1 - y0, x1 - x0, 3] uint8; a view into ``image`` (no copy) when the window lies inside it.
    """
    x0, y0, x1, y1 = (int(v) for v in window_xyxy)
    height, width = image.shape[:2]
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return image[y0:y1, x0:x1]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if sx0 < sx1 and sy0 < sy1:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def resize_rgb(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (width, height), aspect ratio NOT kept, antialiased when shrinking (docs/official-code.md#model-inputs).

    torch's uint8 antialiased kernel gives the pixels of the official PIL ``Resize((224, 224))`` (within
    0.01 grey levels on a 1920x1080 frame) at a tenth of its cost. [H, W, 3] uint8 -> [h, w, 3] uint8.
    """
    if (image.shape[1], image.shape[0]) == tuple(size_wh):
        return image
    image = np.ascontiguousarray(image)  # contiguous channels-last memory selects torch's fast uint8 path
    if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch.from_numpy wants writable memory
        image = image.copy()
    pixels = torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W]
    resized = F.interpolate(pixels, size=(size_wh[1], size_wh[0]), mode="bilinear", antialias=True,
                            align_corners=False)
    return np.ascontiguousarray(resized[0].permute(1, 2, 0).numpy())


def resize_scene(image: np.ndarray, size: int) -> np.ndarray:
    """The whole frame squashed to [size, size, 3] (224 for VAT, 448 for Gaze-LLE)."""
    return resize_rgb(image, (size, size))


def face_crop(image: np.ndarray, head_box_xyxy_px: BoxXYXY, size: int = FACE_SIZE) -> np.ndarray:
    """Crop the head box at int() of its corners (black outside the image, docs/official-code.md#head-box-enlargement-and-head-channel) and resize to
    [size, size, 3] uint8. A box thinner than one pixel is widened to one pixel rather than failing."""
    x0, y0, x1, y1 = (int(v) for v in head_box_xyxy_px)
    crop = crop_with_padding(image, (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    return resize_rgb(crop, (size, size))


@dataclass(frozen=True)
class ColourFactors:
    """Factors of torchvision's adjust_brightness / adjust_contrast / adjust_saturation (1 = unchanged)."""

    brightness: float
    contrast: float
    saturation: float


def jitter_colour(images: Sequence[np.ndarray], factors: ColourFactors) -> list[np.ndarray]:
    """Brightness, then contrast, then saturation (the order of docs/official-code.md#gazefollow-augmentation-vat-gcdr), in float with clamping after each step.

    All three operations are per pixel except that contrast blends toward the grey MEAN of the whole
    image, so they can run on the already-resized model inputs: ``images[0]`` must be the scene (the
    whole frame), whose grey mean serves every image (e.g. the face crop). [h, w, 3] uint8 in,
    [h, w, 3] float32 in [0, 1] out.
    """
    out = []
    for image in images:  # brightness: blend with black
        pixels = np.multiply(image, np.float32(factors.brightness / 255.0), dtype=np.float32)
        out.append(np.clip(pixels, 0.0, 1.0, out=pixels))
    grey_mean = float(_grey(out[0]).mean())
    for pixels in out:  # contrast: blend with the scene's mean grey
        pixels *= factors.contrast
        pixels += (1 - factors.contrast) * grey_mean
        np.clip(pixels, 0.0, 1.0, out=pixels)
    for pixels in out:  # saturation: blend with the pixel's own grey
        grey = _grey(pixels)[..., None]
        pixels *= factors.saturation
        pixels += (1 - factors.saturation) * grey
        np.clip(pixels, 0.0, 1.0, out=pixels)
    return out


def _grey(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma, torchvision's rgb_to_grayscale weights. [h, w, 3] -> [h, w]."""
    return image @ np.array([0.2989, 0.587, 0.114], np.float32)


def imagenet_normalize(image: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 (0..255) or float (0..1) -> [3, H, W] float32 tensor, ImageNet mean/std normalised."""
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()  # [3, H, W]
    scale = 1 / 255.0 if pixels.dtype == torch.uint8 else 1.0
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (pixels.float() * (scale / std)).sub_(mean / std)  # a new tensor: never writes into `image`


def imagenet_denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Inverse of imagenet_normalize for previews: [3, H, W] tensor -> [H, W, 3] uint8."""
    mean = torch.tensor(IMAGENET_MEAN, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=tensor.device).view(3, 1, 1)
    pixels = (tensor.detach().float() * std + mean).clamp(0, 1).mul(255).round()
    return pixels.byte().permute(1, 2, 0).cpu().numpy()


# ---------------------------------------------------------------------------------------------------
# Heatmaps attached to a frame

def crop_heatmap(heatmap: np.ndarray, frame_wh: tuple[int, int], window_xyxy: Sequence[int]) -> np.ndarray:
    """Resample a map covering the whole frame to the crop ``window_xyxy`` (pixels of that frame).

    Bilinear, with cell centres at half-cell offsets; cells of the window outside the frame become 0
    (the image crop pads black there). Min-max normalised afterwards, as GCDR does with cropped
    Grad-CAMs (docs/official-code.md#maps-that-follow-the-image). [h, w] in, [h, w] float32 out.
    """
    frame_w, frame_h = frame_wh
    x0, y0, x1, y1 = window_xyxy
    rows, cols = heatmap.shape
    scale_x, scale_y = (x1 - x0) / frame_w, (y1 - y0) / frame_h  # source cells per output cell
    # output cell index u -> source cell index: (x0 + (u + 0.5) * window_w / cols) * cols / frame_w - 0.5
    to_source = np.array([[scale_x, 0.0, x0 / frame_w * cols + 0.5 * scale_x - 0.5],
                          [0.0, scale_y, y0 / frame_h * rows + 0.5 * scale_y - 0.5]])
    cropped = cv2.warpAffine(np.asarray(heatmap, np.float32), to_source, (cols, rows),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    centres_x = x0 + (np.arange(cols) + 0.5) * (x1 - x0) / cols  # [cols] pixels of the frame
    centres_y = y0 + (np.arange(rows) + 0.5) * (y1 - y0) / rows
    cropped[:, (centres_x < 0) | (centres_x > frame_w)] = 0.0
    cropped[(centres_y < 0) | (centres_y > frame_h), :] = 0.0
    return normalize_heatmap(cropped)


# ---------------------------------------------------------------------------------------------------
# Views: everything that must move together when the image is cropped or flipped

@dataclass
class View:
    """One person in one (possibly augmented) frame.

    image:            [H, W, 3] uint8 RGB (a PIL image is converted).
    head_box_xyxy_px: [4] head box as the model will use it (already enlarged where the protocol says so).
    gaze_points_px:   [K, 2] gaze points (K = 0 when there are none); transformed like the image whatever
                      ``inout`` says, so consumers must check ``inout`` before using them.
    inout:            1 in frame, 0 out of frame, -1 unknown.
    body_box_xyxy_px: [4] body box or None.
    prior_64:         [64, 64] map in [0, 1] over the whole frame (e.g. a Grad-CAM pseudo-label) or None.
    labeled:          False when the gaze is unknown to the learner: its points must not steer the crop
                      (they are still carried along, e.g. for evaluation).
    colour:           colour jitter still to be applied (it is per pixel, so it runs after resizing).
    """

    image: np.ndarray | Image.Image
    head_box_xyxy_px: np.ndarray
    gaze_points_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    inout: int = IN_FRAME
    body_box_xyxy_px: np.ndarray | None = None
    prior_64: np.ndarray | None = None
    labeled: bool = True
    colour: ColourFactors | None = None

    def __post_init__(self) -> None:
        if isinstance(self.image, Image.Image):
            self.image = np.array(self.image.convert("RGB"), np.uint8)
        self.head_box_xyxy_px = np.asarray(self.head_box_xyxy_px, np.float64).reshape(4)
        self.gaze_points_px = np.asarray(self.gaze_points_px, np.float64).reshape(-1, 2)
        if self.body_box_xyxy_px is not None:
            self.body_box_xyxy_px = np.asarray(self.body_box_xyxy_px, np.float64).reshape(4)

    @property
    def size_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    @property
    def gaze_known(self) -> bool:
        """True when the gaze points are in frame and known to the learner (they may steer the crop)."""
        return self.labeled and self.inout == IN_FRAME and len(self.gaze_points_px) > 0

    def keep_region_xyxy_px(self) -> np.ndarray:
        """Region a crop must keep: the head box plus, when known, every gaze point. [4] float64."""
        points = self.head_box_xyxy_px.reshape(2, 2)
        if self.gaze_known:
            points = np.concatenate([points, self.gaze_points_px])
        return np.concatenate([points.min(axis=0), points.max(axis=0)])


def crop_view(view: View, window_xyxy: Sequence[int]) -> View:
    """Crop to the integer window (x0, y0, x1, y1) of the current frame (black outside it); boxes, gaze and
    the prior map follow, and the window becomes the new frame."""
    x0, y0 = window_xyxy[0], window_xyxy[1]
    return _move_view(view, image=crop_with_padding(view.image, window_xyxy),
                      box=lambda box: box - [x0, y0, x0, y0],
                      points=lambda points: points - [x0, y0],
                      heatmap=lambda heatmap: crop_heatmap(heatmap, view.size_wh, window_xyxy))


def flip_view(view: View) -> View:
    """Mirror left-right: x -> W - x for gaze, boxes swap sides (new x_min = W - old x_max);
    the prior is mirrored."""
    width = view.size_wh[0]
    return _move_view(view, image=cv2.flip(view.image, 1),
                      box=lambda box: np.array([width - box[2], box[1], width - box[0], box[3]]),
                      points=lambda points: np.column_stack([width - points[:, 0], points[:, 1]]),
                      heatmap=lambda heatmap: np.ascontiguousarray(heatmap[:, ::-1]))


def _move_view(view: View, image: np.ndarray, box: Callable, points: Callable, heatmap: Callable) -> View:
    """Apply one geometric change to everything a view carries (the one list of what moves together)."""
    return dataclasses.replace(
        view, image=image, head_box_xyxy_px=box(view.head_box_xyxy_px),
        gaze_points_px=points(view.gaze_points_px),
        body_box_xyxy_px=None if view.body_box_xyxy_px is None else box(view.body_box_xyxy_px),
        prior_64=None if view.prior_64 is None else heatmap(view.prior_64))


# ---------------------------------------------------------------------------------------------------
# Random augmentation

@dataclass
class AugmentConfig:
    """Train-time augmentation. Defaults = GCDR on GazeFollow (docs/official-code.md#gazefollow-augmentation-vat-gcdr); ``AugmentConfig.gazelle()`` = docs/official-code.md#gaze-lle-preprocessing.

    Every step fires independently with its probability.
    jitter_max:        GCDR/VAT style: head box grown by k ~ U[0, jitter_max) (GCDR 0.1, VAT 0.2);
                       Gaze-LLE style: each side moved by U(-jitter_max, jitter_max) x box size (0.2).
    crop_only_labeled: crop only labeled views (GCDR: unlabeled samples are never cropped, a crop could cut
                       away their unknown target); False crops them too, keeping only the head box.
                       Labeled views keep the head box and, when in frame, the gaze points.
    saturation:        U(0, 1.5) on GazeFollow, (0.5, 1.5) on VideoAttentionTarget.
    """

    jitter_prob: float = 0.5
    jitter_max: float = 0.1
    crop_prob: float = 0.5
    crop_only_labeled: bool = True
    flip_prob: float = 0.5
    colour_prob: float = 0.5
    brightness: tuple[float, float] = (0.5, 1.5)
    contrast: tuple[float, float] = (0.5, 1.5)
    saturation: tuple[float, float] = (0.0, 1.5)

    @classmethod
    def gazelle(cls) -> AugmentConfig:
        """Gaze-LLE's recipe: crop, flip, +-20 % side jitter, no colour jitter."""
        return cls(jitter_max=0.2, colour_prob=0.0)


def sample_crop_window(view: View, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """VAT / GCDR crop (docs/official-code.md#gazefollow-augmentation-vat-gcdr): left ~ U(0, keep_left) (kept as is when negative: the crop then pads),
    top likewise, width ~ U(keep_right - left, W - left), height likewise. Rounded outward to whole
    pixels (floor / ceil), so the keep region always stays inside. Returns (x0, y0, x1, y1)."""
    frame_w, frame_h = view.size_wh
    keep_x0, keep_y0, keep_x1, keep_y1 = view.keep_region_xyxy_px()
    left = rng.uniform(0, keep_x0) if keep_x0 >= 0 else keep_x0
    top = rng.uniform(0, keep_y0) if keep_y0 >= 0 else keep_y0
    width = rng.uniform(keep_x1 - left, max(frame_w - left, keep_x1 - left))
    height = rng.uniform(keep_y1 - top, max(frame_h - top, keep_y1 - top))
    x0, y0 = math.floor(left), math.floor(top)
    return x0, y0, max(math.ceil(left + width), x0 + 1), max(math.ceil(top + height), y0 + 1)


def sample_crop_window_gazelle(view: View, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Gaze-LLE crop (docs/official-code.md#gaze-lle-preprocessing): integer sides, left ~ randint[0, int(keep_left)], right ~ randint[keep_right, W]
    (keep_right rounded up rather than truncated, so no fraction of the head box is cut), top/bottom
    likewise; never leaves the frame. Returns (x0, y0, x1, y1)."""
    frame_w, frame_h = view.size_wh
    keep_x0, keep_y0, keep_x1, keep_y1 = view.keep_region_xyxy_px()
    x0 = int(rng.integers(0, int(np.clip(keep_x0, 0, frame_w - 1)) + 1))
    y0 = int(rng.integers(0, int(np.clip(keep_y0, 0, frame_h - 1)) + 1))
    x1 = int(rng.integers(max(min(math.ceil(keep_x1), frame_w), x0 + 1), frame_w + 1))
    y1 = int(rng.integers(max(min(math.ceil(keep_y1), frame_h), y0 + 1), frame_h + 1))
    return x0, y0, x1, y1


def jitter_box_sides(box_xyxy_px: BoxXYXY, frame_wh: tuple[int, int], max_fraction: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Gaze-LLE box jitter (docs/official-code.md#gaze-lle-preprocessing): each side moved by U(-max_fraction, max_fraction) x box width (x sides)
    or height (y sides), then clamped to the frame. May shrink or grow. Returns [4] float64."""
    box = np.asarray(box_xyxy_px, np.float64)
    size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
    return clamp_box(box + rng.uniform(-max_fraction, max_fraction, size=4) * size, frame_wh)


def sample_colour_factors(rng: np.random.Generator, cfg: AugmentConfig) -> ColourFactors:
    return ColourFactors(brightness=rng.uniform(*cfg.brightness), contrast=rng.uniform(*cfg.contrast),
                         saturation=rng.uniform(*cfg.saturation))


def _may_crop(view: View, cfg: AugmentConfig) -> bool:
    return view.labeled or not cfg.crop_only_labeled


def augment_vat(view: View, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> View:
    """VAT / GCDR train augmentation (docs/official-code.md#gazefollow-augmentation-vat-gcdr), in order: head-box jitter (expansion by k ~ U[0, jitter_max)),
    crop keeping head and gaze, horizontal flip, colour jitter (recorded in ``view.colour``)."""
    cfg = cfg or AugmentConfig()
    if rng.random() < cfg.jitter_prob:
        view = dataclasses.replace(view, head_box_xyxy_px=enlarge_head_box(
            view.head_box_xyxy_px, rng.uniform(0, cfg.jitter_max)))
    if rng.random() < cfg.crop_prob and _may_crop(view, cfg):
        view = crop_view(view, sample_crop_window(view, rng))
    if rng.random() < cfg.flip_prob:
        view = flip_view(view)
    if rng.random() < cfg.colour_prob:
        view = dataclasses.replace(view, colour=sample_colour_factors(rng, cfg))
    return view


def augment_vat_two_views(view: View, rng: np.random.Generator,
                          cfg: AugmentConfig | None = None) -> tuple[View, View]:
    """GCDR's two views of one person for the mean teacher (``GazeFollow_weakly_doubleaug``,
    docs/method.md#mean-teacher): each view gets its OWN head-box jitter and its OWN colour jitter (each
    with its own probability and factors), while the crop (one window, whose keep-region covers both
    jittered boxes and the gaze) and the flip are drawn once and applied to both. Both views therefore
    share one frame: gaze points, target and prior are identical and only the head box (by its jitter),
    the face crop, the head channel and the colours differ. Returns (view 1, view 2).
    """
    cfg = cfg or AugmentConfig()
    views = []
    for _ in range(2):
        jittered = view
        if rng.random() < cfg.jitter_prob:
            jittered = dataclasses.replace(view, head_box_xyxy_px=enlarge_head_box(
                view.head_box_xyxy_px, rng.uniform(0, cfg.jitter_max)))
        views.append(jittered)
    if rng.random() < cfg.crop_prob and _may_crop(view, cfg):
        boxes = np.stack([v.head_box_xyxy_px for v in views])  # [2, 4]
        union = np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])
        window = sample_crop_window(dataclasses.replace(views[0], head_box_xyxy_px=union), rng)
        views = [crop_view(v, window) for v in views]
    if rng.random() < cfg.flip_prob:
        views = [flip_view(v) for v in views]
    for i, v in enumerate(views):
        if rng.random() < cfg.colour_prob:
            views[i] = dataclasses.replace(v, colour=sample_colour_factors(rng, cfg))
    return views[0], views[1]


def augment_gazelle(view: View, rng: np.random.Generator, cfg: AugmentConfig | None = None) -> View:
    """Gaze-LLE train augmentation (docs/official-code.md#gaze-lle-preprocessing), in order: integer crop, flip, independent side jitter of the
    head box (colour jitter only if ``cfg.colour_prob`` > 0; Gaze-LLE has none)."""
    cfg = cfg or AugmentConfig.gazelle()
    if rng.random() < cfg.crop_prob and _may_crop(view, cfg):
        view = crop_view(view, sample_crop_window_gazelle(view, rng))
    if rng.random() < cfg.flip_prob:
        view = flip_view(view)
    if rng.random() < cfg.jitter_prob:
        view = dataclasses.replace(view, head_box_xyxy_px=jitter_box_sides(
            view.head_box_xyxy_px, view.size_wh, cfg.jitter_max, rng))
    if rng.random() < cfg.colour_prob:
        view = dataclasses.replace(view, colour=sample_colour_factors(rng, cfg))
    return view


def augment(view: View, rng: np.random.Generator, style: Style, cfg: AugmentConfig | None = None) -> View:
    """Dispatch to augment_vat or augment_gazelle."""
    if style == "vat":
        return augment_vat(view, rng, cfg)
    if style == "gazelle":
        return augment_gazelle(view, rng, cfg)
    raise ValueError(f"unknown style {style!r}; expected 'vat' or 'gazelle'")

