"""Noise maths of the GCDR teacher on diffusers schedulers: training noise, DDIM sampling, refinement.

Spaces. Heatmaps live in [0, 1]; the diffusion state lives in the scaled space x_s = (2 x - 1) * scale
(scale 2, so [-2, 2]); the network always sees ``network_input(x_s) = (clamp(x_s, -2, 2) / 2 + 1) / 2``
in [0, 1] and predicts the clean heatmap x0 in [0, 1] (docs/method.md#noise-schedule).

Schedulers. Training noise uses ``DDPMScheduler`` (500 steps, linear betas 2e-4..4e-2,
prediction_type "sample", clip_sample False) and its ``add_noise``; sampling uses the ``alphas_cumprod``
and ``final_alpha_cumprod`` of a ``DDIMScheduler`` (same betas, ``set_alpha_to_one=False`` so the step
after the smallest timestep uses ab[0], as GCDR). Timesteps are 0-based noise indices everywhere (the
network's time input is the same index in training and sampling).

Why not ``DDIMScheduler.step`` itself: in diffusers 0.42 ``DDIMScheduler.set_timesteps`` takes no
``timesteps=`` list and ``step`` derives the previous timestep as ``t - num_train_timesteps //
num_inference_steps``. GCDR refines with the timesteps {c-1, 2c-1, ..., N-1}, c = N // S (N = 250,
S = 2 -> 249, 124), whose stride c = 125 is not 500 // S = 250, so the stock step would jump from 249 to
-1. :func:`ddim_step` is the same update (formulas 12 and 16 of the DDIM paper for an x0-predicting
model, as in ``DDIMScheduler.step`` with prediction_type "sample") with the previous timestep taken from
the explicit list; ``tests/test_teacher.py`` checks that it equals ``DDIMScheduler.step`` wherever the
stock stride is right (full-length "trailing" sampling: 499, 449, ..., 49).

Sampler semantics (``semantics=``):

``"intended"`` (default, docs/method.md#intended-vs-as-coded-sampler):
  - start: x_s = add_noise(scaled map, eps, tau_max) where tau_max = S * c - 1 is the first DDIM
    timestep (= N - 1 when S divides N), or pure noise eps when N is the number of training steps;
  - each step: x0 = net(network_input(x_s), tau); x0_s = (2 x0 - 1) * scale;
    eps_hat = (x_s - sqrt(ab) x0_s) / sqrt(1 - ab); x_s <- DDIM update (state stays in the scaled space);
  - output: x0 of the last step.
``"as_coded"`` (the released GCDR sampler, kept for comparison), differs in three places:
  - double mapping: the state is stored back in [0, 1] after every step and mapped again at the next
    one, so after the first step the network sees values in [0.5, 0.75] (unlike training);
  - eps mixing: eps_hat = (sqrt(1/ab) x_s - x0) / sqrt(1/ab - 1) uses the UNSCALED x0;
  - start index: the Grad-CAM is noised with ab[N] but the first step assumes ab[N - 1];
  and the released code feeds 1-based time in training but the 0-based index when sampling (an
  off-by-one that only matters for official checkpoints; this project feeds 0-based indices to both).
Both start a pure-noise sample (N >= number of training steps) from unmapped N(0, I) in the scaled space.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler

from gcdr.heatmaps import normalize_heatmaps
from gcdr.teacher.model import GazeDiffusionTeacher, TeacherModelConfig

SEMANTICS = ("intended", "as_coded")


# ------------------------------------------------------------------------------------------- schedulers
def make_train_scheduler(config: TeacherModelConfig) -> DDPMScheduler:
    """The training noise schedule (GCDR: 500 steps, linear betas 2e-4..4e-2, x0 prediction, no clipping)."""
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="linear",
                         beta_start=config.beta_start, beta_end=config.beta_end, prediction_type="sample",
                         clip_sample=False)


def make_ddim_scheduler(config: TeacherModelConfig) -> DDIMScheduler:
    """The sampling schedule: same betas; the step after the smallest timestep uses ab[0] (set_alpha_to_one False)."""
    return DDIMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="linear",
                         beta_start=config.beta_start, beta_end=config.beta_end, prediction_type="sample",
                         clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")


# --------------------------------------------------------------------------------------------- spaces
def to_scaled(heatmap_01: torch.Tensor, scale: float) -> torch.Tensor:
    """[0, 1] -> [-scale, scale]: (2 x - 1) * scale."""
    return (2.0 * heatmap_01 - 1.0) * scale


def network_input(x_scaled: torch.Tensor, scale: float) -> torch.Tensor:
    """Diffusion state -> what the U-Net sees: clamp to [-scale, scale], map to [0, 1]."""
    return (x_scaled.clamp(-scale, scale) / scale + 1.0) / 2.0


def q_sample(scheduler: DDPMScheduler | DDIMScheduler, heatmap_01: torch.Tensor, timesteps: torch.Tensor,
             noise: torch.Tensor, scale: float) -> torch.Tensor:
    """Forward process in the scaled space (unclamped): sqrt(ab[t]) (2 x - 1) scale + sqrt(1 - ab[t]) noise.

    heatmap_01, noise: [B, 1, H, W]; timesteps: [B] long, 0-based. Returns x_t [B, 1, H, W].
    """
    return scheduler.add_noise(to_scaled(heatmap_01, scale), noise, timesteps)


# ------------------------------------------------------------------------------------------ training
def training_inputs(scheduler: DDPMScheduler, target_heatmap_64: torch.Tensor, scale: float,
                    pure_noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None,
                    noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The network inputs of one training step (docs/method.md#prediction-target-and-training-loss).

    Each row's target [B, 64, 64] in [0, 1] is noised to its timestep (default uniform over 0..T-1) with
    ``noise`` (default N(0, I)) in the scaled space; rows flagged in ``pure_noise`` [B] bool (the mean
    teacher's unlabeled rows) get the noise alone at timestep T-1. Returns (network input [B, 1, 64, 64]
    clamped and mapped to [0, 1], timesteps [B] long). The loss is then the x0 regression of
    ``gcdr.students.vat.heatmap_mse_loss`` on the rows with a target (x 10000).
    """
    target = target_heatmap_64.unsqueeze(1).float()  # [B, 1, 64, 64]
    batch, num_train = target.shape[0], scheduler.config.num_train_timesteps
    if timesteps is None:
        timesteps = torch.randint(0, num_train, (batch,), device=target.device)
    if noise is None:
        noise = torch.randn_like(target)
    if pure_noise is not None:
        timesteps = torch.where(pure_noise.bool(), torch.full_like(timesteps, num_train - 1), timesteps)
    x_t = q_sample(scheduler, target, timesteps, noise, scale)  # [B, 1, 64, 64] scaled space
    if pure_noise is not None:
        x_t = torch.where(pure_noise.bool().view(-1, 1, 1, 1), noise, x_t)
    return network_input(x_t, scale), timesteps


# -------------------------------------------------------------------------------------------- DDIM
def direct_inputs(prior_64: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The direct mapping's network input: the Grad-CAM map [B, 64, 64] in [0, 1], min-max normalised (after
    augmentation), through the diffusion space's mapping, at timestep 0. ([B, 1, 64, 64], [B] long)."""
    prior = normalize_heatmaps(prior_64.float()).unsqueeze(1)
    return network_input(to_scaled(prior, scale), scale), torch.zeros(len(prior), dtype=torch.long,
                                                                      device=prior.device)


def refine_timesteps(denoise_steps: int, inference_steps: int) -> list[int]:
    """GCDR's DDIM timesteps, descending: c = N // S; [S c - 1, ..., 2 c - 1, c - 1] (docs/method.md#ddim-timesteps).

    (250, 2) -> [249, 124]; (200, 2) -> [199, 99]; (500, 10) -> [499, 449, ..., 49]. S is capped at N;
    N = 0 gives [].
    """
    if denoise_steps < 0 or inference_steps < 1:
        raise ValueError(f"need denoise_steps >= 0 and inference_steps >= 1, got {denoise_steps}, {inference_steps}")
    steps = min(inference_steps, denoise_steps)
    if steps == 0:
        return []
    stride = denoise_steps // steps
    return [k * stride - 1 for k in range(steps, 0, -1)]


def ddim_step(scheduler: DDIMScheduler, x_scaled: torch.Tensor, x0_scaled: torch.Tensor, timestep: int,
              prev_timestep: int, eta: float, variance_noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM update x_t -> x_prev for an x0 prediction, with an explicit previous timestep.

    Same formulas as ``DDIMScheduler.step`` (prediction_type "sample"), using the scheduler's
    ``alphas_cumprod`` and ``final_alpha_cumprod`` (prev_timestep < 0). Tensors [B, 1, H, W], scaled space.
    """
    alphas_cumprod = scheduler.alphas_cumprod
    alpha_t = alphas_cumprod[timestep]
    alpha_prev = alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    eps_hat = (x_scaled - alpha_t.sqrt() * x0_scaled) / (1 - alpha_t).sqrt()
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    std = eta * variance.sqrt()
    x_prev = alpha_prev.sqrt() * x0_scaled + (1 - alpha_prev - std**2).sqrt() * eps_hat
    if eta > 0:
        x_prev = x_prev + std * variance_noise
    return x_prev


@dataclass
class SamplingNoise:
    """All randomness of a sampling run: start [B, 1, H, W] and one variance noise per step [S, B, 1, H, W]."""

    start: torch.Tensor
    steps: torch.Tensor

    def to(self, device: torch.device | str) -> SamplingNoise:
        return SamplingNoise(self.start.to(device), self.steps.to(device))


def sample_seed(seed: int, sample_id: str) -> int:
    """A stable 63-bit seed for one person: the same (seed, sample id) always draws the same noise."""
    digest = hashlib.sha256(f"{seed}|{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def noise_for_samples(sample_ids: Sequence[str], seed: int, draws: int, steps: int,
                      size: int = 64) -> list[SamplingNoise]:
    """Per-person noise, independent of batching: one ``SamplingNoise`` per draw, batch = the ids in order.

    Each person's generator is seeded with ``sample_seed(seed, id)`` and draws, per draw, the start noise
    then ``steps`` variance noises (all [1, size, size], float32, on the CPU).
    """
    per_person = []
    for sample_id in sample_ids:
        generator = torch.Generator().manual_seed(sample_seed(seed, sample_id))
        per_person.append(torch.randn((draws, steps + 1, 1, size, size), generator=generator))
    stacked = torch.stack(per_person, dim=2)  # [draws, steps + 1, B, 1, size, size]
    return [SamplingNoise(start=stacked[d, 0], steps=stacked[d, 1:]) for d in range(draws)]


@torch.no_grad()
def ddim_sample(model: GazeDiffusionTeacher, scheduler: DDIMScheduler, context: list[torch.Tensor],
                x_start: torch.Tensor, timesteps: Sequence[int], step_noise: torch.Tensor | None,
                eta: float = 1.0, semantics: str = "intended") -> torch.Tensor:
    """Run DDIM over ``timesteps`` (descending) from ``x_start``; return x0 of the last step [B, 1, H, W] in [0, 1].

    x_start: the state at timesteps[0]: scaled space, except an as-coded Grad-CAM start, which GCDR stores
    in [0, 1] (it is then mapped a second time, see the module docstring);
    step_noise: [len(timesteps), B, 1, H, W] variance noise (None draws it from the global RNG).
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown sampler semantics {semantics!r}; choose from {SEMANTICS}")
    if not timesteps:
        raise ValueError("ddim_sample needs at least one timestep")
    scale = model.config.scale
    alphas_cumprod = scheduler.alphas_cumprod.to(x_start.device)
    final_alpha = scheduler.final_alpha_cumprod.to(x_start.device)
    scheduler.alphas_cumprod, scheduler.final_alpha_cumprod = alphas_cumprod, final_alpha
    x = x_start
    x0 = x_start
    for i, timestep in enumerate(timesteps):
        prev_timestep = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        noise = step_noise[i] if step_noise is not None else torch.randn_like(x)
        t_batch = torch.full((x.shape[0],), int(timestep), dtype=torch.long, device=x.device)
        x_in = network_input(x, scale)  # [B, 1, H, W] in [0, 1]
        x0 = model.denoise(x_in, t_batch, context)  # [B, 1, H, W] in [0, 1] units
        if semantics == "intended":
            x = ddim_step(scheduler, x, to_scaled(x0, scale), int(timestep), prev_timestep, eta, noise)
        else:
            x = network_input(_as_coded_step(scheduler, to_scaled(x_in, scale), x0, scale, int(timestep),
                                             prev_timestep, eta, noise), scale)  # stored back in [0, 1]
    return x0


def _as_coded_step(scheduler: DDIMScheduler, x_scaled: torch.Tensor, x0_01: torch.Tensor, scale: float,
                   timestep: int, prev_timestep: int, eta: float, noise: torch.Tensor) -> torch.Tensor:
    """The released GCDR update: eps from the scaled x and the UNSCALED x0 (docs/method.md#intended-vs-as-coded-sampler)."""
    alpha_t = scheduler.alphas_cumprod[timestep]
    alpha_prev = scheduler.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else scheduler.final_alpha_cumprod
    eps_hat = ((1 / alpha_t).sqrt() * x_scaled - x0_01) / (1 / alpha_t - 1).sqrt()
    std = eta * ((1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)).sqrt()
    return alpha_prev.sqrt() * to_scaled(x0_01, scale) + (1 - alpha_prev - std**2).sqrt() * eps_hat + std * noise


@torch.no_grad()
def refine_heatmaps(model: GazeDiffusionTeacher, scheduler: DDIMScheduler, context: list[torch.Tensor],
                    prior_heatmap_64: torch.Tensor, denoise_steps: int, inference_steps: int,
                    noises: Sequence[SamplingNoise], eta: float = 1.0, semantics: str = "intended",
                    return_draws: bool = False) -> tuple[torch.Tensor, ...]:
    """GCDR refinement (docs/method.md#refinement): noise each map to ``denoise_steps``, DDIM back to 0, average.

    context: ``model.encode`` of the persons' (scene, head channel, face); prior_heatmap_64: [B, 64, 64]
    maps (normalised to [0, 1] here); noises: one SamplingNoise per averaged draw (``noise_for_samples``;
    its ``steps`` must hold at least ``inference_steps`` entries). ``denoise_steps`` = 0 returns the
    normalised input; ``denoise_steps`` >= the number of training steps ignores the input (pure noise).
    Returns (refined [B, 64, 64] min-max normalised, mean x0 [B, 64, 64] before normalisation); with
    ``return_draws`` also each draw's x0 [draws, B, 64, 64] (not normalised), whose mean is the second.
    """
    if semantics not in SEMANTICS:
        raise ValueError(f"unknown sampler semantics {semantics!r}; choose from {SEMANTICS}")
    prior = normalize_heatmaps(prior_heatmap_64.float()).unsqueeze(1)  # [B, 1, 64, 64]
    if denoise_steps <= 0:
        prior = prior.squeeze(1)
        return (prior, prior, prior.expand(len(noises), *prior.shape)) if return_draws else (prior, prior)
    num_train = model.config.num_train_timesteps
    from_noise = denoise_steps >= num_train
    timesteps = refine_timesteps(min(denoise_steps, num_train), inference_steps)
    if any(len(noise.steps) < len(timesteps) for noise in noises):
        raise ValueError(f"the noise holds fewer than the {len(timesteps)} steps of {timesteps}")
    scale = model.config.scale
    draws = len(noises)
    device = prior.device
    starts, step_noise = [], []
    for noise in noises:
        start = noise.start.to(device)  # [B, 1, 64, 64]
        if not from_noise and semantics == "intended":
            t_start = torch.full((prior.shape[0],), timesteps[0], dtype=torch.long, device=device)
            start = q_sample(scheduler, prior, t_start, start, scale)  # scaled space
        elif not from_noise:  # as coded: noised with ab[N] and stored in [0, 1] (mapped again at step 1)
            t_start = torch.full((prior.shape[0],), denoise_steps, dtype=torch.long, device=device)
            start = network_input(q_sample(scheduler, prior, t_start, start, scale), scale)
        starts.append(start)
        step_noise.append(noise.steps[: len(timesteps)].to(device))
    x_start = torch.cat(starts)  # [draws * B, 1, 64, 64] draw-major
    all_step_noise = torch.cat(step_noise, dim=1)  # [S, draws * B, 1, 64, 64]
    x0 = ddim_sample(model, scheduler, model.repeat_context(context, draws), x_start, timesteps, all_step_noise,
                     eta=eta, semantics=semantics)  # [draws * B, 1, 64, 64]
    x0_draws = x0.view(draws, -1, *x0.shape[-2:])  # [draws, B, 64, 64]
    mean_x0 = x0_draws.mean(0)  # [B, 64, 64]
    if return_draws:
        return normalize_heatmaps(mean_x0), mean_x0, x0_draws
    return normalize_heatmaps(mean_x0), mean_x0


@torch.no_grad()
def sample_from_noise(model: GazeDiffusionTeacher, scheduler: DDIMScheduler, context: list[torch.Tensor],
                      inference_steps: int = 10, eta: float = 1.0, noise: SamplingNoise | None = None,
                      semantics: str = "intended") -> torch.Tensor:
    """Unconditional-start sampling (validation, mean-teacher targets): x0 [B, 64, 64] in [0, 1] units.

    Timesteps {c-1, ..., T-1} over all T training steps (499, 449, ..., 49 for 10 steps); noise from the
    global RNG unless given.
    """
    batch = context[0].shape[0]
    size = model.config.heatmap_size
    device = context[0].device
    timesteps = refine_timesteps(model.config.num_train_timesteps, inference_steps)
    if noise is None:
        noise = SamplingNoise(torch.randn(batch, 1, size, size, device=device),
                              torch.randn(len(timesteps), batch, 1, size, size, device=device))
    noise = noise.to(device)
    x0 = ddim_sample(model, scheduler, context, noise.start, timesteps, noise.steps, eta=eta, semantics=semantics)
    return x0.squeeze(1)
