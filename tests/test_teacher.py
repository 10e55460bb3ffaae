"""The diffusion teacher: model layout, noise maths against diffusers, training, mean teacher, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor
from torch import nn

from gcdr.students.vat import VATSpatial, heatmap_mse_loss
from gcdr.teacher.config import TeacherConfig
from gcdr.teacher.diffusion import (
    ddim_step,
    make_ddim_scheduler,
    make_train_scheduler,
    network_input,
    noise_for_samples,
    q_sample,
    refine_heatmaps,
    refine_timesteps,
    training_inputs,
)
from gcdr.teacher.mean_teacher import (
    TwoStreamBatchSampler,
    consistency_loss,
    consistency_weight,
    ema_decay_at,
    make_ema_teacher,
    update_ema,
)
from gcdr.teacher.model import GazeDiffusionTeacher, TeacherModelConfig, _build_unet, _resblock_levels

TINY = TeacherModelConfig(encoder_width=8, unet_channels=8, channel_mult=(1, 2, 2, 2), attention_head_dim=8,
                          norm_groups=4, attention_levels=(3,))




def tiny_teacher(seed: int = 0) -> GazeDiffusionTeacher:
    """A tiny teacher whose zero-initialised layers got random values (so every input matters)."""
    torch.manual_seed(seed)
    model = GazeDiffusionTeacher(TINY)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.05)
    return model


def person_inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(scene [B,3,224,224], head channel [B,1,224,224] with a box per person, face [B,3,224,224])."""
    generator = torch.Generator().manual_seed(seed)
    scene = torch.randn(batch, 3, 224, 224, generator=generator)
    face = torch.randn(batch, 3, 224, 224, generator=generator)
    head = torch.zeros(batch, 1, 224, 224)
    for i in range(batch):
        x, y = 20 + 37 * i % 160, 30 + 53 * i % 150
        head[i, 0, y:y + 40, x:x + 40] = 1.0
    return scene, head, face


# ------------------------------------------------------------------------------------------- model
def test_official_size_matches_gcdr_and_vat_weights_load_into_the_encoder():
    vat_state = VATSpatial("resnet50").state_dict()  # official key names, random values
    teacher = GazeDiffusionTeacher(TeacherModelConfig.official())
    counts = teacher.parameter_counts()
    assert counts == {"encoder": 56_299_265, "context": 853_632, "unet": 22_078_017, "total": 79_230_914}
    top_level = {key.split(".")[0] for key in teacher.state_dict()}
    assert top_level == {"feat_extractor", "compress_conv1", "compress_bn1", "upsample_2", "upsample2_bn",
                         "upsample_1", "upsample1_bn", "upsample_0", "upsample0_bn", "unet"}
    assert teacher.state_dict()["upsample_2.weight"].shape == (256, 192, 2, 2)
    assert teacher.state_dict()["compress_conv1.weight"].shape == (256, 2048, 1, 1)

    with pytest.raises(ValueError, match="encoder_width"):
        TeacherModelConfig(encoder="resnet50", encoder_width=8)  # the official encoder has fixed widths

    report = teacher.load_encoder_weights({"model": {f"module.{k}": v for k, v in vat_state.items()}})
    assert report.missing == []
    assert len(report.loaded) == 722  # every encoder entry of GCDR's feat_extractor (docs/official-code.md#gcdr-diffusion-teacher)
    assert all(not key.startswith(("conv1_", "layer", "bn1_", "attn")) for key in report.unexpected)
    assert torch.equal(teacher.feat_extractor.layer5_face[1].conv3.weight, vat_state["layer5_face.1.conv3.weight"])
    assert torch.equal(teacher.feat_extractor.attn.bias, vat_state["attn.bias"])


def reference_attention(attn: Attention, x: torch.Tensor, heads: int) -> torch.Tensor:
    """GCDR's AttentionBlock written out: GroupNorm, q/k/v, softmax(q k^T / sqrt(d)) per head, proj_out,
    residual. x: [B, C, H, W]; each of ``heads`` heads sees d = C / heads channels."""
    batch, channels, height, width = x.shape
    h = attn.group_norm(x).flatten(2).transpose(1, 2)  # [B, L, C]
    q, k, v = (proj(h).view(batch, -1, heads, channels // heads).transpose(1, 2)  # [B, heads, L, d]
               for proj in (attn.to_q, attn.to_k, attn.to_v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(channels // heads), dim=-1)  # [B, heads, L, L]
    mixed = (weights @ v).transpose(1, 2).reshape(batch, -1, channels)  # [B, L, C]
    return attn.to_out[0](mixed).transpose(1, 2).reshape(x.shape) + x


def test_official_attention_has_gcdr_four_heads_at_every_level_and_the_demo_is_unchanged():
    # GCDR: num_heads 4, no fixed head width -> 4 heads of 48 channels at 192, of 64 at 256 (and the middle)
    torch.manual_seed(0)
    official = TeacherModelConfig.official()
    assert official.attention_heads == 4 and official.attention_channels == (192, 256)
    unet = _build_unet(official)
    layers = {name: m for name, m in unet.named_modules() if isinstance(m, Attention)}
    widths = sorted((m.inner_dim, m.heads) for m in layers.values())
    assert widths == [(192, 4)] * 5 + [(256, 4)] * 6  # 2 down + 3 up at 192; 2 down + 3 up + middle at 256
    assert sum(p.numel() for p in unet.parameters()) == 22_078_017  # the split adds nothing (total: 79,230,914)

    attn = layers["down_blocks.2.attentions.0"].eval()  # a 192-channel layer at 16 x 16
    with torch.no_grad():
        for parameter in attn.parameters():
            parameter.normal_(0.0, 0.2)  # to_out is zero-initialised: make every part count
        x = torch.randn(2, 192, 6, 6)
        four = reference_attention(attn, x, heads=4)
        assert not torch.allclose(four, reference_attention(attn, x, heads=3), atol=1e-3)  # diffusers' 64-wide rule
        torch.testing.assert_close(attn(x), four, rtol=1e-5, atol=1e-5)  # SDPA processor (default)
        attn.set_processor(AttnProcessor())  # the explicit-scale processor reads the adjusted scale
        torch.testing.assert_close(attn(x), four, rtol=1e-5, atol=1e-5)

    # configs that do not ask for a head count keep diffusers' rule (heads = channels // attention_head_dim)
    demo = TeacherConfig().model_config()
    assert demo.attention_heads is None
    assert {(m.inner_dim, m.heads) for m in _build_unet(demo).modules() if isinstance(m, Attention)} == {(32, 4)}
    assert {m.heads for m in _build_unet(TINY).modules() if isinstance(m, Attention)} == {2}  # 16 // 8
    with pytest.raises(ValueError, match="attention_heads 5"):
        TeacherModelConfig(unet_channels=8, channel_mult=(1, 2, 4, 4), attention_heads=5)


def test_context_of_each_level_reaches_the_unet_and_bare_unet_calls_fail():
    model = tiny_teacher().eval()
    assert len(_resblock_levels(model.unet)) == 4 * 2 + 2 + 4 * 3  # down, middle, up ResBlocks all hooked
    scene, head, face = person_inputs(2)
    noisy = torch.rand(2, 1, 64, 64)
    timesteps = torch.tensor([10, 300])
    with torch.no_grad():
        context = model.encode(scene, head, face)
        assert [tuple(c.shape[1:]) for c in context] == [(8, 64, 64), (16, 32, 32), (16, 16, 16), (16, 8, 8)]
        reference = model.denoise(noisy, timesteps, context)
        assert torch.equal(reference, model(noisy, timesteps, scene, head, face))
        for level in range(4):  # a spatially varying change (GroupNorm would cancel a constant one)
            changed = [c + (torch.rand_like(c) if i == level else 0.0) for i, c in enumerate(context)]
            assert not torch.allclose(model.denoise(noisy, timesteps, changed), reference, atol=1e-6), level
        copied = make_ema_teacher(model)  # a deep copy: its hooks must read its own context
        assert torch.equal(copied.denoise(noisy, timesteps, context), reference)
        other_head = torch.roll(head, shifts=60, dims=3)
        assert not torch.allclose(model(noisy, timesteps, scene, other_head, face), reference, atol=1e-6)
        with pytest.raises(RuntimeError, match="context"):
            model.unet(noisy, timesteps)


def test_save_and_load_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_teacher()
    scene, head, face = person_inputs(3)
    with torch.no_grad():
        model.train()
        model.encode(scene, head, face)  # move the BatchNorm statistics away from their defaults
    model.eval()
    model.save_pretrained(tmp_path / "teacher")
    loaded = GazeDiffusionTeacher.from_pretrained(tmp_path / "teacher").eval()
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    prior = torch.rand(3, 64, 64)
    outputs = []
    for net in (model, loaded):
        with torch.no_grad():
            context = net.encode(scene, head, face)
        noises = noise_for_samples(["a", "b", "c"], seed=1, draws=2, steps=2)
        outputs.append(refine_heatmaps(net, make_ddim_scheduler(net.config), context, prior, 250, 2, noises)[0])
    assert torch.equal(outputs[0], outputs[1])
    with pytest.raises(FileNotFoundError, match="teacher model directory"):
        GazeDiffusionTeacher.from_pretrained(tmp_path / "nothing")


def test_a_smaller_encoder_input_round_trips_and_old_configs_read_as_224(tmp_path):
    import dataclasses
    import json

    model = GazeDiffusionTeacher(dataclasses.replace(TINY, input_size=128)).eval()
    scene, head, face = person_inputs(2)
    assert [c.shape[-1] for c in model.encode(scene, head, face)] == [64, 32, 16, 8]
    assert model.feat_extractor.grid == 4  # a 4x4 feature grid instead of VAT's 7x7
    model.save_pretrained(tmp_path / "small")
    loaded = GazeDiffusionTeacher.from_pretrained(tmp_path / "small").eval()
    assert loaded.config.input_size == 128
    with torch.no_grad():
        assert torch.equal(model.encode(scene, head, face)[0], loaded.encode(scene, head, face)[0])
    tiny_teacher().save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    saved = json.loads(config_file.read_text())
    del saved["input_size"]  # a teacher saved before the setting existed
    config_file.write_text(json.dumps(saved))
    assert GazeDiffusionTeacher.from_pretrained(tmp_path / "old").config.input_size == 224


# ------------------------------------------------------------------------------------- noise maths
def test_schedule_is_gcdr_linear_betas_with_x0_prediction():
    train, ddim = make_train_scheduler(TINY), make_ddim_scheduler(TINY)
    assert train.config.prediction_type == ddim.config.prediction_type == "sample"
    assert not train.config.clip_sample and not ddim.config.clip_sample
    assert train.betas[0].item() == pytest.approx(2e-4) and train.betas[-1].item() == pytest.approx(4e-2)
    alphas = train.alphas_cumprod  # docs/method.md#noise-schedule values
    for index, value in {49: 0.898, 99: 0.660, 124: 0.524, 199: 0.195, 249: 0.0781, 250: 0.0765}.items():
        assert alphas[index].item() == pytest.approx(value, abs=6e-4), index
    assert torch.allclose(ddim.alphas_cumprod, alphas)
    assert ddim.final_alpha_cumprod.item() == pytest.approx(alphas[0].item())  # set_alpha_to_one=False


def test_refine_timesteps_follow_gcdr():
    assert refine_timesteps(250, 2) == [249, 124]
    assert refine_timesteps(200, 2) == [199, 99]
    assert refine_timesteps(500, 2) == [499, 249]
    assert refine_timesteps(500, 10) == list(range(499, 0, -50))
    assert refine_timesteps(250, 3) == [248, 165, 82]
    assert refine_timesteps(1, 2) == [0] and refine_timesteps(0, 2) == []


def test_ddim_step_equals_diffusers_step_where_its_stride_is_right():
    ddim = make_ddim_scheduler(TINY)
    ddim.set_timesteps(10)
    timesteps = ddim.timesteps.tolist()
    assert timesteps == refine_timesteps(500, 10)  # GCDR's full-length timesteps = "trailing" spacing
    generator = torch.Generator().manual_seed(0)
    for eta in (0.0, 1.0):
        for i, t in enumerate(timesteps):
            x, x0, noise = (torch.randn(2, 1, 8, 8, generator=generator) for _ in range(3))
            stock = ddim.step(x0, t, x, eta=eta, variance_noise=noise).prev_sample
            prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            assert torch.allclose(ddim_step(ddim, x, x0, t, prev, eta, noise), stock, atol=1e-5), (eta, t)


def test_q_sample_and_training_inputs():
    scheduler = make_train_scheduler(TINY)
    target = torch.rand(4, 64, 64)
    noise = torch.randn(4, 1, 64, 64)
    timesteps = torch.tensor([0, 124, 249, 499])
    x_t = q_sample(scheduler, target.unsqueeze(1), timesteps, noise, 2.0)
    alpha = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
    expected = alpha.sqrt() * (2 * target.unsqueeze(1) - 1) * 2 + (1 - alpha).sqrt() * noise
    assert torch.allclose(x_t, expected, atol=1e-5)

    pure = torch.tensor([False, True, False, True])
    x_in, t_used = training_inputs(scheduler, target, 2.0, pure_noise=pure, timesteps=timesteps, noise=noise)
    assert t_used.tolist() == [0, 499, 249, 499]
    assert torch.equal(x_in[pure], network_input(noise[pure], 2.0))
    assert torch.allclose(x_in[~pure], network_input(expected[~pure], 2.0))
    assert x_in.min() >= 0 and x_in.max() <= 1


def test_a_short_training_run_lowers_the_loss():
    torch.manual_seed(0)
    model = GazeDiffusionTeacher(TINY)
    scheduler = make_train_scheduler(TINY)
    scene, head, face = person_inputs(6)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    centres = [(10 + 9 * i, 50 - 7 * i) for i in range(6)]
    target = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 18) for cx, cy in centres])
    has_target = torch.ones(6, dtype=torch.bool)
    fixed_t = torch.tensor([20, 60, 120, 200, 300, 450])
    fixed_noise = torch.randn(6, 1, 64, 64, generator=torch.Generator().manual_seed(1))

    def held_out_loss() -> float:
        with torch.no_grad():
            x_in, t = training_inputs(scheduler, target, 2.0, timesteps=fixed_t, noise=fixed_noise)
            return heatmap_mse_loss(model(x_in, t, scene, head, face).squeeze(1), target, has_target).item()

    before = held_out_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        x_in, t = training_inputs(scheduler, target, 2.0)
        loss = heatmap_mse_loss(model(x_in, t, scene, head, face).squeeze(1), target, has_target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    assert after < 0.6 * before, (before, after)


# ------------------------------------------------------------------------------------ mean teacher
def test_ema_decay_ramp_and_update_by_hand():
    assert [ema_decay_at(s) for s in (0, 14, 15, 29, 30, 45)] == [0.0, 0.0, 0.5, 0.5, pytest.approx(2 / 3), 0.75]
    assert ema_decay_at(1484) < 0.99 and ema_decay_at(1485) == 0.99 and ema_decay_at(10**6) == 0.99

    student = nn.Linear(2, 1)
    student.register_buffer("counter", torch.tensor([5.0]))
    with torch.no_grad():
        student.weight.fill_(3.0)
        student.bias.fill_(-1.0)
    teacher = make_ema_teacher(student)
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        teacher.weight.fill_(1.0)
        teacher.counter.fill_(0.0)
    assert update_ema(teacher, student, step=3) == 0.0  # a = 0: copy the student
    assert torch.allclose(teacher.weight, torch.full((1, 2), 3.0))
    with torch.no_grad():
        student.weight.fill_(5.0)
    assert update_ema(teacher, student, step=20) == 0.5
    assert torch.allclose(teacher.weight, torch.full((1, 2), 0.5 * 3 + 0.5 * 5))
    with torch.no_grad():
        student.weight.fill_(7.0)
    update_ema(teacher, student, step=5000)
    assert torch.allclose(teacher.weight, torch.full((1, 2), 0.99 * 4 + 0.01 * 7))
    assert teacher.counter.item() == 0.0  # buffers are not averaged


def test_consistency_weight_and_kl():
    assert consistency_weight(0) == pytest.approx(4000 * math.exp(-5))
    assert consistency_weight(2) == pytest.approx(4000 * math.exp(-5 * 0.6**2))
    assert consistency_weight(5) == consistency_weight(9) == 4000
    student, teacher = torch.randn(3, 64, 64), torch.randn(3, 64, 64)
    mask = torch.tensor([True, False, True])
    expected = torch.stack([torch.nn.functional.kl_div(torch.log_softmax(student[i].flatten(), 0),
                                                       torch.log_softmax(teacher[i].flatten(), 0),
                                                       log_target=True, reduction="sum") for i in (0, 2)]).mean()
    assert consistency_loss(student, teacher, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    assert consistency_loss(teacher, teacher, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert consistency_loss(student, teacher, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_two_stream_batches():
    sampler = TwoStreamBatchSampler(range(10, 40), range(10), batch_size=8, labeled_batch_size=2, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    unlabeled = [i for b in batches for i in b[:6]]
    assert sorted(unlabeled) == list(range(10, 40))  # one pass over the unlabeled persons
    assert all(i < 10 for b in batches for i in b[6:])
    assert batches == list(sampler)  # same epoch, same order
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_noise_is_per_person_whatever_the_batch():
    both = noise_for_samples(["a", "b"], seed=7, draws=2, steps=3)
    alone = noise_for_samples(["b"], seed=7, draws=2, steps=3)
    for draw in range(2):
        assert torch.equal(both[draw].start[1], alone[draw].start[0])
        assert torch.equal(both[draw].steps[:, 1], alone[draw].steps[:, 0])
    assert not torch.equal(both[0].start[0], both[0].start[1])
    assert not torch.equal(noise_for_samples(["a"], 8, 1, 1)[0].start, both[0].start[:1])
    assert np.isfinite(both[0].steps.numpy()).all()
