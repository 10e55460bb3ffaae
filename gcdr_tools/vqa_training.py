"""Training a (small) BLIP VQA model on (image, question, answer) triples, and scoring its answers.

Used by ``make synth-vqa`` (gcdr_tools.synth_vqa) and by the tests' toy tasks. One readable loop: AdamW,
linear warm-up then cosine decay, cross-entropy of the answer tokens ([BOS] answer [SEP]) under teacher forcing,
random horizontal flips of the pixels (the question and answer never depend on left/right).

Optional attention supervision (``attention_weight > 0``, examples with ``target_points_norm``): the text
encoder's cross-attention of layer ``attention_layer`` (mean over heads and question tokens) is pulled towards
Gaussians (sigma = ``attention_sigma`` patches) around known points, by cross-entropy. Points are given per
example, [N, K, 2] with NaN padding (several instances of a named object) or [N, 2]; an example whose points are
all NaN is not supervised. A from-scratch ViT learns "where is the thing named" from answers alone far too slowly
for a CPU budget; this dense signal is the shortcut (grounding supervision, as in VQA models pretrained with
region-text data).
Optional second stage of the same supervision (``head_attention_weight > 0``, examples with ``head_points_norm``):
the cross-attention of the layer *before* ``attention_layer`` is pulled towards the asking person's head. The
question is the same for every person, so the first cross-attention's queries cannot depend on the image: the
patch keys alone must say "I am the target of the person in the green box", which a shallow ViT cannot compute.
Reading the head first (where the person is, which way the face points) lets the next layer's queries depend on
the person, and that layer then looks along the gaze.

Schedule: linear warm-up, then cosine decay over a fixed number of steps (epochs x batches): nothing depends on
the machine's speed, so the same seed gives the same model anywhere.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gcdr.vqa.blip import Vqa, encode_questions, generate_answers

log = logging.getLogger(__name__)


@dataclass
class VqaExamples:
    """Pre-processed training or test examples.

    pixel_values: [N, 3, S, S] processor output (float16 to halve memory; cast per batch).
    questions, answers: N strings each (answers "" for unknown, never used in training).
    target_points_norm: [N, K, 2] (or [N, 2]) where the thing the question names is (x/W, y/H), NaN rows = no
                        supervision; or None.
    head_points_norm: [N, 2] where the asking person's head is (x/W, y/H), NaN = no supervision; or None.
    """

    pixel_values: torch.Tensor
    questions: list[str]
    answers: list[str]
    target_points_norm: torch.Tensor | None = None  # [N, K, 2] or [N, 2], (x, y) in [0, 1], NaN = none
    head_points_norm: torch.Tensor | None = None  # [N, 2] (x, y) in [0, 1]: head-attention supervision

    def __len__(self) -> int:
        return len(self.questions)


def preprocess_images(processor, images_rgb: Sequence[np.ndarray], chunk: int = 256) -> torch.Tensor:
    """Run the BLIP image processor over RGB uint8 images in chunks -> [N, 3, S, S] float16."""
    out = []
    for first in range(0, len(images_rgb), chunk):
        pixels = processor.image_processor(images=list(images_rgb[first:first + chunk]), return_tensors="pt")
        out.append(pixels["pixel_values"].to(torch.float16))
    return torch.cat(out)


def _answer_batch(tokenizer, answers: list[str], bos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS] answer [SEP] ids, right-padded -> (ids [B, T], mask [B, T])."""
    encoded = tokenizer(answers, padding=True, return_tensors="pt")  # [CLS] answer [SEP] [PAD]...
    ids = encoded["input_ids"].clone()
    ids[:, 0] = bos_id  # BLIP replaces [CLS] with the decoder's BOS
    return ids, encoded["attention_mask"]


def attention_target(points_norm: torch.Tensor, grid_hw: tuple[int, int], sigma_patches: float = 1.0) -> torch.Tensor:
    """Target distributions over the patch grid: the sum of Gaussians around each example's (x, y) points.

    points_norm: [B, 2] or [B, K, 2] with NaN padding -> [B, h*w], rows sum to 1 (all zero for an example
    without points).
    """
    if points_norm.dim() == 2:
        points_norm = points_norm[:, None]  # [B, 1, 2]
    height, width = grid_hw
    rows = torch.arange(height, dtype=torch.float32)[:, None] + 0.5  # patch centres in patch units
    cols = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    x = points_norm[:, :, 0, None, None] * width  # [B, K, 1, 1]
    y = points_norm[:, :, 1, None, None] * height
    target = torch.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma_patches**2))  # [B, K, h, w]
    target = torch.nan_to_num(target, nan=0.0).sum(1).flatten(1)  # [B, h*w]
    return target / target.sum(1, keepdim=True).clamp_min(1e-12)


def _attention_cross_entropy(attention_probs: torch.Tensor, question_mask: torch.Tensor, points_norm: torch.Tensor,
                             grid_hw: tuple[int, int], sigma_patches: float) -> torch.Tensor:
    """Cross-entropy between a cross-attention and Gaussians around ``points_norm`` [B, 2].

    attention_probs: [B, heads, Lq, 1 + h*w] (key 0 = image [CLS]); averaged over heads and the question's
    non-padding tokens, then the [CLS] key is dropped. Returns the batch mean (nats).
    """
    weights = question_mask.float() / question_mask.sum(1, keepdim=True)  # [B, Lq]
    attention = (attention_probs.mean(1) * weights[:, :, None]).sum(1)[:, 1:]  # [B, h*w]
    target = attention_target(points_norm.cpu(), grid_hw, sigma_patches).to(attention.device)
    supervised = target.sum(1) > 0  # [B] examples with at least one point
    if not supervised.any():
        return attention.sum() * 0.0
    return -(target * torch.log(attention.float() + 1e-8)).sum(1)[supervised].mean()


def vqa_loss(vqa: Vqa, pixel_values: torch.Tensor, questions: list[str], answers: list[str],
             label_smoothing: float = 0.0, points_norm: torch.Tensor | None = None,
             attention_weight: float = 0.0, attention_layer: int = -2, attention_sigma: float = 1.0,
             head_points_norm: torch.Tensor | None = None, head_attention_weight: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (incl. [SEP], excl. padding) given image and question,
    plus ``attention_weight`` x the attention-supervision cross-entropy of layer ``attention_layer`` when
    ``points_norm`` [B, 2] is given, plus ``head_attention_weight`` x that of the layer before it towards
    ``head_points_norm`` [B, 2] (module docstring)."""
    model = vqa.model
    question_ids, question_mask = encode_questions(vqa, questions)
    answer_ids, answer_mask = _answer_batch(vqa.tokenizer, answers, model.config.text_config.bos_token_id)
    answer_ids, answer_mask = answer_ids.to(vqa.device), answer_mask.to(vqa.device)
    layers = model.text_encoder.encoder.layer
    supervised: dict[int, tuple[float, torch.Tensor]] = {}  # layer index -> (weight, points [B, 2])
    if points_norm is not None and attention_weight > 0:
        supervised[attention_layer % len(layers)] = (attention_weight, points_norm)
    if head_points_norm is not None and head_attention_weight > 0:
        head_layer = attention_layer % len(layers) - 1
        if head_layer < 0:
            raise ValueError(f"head attention supervision needs a text-encoder layer before layer {attention_layer} "
                             f"(the text encoder has {len(layers)}); add text layers")
        supervised[head_layer] = (head_attention_weight, head_points_norm)
    captured: dict[int, torch.Tensor] = {}
    handles = [layers[index].crossattention.self.register_forward_hook(
        lambda _m, _i, output, index=index: captured.__setitem__(index, output[1])) for index in supervised]
    try:
        image_embeds = model.vision_model(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=vqa.device)
        question_embeds = model.text_encoder(input_ids=question_ids, attention_mask=question_mask,
                                             encoder_hidden_states=image_embeds,
                                             encoder_attention_mask=image_mask).last_hidden_state
    finally:
        for handle in handles:
            handle.remove()
    logits = model.text_decoder(input_ids=answer_ids, attention_mask=answer_mask,
                                encoder_hidden_states=question_embeds,
                                encoder_attention_mask=question_mask).logits  # [B, T, V]
    targets = answer_ids[:, 1:].masked_fill(answer_mask[:, 1:] == 0, -100)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                           label_smoothing=label_smoothing)
    for index, (weight, points) in supervised.items():
        loss = loss + weight * _attention_cross_entropy(captured[index], question_mask, points, vqa.patch_grid_hw,
                                                        attention_sigma)
    return loss


def train_vqa(vqa: Vqa, examples: VqaExamples, epochs: int, batch_size: int = 32, lr: float = 5e-4,
              weight_decay: float = 0.05, warmup_fraction: float = 0.05, flip: bool = True, seed: int = 0,
              progress: bool = True, label_smoothing: float = 0.0,
              attention_weight: float = 0.0, attention_layer: int = -2, attention_sigma: float = 1.0,
              head_attention_weight: float = 0.0) -> dict:
    """Train ``vqa.model`` in place; returns {"steps", "final_loss"} (loss = mean of the last 20 steps).

    label_smoothing: of the answer cross-entropy; keeps answer probabilities away from 1, where the gradients
    that Grad-CAM reads vanish.
    attention_weight, attention_layer, attention_sigma: attention supervision (module docstring); needs
    target_points_norm. head_attention_weight: head-attention supervision of the layer before; needs
    head_points_norm.
    The model is left in eval mode with frozen parameters, ready for Grad-CAM.
    """
    model = vqa.model
    model.requires_grad_(True)
    model.train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    warmup = max(1, int(warmup_fraction * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    losses: list[float] = []
    step = 0
    bar = tqdm(total=total, desc="train vqa", unit="step", disable=not progress)
    for _epoch in range(epochs):
        order = torch.randperm(len(examples), generator=generator)
        for first in range(0, len(order), batch_size):
            index = order[first:first + batch_size]
            pixels = examples.pixel_values[index].to(device=vqa.device, dtype=vqa.dtype)  # [B, 3, S, S]
            points = None if examples.target_points_norm is None else examples.target_points_norm[index].clone()
            heads = None if examples.head_points_norm is None else examples.head_points_norm[index].clone()
            if flip:
                flipped = torch.rand(len(index), generator=generator) < 0.5
                pixels[flipped.to(vqa.device)] = pixels[flipped.to(vqa.device)].flip(-1)
                for xy in (points, heads):
                    if xy is not None:
                        xy[flipped, ..., 0] = 1 - xy[flipped, ..., 0]
            loss = vqa_loss(vqa, pixels, [examples.questions[i] for i in index],
                            [examples.answers[i] for i in index], label_smoothing, points, attention_weight,
                            attention_layer, attention_sigma, heads, head_attention_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            if step % 100 == 0:
                log.info("VQA training step %d of %d: loss %.3f (mean of the last 100), lr %.2e", step, total,
                         np.mean(losses[-100:]), schedule.get_last_lr()[0])
    bar.close()
    model.eval()
    model.requires_grad_(False)
    return {"steps": step, "final_loss": float(np.mean(losses[-20:]))}


def answer_accuracy(vqa: Vqa, examples: VqaExamples, batch_size: int = 64, max_new_tokens: int = 5) -> dict:
    """Exact-match accuracy of greedy answers; returns {"accuracy", "n", "answers"} (answers in input order)."""
    predictions: list[str] = []
    for first in range(0, len(examples), batch_size):
        pixels = examples.pixel_values[first:first + batch_size].to(device=vqa.device, dtype=vqa.dtype)
        question_ids, question_mask = encode_questions(vqa, examples.questions[first:first + batch_size])
        predictions += generate_answers(vqa, pixels, question_ids, question_mask, max_new_tokens)
    correct = [p == a for p, a in zip(predictions, examples.answers)]
    return {"accuracy": float(np.mean(correct)) if correct else float("nan"), "n": len(correct),
            "answers": predictions}
