"""The accel speed-ups give the stock path's numbers, through the one switch (qvad.model.accel.enable).

Each speed-up must compute the same function as transformers' stock code on the same inputs (tiny
Qwen2-Audio in float32 on the CPU): the attention forward bit for bit, the shared-prefix scorer and
loss within float32 reordering noise, for both places of the audio in the prompt; the counters
show that each fast path ran. The kernels are tested in tests/test_accel_kernels.py, the
transformers guard in tests/test_accel_guard.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.attention.bias import CausalBias

from qvad import SAMPLE_RATE
from qvad.model import accel
from qvad.model.accel import decoder_residual_gemm, shared_prefix
from qvad.model.accel.decoder_answer_slot import answer_slot_enabled
from qvad.model.accel.decoder_attention import fast_attention_enabled
from qvad.model.accel.decoder_mlp import disable_fused_mlp, use_fused_mlp
from qvad.model.accel.kernels.silu_mul import silu_mul_applies
from qvad.model.accel.patch import patch_forward, restore_forward, runs_forward
from qvad.model.accel.shared_prefix import prefix_attention_mask
from qvad.model.answer_loss import answer_loss
from qvad.model.collate import ABCollator
from qvad.model.lora import apply_lora
from qvad.model.scoring import score_ab, score_ab_logits

from tests.helpers import load_tiny, mixed_clips

LAYOUTS = ("before_question", "after_question")




def _decisive(model: torch.nn.Module, collator: ABCollator) -> None:
    """Spread the random model's A/B choice (as tests/test_model_core.py does) so decisions differ."""
    head = model.get_output_embeddings().weight
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        head[collator.id_nonspeech] = head[collator.id_speech] + 0.2 * torch.randn(head.shape[1], generator=gen)


def _lora(model: torch.nn.Module):
    peft_model, _ = apply_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"}, "tiny")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter change the output
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    return peft_model




# --------------------------------------------------------------------------------------------
# scoring
@pytest.mark.parametrize("position", LAYOUTS)
def test_scorer_equals_generate_for_both_layouts(tiny_dir: Path, position: str) -> None:
    model, processor = load_tiny(tiny_dir)
    cfg = {"audio_position": position}
    collator = ABCollator(processor, cfg)
    _decisive(model, collator)
    clips = mixed_clips()
    allowed = [collator.id_speech, collator.id_nonspeech]
    with torch.inference_mode():
        out = model.generate(**collator.prompt_batch(clips), max_new_tokens=1, do_sample=False,
                             prefix_allowed_tokens_fn=lambda _b, _i: allowed, output_scores=True,
                             return_dict_in_generate=True)
    p_gen = torch.softmax(out.scores[0][:, allowed].double(), -1)[:, 0].numpy()
    for prefix_cache in (True, False):
        p = score_ab(model, processor, clips, cfg, batch_size=2, prefix_cache=prefix_cache)
        assert np.abs(p - p_gen).max() < 1e-5, (prefix_cache, p, p_gen)
        chosen = np.where(p >= 0.5, collator.id_speech, collator.id_nonspeech)
        assert (chosen == out.sequences[:, -1].numpy()).all()
    assert 0 < (p_gen >= 0.5).sum() < len(clips), "decisions never differ: the comparison is vacuous"


@pytest.mark.parametrize("position", LAYOUTS)
def test_unpadded_batches_take_the_causal_bias_and_agree(tiny_dir: Path, position: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Equal-length rows need no mask tensor (lower-right CausalBias, used on CUDA; forced here on the
    CPU): same logits, loss and gradients as the plain path."""
    monkeypatch.setattr(shared_prefix, "CAUSAL_BIAS_DEVICES", ("cuda", "cpu"))
    model, processor = load_tiny(tiny_dir)
    cfg = {"audio_position": position}
    _decisive(model, ABCollator(processor, cfg))
    rng = np.random.default_rng(9)
    clips = [(0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32) for _ in range(3)]
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    clips += [(0.5 * np.sin(2 * np.pi * f * t * (1 + t))).astype(np.float32) for f in (220.0, 410.0, 330.0)]
    rest_mask = torch.ones((2, 7), dtype=torch.long)
    bias = prefix_attention_mask(rest_mask, 5, "sdpa", torch.float32, causal_bias=True)
    explicit = prefix_attention_mask(rest_mask, 5, "eager", torch.float32)[0, 0] == 0  # the tensor form
    assert isinstance(bias, CausalBias) and torch.equal(bias._materialize(), explicit)
    accel.reset_counters()
    fast = score_ab_logits(model, processor, clips, cfg, 3)
    layers = model.config.text_config.num_hidden_layers
    assert accel.counters()["one_pass_calls"] == 2 * layers  # two batches, every layer
    assert accel.counters()["prefix_reads"] == 2 * layers  # the prefix's own forward records, it does not read
    plain = score_ab_logits(model, processor, clips, cfg, 3, prefix_cache=False)
    assert np.abs(fast - plain).max() < 1e-5
    model.train()
    peft_model = _lora(model)
    batch = _batch(processor, cfg, clips)
    assert bool(batch["attention_mask"].all())  # equal lengths: no padding, the CausalBias path
    stock, stock_grads = _loss_and_grads(peft_model, batch)
    loss, grads = _loss_and_grads(peft_model, batch, shared_prefix=True)
    assert abs(loss.item() - stock.item()) < 1e-5
    for name, grad in grads.items():
        assert (grad - stock_grads[name]).abs().max() <= 1e-5 * max(1.0, stock_grads[name].abs().max().item()), name


@pytest.mark.parametrize("position", LAYOUTS)
@pytest.mark.parametrize("padded", [True, False])
def test_answer_slot_runs_the_last_layer_at_one_position_and_agrees(tiny_dir: Path, position: str, padded: bool,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The last layer's MLP sees one position per row (not all), and the logits are the full layer's."""
    monkeypatch.setattr(shared_prefix, "CAUSAL_BIAS_DEVICES", ("cuda", "cpu"))  # unpadded: the CausalBias path
    model, processor = load_tiny(tiny_dir)
    cfg = {"audio_position": position}
    _decisive(model, ABCollator(processor, cfg))
    clips = mixed_clips() if padded else [c[: SAMPLE_RATE // 2] for c in mixed_clips() if len(c) >= SAMPLE_RATE // 2]
    widths: list[int] = []
    last_mlp = model.base_model.language_model.layers[-1].mlp
    handle = last_mlp.register_forward_pre_hook(lambda _m, args: widths.append(args[0].shape[1]))
    try:
        slot = score_ab_logits(model, processor, clips, cfg, 3)
        slot_widths, widths[:] = list(widths), []
        full = score_ab_logits(model, processor, clips, cfg, 3, answer_slot=False)
    finally:
        handle.remove()
    # the prefix's own forward runs the whole layer; the batches run it at the answer slot only
    assert slot_widths[1:] == [1] * (len(slot_widths) - 1) and len(slot_widths) >= 3, slot_widths
    assert min(widths[1:]) > 1, widths
    assert np.abs(slot - full).max() < 1e-5, (slot, full)
    assert answer_slot_enabled(model.base_model.language_model)



def test_fused_mlp_falls_back_to_the_stock_mlp_off_cuda(tiny_dir: Path) -> None:
    model, _ = load_tiny(tiny_dir)
    mlp = model.base_model.language_model.layers[0].mlp
    x = torch.randn(2, 5, mlp.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        stock = mlp(x)
        assert use_fused_mlp(model) == len(model.base_model.language_model.layers)
        assert not silu_mul_applies(mlp.gate_proj(x), mlp.up_proj(x))  # float32 on the CPU
        assert torch.equal(mlp(x), stock)
    assert disable_fused_mlp(model) == len(model.base_model.language_model.layers)



def test_fast_attention_gives_the_stock_numbers(tiny_dir: Path) -> None:
    model, processor = load_tiny(tiny_dir)
    assert fast_attention_enabled(model)  # the loader installs it
    clips = mixed_clips()
    fast = score_ab_logits(model, processor, clips, None, 5, prefix_cache=False)
    assert accel.disable(model, "attention") == {"attention": model.config.text_config.num_hidden_layers}
    stock = score_ab_logits(model, processor, clips, None, 5, prefix_cache=False)
    assert accel.enable(model, "cpu", attention=True).attention
    assert np.array_equal(fast, stock)


# --------------------------------------------------------------------------------------------
# training loss
def _batch(processor, cfg, clips):
    return ABCollator(processor, cfg)([{"audio": a, "label": i % 2} for i, a in enumerate(clips)])


def _loss_and_grads(model, batch, **kw):
    model.zero_grad(set_to_none=True)
    loss = answer_loss(model, batch, **kw) if kw else model(**batch).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("position", LAYOUTS)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_answer_loss_and_its_gradients_equal_the_stock_loss(tiny_dir: Path, position: str,
                                                            checkpointing: bool) -> None:
    model, processor = load_tiny(tiny_dir, training=True)
    peft_model = _lora(model)
    if checkpointing:
        peft_model.get_base_model().activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    batch = _batch(processor, {"audio_position": position}, mixed_clips())
    stock, stock_grads = _loss_and_grads(peft_model, batch)
    for shared in (False, True):
        loss, grads = _loss_and_grads(peft_model, batch, shared_prefix=shared)
        assert abs(loss.item() - stock.item()) < 1e-5, (shared, loss, stock)
        assert grads.keys() == stock_grads.keys() and any("lora_A" in n for n in grads)
        for name, grad in grads.items():
            ref = stock_grads[name]
            assert (grad - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item()), (shared, name)


def test_restore_forward_gives_back_only_its_own_forward() -> None:
    """patch_forward binds per instance; restore_forward removes that forward and leaves another
    installer's (an accelerate hook, say) in place."""
    ours, theirs, untouched = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    def doubled(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return 2 * torch.nn.Linear.forward(self, x)

    x = torch.ones(1, 2)
    assert patch_forward([ours], doubled, _qvad_option=3) == 1 and ours._qvad_option == 3
    theirs.forward = lambda inputs: inputs
    assert torch.equal(ours(x), 2 * torch.nn.Linear.forward(ours, x)) and torch.equal(untouched(x), untouched.forward(x))
    assert runs_forward(ours, doubled) and not runs_forward(theirs, doubled)
    assert restore_forward([ours, theirs, untouched], doubled) == 1
    assert "forward" not in ours.__dict__ and "forward" in theirs.__dict__


def _encoder_attention(device: str, dtype: torch.dtype):  # noqa: ANN202
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioAttention

    config = Qwen2AudioEncoderConfig(d_model=1280, encoder_attention_heads=20)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    attn = Qwen2AudioAttention(1280, 20, config=config).to(device, dtype).eval()
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(3, 60, 1280, device=device, generator=gen).to(dtype)
    mask = torch.zeros(3, 1, 60, 60, device=device, dtype=dtype)
    mask[1, ..., 50:] = torch.finfo(dtype).min  # a shorter clip's padded frames
    return attn, x, mask


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])])
def test_strided_encoder_attention_is_the_stock_attention(device: str) -> None:
    """Views instead of contiguous copies into SDPA: the stock numbers (bit for bit on CUDA in bf16)."""
    from qvad.model.accel.encoder_attention import disable_strided_encoder_attention, use_strided_encoder_attention

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    attn, x, mask = _encoder_attention(device, dtype)
    with torch.inference_mode():
        stock = attn(x, mask)[0]
        assert use_strided_encoder_attention(attn) == 1
        strided = attn(x, mask)[0]
        assert disable_strided_encoder_attention(attn) == 1
    if device == "cuda":
        assert torch.equal(strided, stock)
    else:
        assert (strided - stock).abs().max() < 1e-5


@pytest.mark.parametrize("position", LAYOUTS)
def test_residual_gemm_layers_give_the_stock_scores(tiny_dir: Path, position: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring runs every layer but the last through qvad.model.accel.decoder_residual_gemm; off CUDA it
    keeps the stock arithmetic, so the scores are bit for bit those of the stock layers."""
    residual_gemm = decoder_residual_gemm

    monkeypatch.setattr(shared_prefix, "CAUSAL_BIAS_DEVICES", ("cuda", "cpu"))
    model, processor = load_tiny(tiny_dir)
    cfg = {"audio_position": position}
    _decisive(model, ABCollator(processor, cfg))
    text_model = model.base_model.language_model
    calls: list[int] = []
    monkeypatch.setattr(residual_gemm, "add_linear",
                        lambda r, x, lin, _f=residual_gemm.add_linear: calls.append(1) or _f(r, x, lin))
    fused = score_ab_logits(model, processor, mixed_clips(), cfg, 3)
    assert residual_gemm.residual_gemm_enabled(text_model)
    assert len(calls) == 2 * (len(text_model.layers) - 1) * 2  # two adds per inner layer, two batches
    separate = score_ab_logits(model, processor, mixed_clips(), cfg, 3, residual_gemm=False)
    assert len(calls) == 2 * (len(text_model.layers) - 1) * 2
    assert np.array_equal(fused, separate)
    assert residual_gemm.disable_residual_gemm(text_model) == len(text_model.layers) - 1


# --------------------------------------------------------------------------------------------
# the one switch
def _swapped(model: torch.nn.Module) -> list[str]:
    """Submodules of ``model`` running an instance forward, the audio encoder (truncation) aside."""
    return [name for name, m in model.named_modules() if "forward" in m.__dict__ and not name.endswith("audio_tower")]


def test_enable_installs_what_it_is_asked_for_and_disable_gives_the_stock_forwards_back(tiny_dir: Path) -> None:
    model, _ = load_tiny(tiny_dir)
    text_model = model.base_model.language_model
    layers, audio_layers = len(text_model.layers), len(model.model.audio_tower.layers)
    assert fast_attention_enabled(model) and len(_swapped(model)) == layers  # the loader on the CPU: attention only
    assert accel.enable(model, "cpu", mlp=True, rms_norm=True, encoder_attention=True) == accel.Enabled()
    everything = dict(answer_slot=True, residual_gemm=True, mlp=True, rms_norm=True, encoder_attention=True)
    assert accel.enable(model, "cuda", **everything) == accel.Enabled(attention=True, **everything)
    assert accel.disable(model) == {"answer_slot": 1, "residual_gemm": layers - 1, "attention": layers, "mlp": layers,
                                    "rms_norm": 2 * layers + 1, "encoder_attention": audio_layers}
    assert _swapped(model) == []
    with pytest.raises(ValueError, match="unknown speed-ups"):
        accel.disable(model, "rotary")


def test_enable_keeps_the_attention_options_of_a_model_that_runs_it(tiny_dir: Path) -> None:
    """A benchmark's A/B option (here the split path instead of the one-pass kernel) survives scoring."""
    from qvad.model.accel.decoder_attention import enable_fast_attention

    model, processor = load_tiny(tiny_dir)
    enable_fast_attention(model, one_pass=False)
    score_ab_logits(model, processor, mixed_clips()[:2], None, 2)
    layer = model.base_model.language_model.layers[0].self_attn
    assert layer._qvad_one_pass is False


def test_counters_name_what_they_count_and_reset() -> None:
    from qvad.model.accel.counting import NAMES, count

    accel.reset_counters()
    count("encoder_cache_hits", 2)
    assert accel.counters() == {**{name: 0 for name in NAMES}, "encoder_cache_hits": 2}
    with pytest.raises(KeyError, match="unknown accel counter"):
        count("prefix_hits")
    accel.reset_counters()
    assert set(accel.counters().values()) == {0}
