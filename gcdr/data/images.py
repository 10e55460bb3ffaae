"""Reading images: decoded pixels for the models, header-only sizes for the annotation readers.

EXIF orientation is ignored on purpose: GazeFollow / VideoAttentionTarget head boxes were annotated on the
stored pixel array (VAT and GCDR open images with PIL, which does not rotate), so pixels and sizes must
come from the stored array too.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from gcdr.errors import UserError

_CV2_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
MIN_IMAGE_SIDE = 16  # smaller images cannot hold a face crop and a scene; an error, not a silent upscale
_JPEG_START, _JPEG_END, _JPEG_SCAN = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"


class ImageReadError(UserError, ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


def _existing_file(path: str | os.PathLike) -> str:
    """``path`` as a string; ImageReadError naming it when it is missing or empty (0 bytes, e.g. a killed copy)."""
    path = os.fspath(path)
    try:
        size = os.stat(path).st_size if os.path.isfile(path) else None
    except OSError:
        size = None
    if size is None:
        raise ImageReadError(f"image not found: {path}")
    if size == 0:
        raise ImageReadError(f"image is empty (0 bytes): {path}")
    return path


def load_image_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file (JPEG, PNG, ...) into RGB pixels.

    Returns a [H, W, 3] uint8 array; grey and RGBA images are converted to 3 channels.
    Raises ImageReadError naming ``path`` when the file is missing, empty or cannot be decoded.
    """
    path = _existing_file(path)
    _check_not_truncated(path)
    bgr = cv2.imread(path, _CV2_FLAGS)  # [H, W, 3] BGR, None when OpenCV cannot decode it
    if bgr is not None:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        try:  # formats OpenCV lacks (GIF, some TIFF variants)
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        except (OSError, UnidentifiedImageError, ValueError) as error:
            raise ImageReadError(f"cannot decode image {path}: {error}") from error
    if min(rgb.shape[:2]) < MIN_IMAGE_SIDE:
        raise ImageReadError(f"image is {rgb.shape[1]}x{rgb.shape[0]} pixels, smaller than {MIN_IMAGE_SIDE} on a "
                             f"side: {path}; remove it from the annotations")
    return rgb


def _check_not_truncated(path: str) -> None:
    """ImageReadError for a JPEG cut short (a killed copy or download): OpenCV decodes what is there and fills
    the rest with grey, with a warning that names no file. A JPEG ends with an end-of-image marker after its
    last scan; only files without one at the very end are read whole and, when suspicious, decoded by PIL,
    which refuses truncated data."""
    with open(path, "rb") as f:
        if f.read(2) != _JPEG_START:
            return
        f.seek(-2, os.SEEK_END)
        if f.read(2) == _JPEG_END:
            return  # the common case: nothing after the end-of-image marker
        f.seek(0)
        data = f.read()
    if data.rfind(_JPEG_END) > data.rfind(_JPEG_SCAN):
        return  # bytes appended after the end-of-image marker (some cameras do): complete
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, ValueError) as error:
        raise ImageReadError(f"image is truncated (JPEG without its end): {path}; copy it again, or set "
                             f"dataset.on_error: skip to leave it out ({error})") from error


def image_size_wh(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) in pixels read from the file header only (no decoding); ImageReadError if unreadable."""
    path = _existing_file(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise ImageReadError(f"cannot read image header of {path}: {error}") from error
    return int(width), int(height)
