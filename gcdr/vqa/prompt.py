"""Asking the VQA model about one person (GCDR, docs/method.md#marking-the-person): a green box drawn on the full image + a question.

Every person of a multi-person image gets its own drawing (and so its own answer and map).
GCDR draws the body box with thickness 2 (on ~640 px GazeFollow images); here the line width scales with the
image, ``max(2, round(min(W, H) / 200))`` (5 px on a 1920x1080 frame), so the box survives BLIP's resize to
384 px. Which box: ``mark="body_or_head"`` draws the body box when the sample has one, else the head box
(always the green-box question); ``mark="body_only"`` is GCDR's rule: body box, else the unmarked image and the
fallback question.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from gcdr.data.sample import PersonSample

BOX_COLOR_RGB = (0, 255, 0)
MARKS = ("body_or_head", "body_only")


@dataclass
class PersonPrompt:
    """What the VQA model is shown for one person.

    image_rgb: [H, W, 3] uint8 full image with the person's box drawn (unchanged when no box is drawn).
    question:  the question text.
    box_xyxy_px: the drawn box (None when none was drawn).
    """

    image_rgb: np.ndarray
    question: str
    box_xyxy_px: tuple[float, float, float, float] | None


def box_line_width(width: int, height: int) -> int:
    """Rectangle thickness in pixels for an image of ``width`` x ``height``: max(2, round(min(W, H) / 200))."""
    return max(2, round(min(width, height) / 200))


def draw_box(image_rgb: np.ndarray, box_xyxy_px: tuple[float, float, float, float],
             color_rgb: tuple[int, int, int] = BOX_COLOR_RGB, thickness: int | None = None) -> np.ndarray:
    """A copy of ``image_rgb`` [H, W, 3] uint8 with the rectangle drawn (pixel corners rounded to ints)."""
    height, width = image_rgb.shape[:2]
    thickness = thickness or box_line_width(width, height)
    x1, y1, x2, y2 = (int(round(v)) for v in box_xyxy_px)
    out = np.ascontiguousarray(image_rgb).copy()
    cv2.rectangle(out, (x1, y1), (x2, y2), color_rgb, thickness)
    return out


def marked_box(sample: PersonSample, mark: str = "body_or_head") -> tuple[float, float, float, float] | None:
    """The box drawn for ``sample``: its body box when present, else (``body_or_head``) its head box, else None."""
    if mark not in MARKS:
        raise ValueError(f"unknown vqa.mark {mark!r}; use one of {MARKS}")
    if sample.body_box_xyxy_px is not None:
        return tuple(float(v) for v in sample.body_box_xyxy_px)
    return tuple(float(v) for v in sample.head_box_xyxy_px) if mark == "body_or_head" else None


def person_prompt(image_rgb: np.ndarray, sample: PersonSample, question: str,
                  fallback_question: str = "what is the person looking at?",
                  mark: str = "body_or_head") -> PersonPrompt:
    """Draw ``sample``'s box in green on the full image and pair it with the question (see module doc)."""
    box = marked_box(sample, mark)
    if box is None:
        return PersonPrompt(image_rgb, fallback_question, None)
    return PersonPrompt(draw_box(image_rgb, box), question, box)
