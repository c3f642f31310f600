"""The accel kernels give the stock expressions' numbers: rotary, prefix attention (split and one
pass), SiLU-mul, residual add inside the GEMM. CUDA-only checks are marked ``cuda``; on the CPU each
kernel's fallback is checked against the stock expression."""

from __future__ import annotations

import pytest
import torch
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from qvad.model.accel.decoder_residual_gemm import add_into
from qvad.model.accel.kernels import prefix_one_pass, prefix_split
from qvad.model.accel.kernels.rotary import _rotary_reference, fused_rotary_applies, rotary
from qvad.model.accel.kernels.silu_mul import silu_mul, silu_mul_applies
from qvad.model.accel.shared_prefix import prefix_attention_mask

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA")])]


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


@pytest.mark.cuda
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the one-pass prefix attention kernel runs on CUDA only")
@pytest.mark.parametrize(("tokens", "prefix", "kv_heads", "cos_rows"), [(32, 53, 8, 1), (66, 20, 8, 5), (9, 6, 2, 1)])
def test_one_pass_attention_is_the_rotated_joint_attention(tokens: int, prefix: int, kv_heads: int,
                                                           cos_rows: int) -> None:
    """The kernel rotates q and k as the fused rotary does and attends as one attention over prefix and
    own keys: within bf16 rounding of the float32 joint attention, and no further from it than the
    split path (flash + merge); the answer slot's single query gets the full result's last row."""
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
        fused = prefix_one_pass.launch(q, k, v, pk, pv, scale, (cos, sin), last_query=False)
        last = prefix_one_pass.launch(q, k, v, pk, pv, scale, (cos, sin), last_query=True)
        pre_rotated = prefix_one_pass.launch(rq, rk, v, pk, pv, scale, None, last_query=False)
        split = prefix_split.split_prefix_attention(rq, rk, v, pk, pv, scale)
    assert fused.shape == joint.shape and last.shape == (rows, 1, joint.shape[-1]) and fused.dtype == torch.bfloat16
    err = (fused.float() - joint).abs().max().item()
    assert err < 2e-2 and err <= 2 * (split.float() - joint).abs().max().item() + 1e-3, err
    assert torch.equal(fused, pre_rotated)  # the in-kernel rotation is the fused rotary bit for bit
    assert (last[:, 0].float() - joint[:, -1]).abs().max() < 2e-2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="the one-pass prefix attention kernel runs on CUDA only")
def test_one_pass_attention_takes_more_rows_and_heads_than_a_grid_axis_of_65535() -> None:
    """8,200 rows x 8 heads: the scorer's batches of 2,048 x 32 heads passed the grid's 65,535 limit once."""
    gen = torch.Generator(device="cuda").manual_seed(4)
    q, k, v = (torch.randn(8200, 4, 8, 32, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(3))
    pk, pv = (torch.randn(1, 3, 8, 32, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(2))
    with torch.inference_mode():
        fused = prefix_one_pass.launch(q, k, v, pk, pv, 0.2, None, last_query=False)
    joint = _joint_attention(q[-3:], k[-3:], v[-3:], pk, pv, 0.2)
    assert (fused[-3:].float() - joint).abs().max() < 2e-2


def test_one_pass_attention_off_cuda_is_the_split_path() -> None:
    """Without the kernel (CPU, float32) the rows are rotated and attended by the split path."""
    q, k, v, pk, pv = _split_inputs("cpu", torch.float32, 2)
    cos, sin = (x.float() for x in _rotation(1, q.shape[1], q.shape[-1], pk.shape[1], "cpu"))
    assert not prefix_one_pass.one_pass_applies(q, pk)
    got = prefix_one_pass.one_pass_attention(q, k, v, pk, pv, 0.3, (cos, sin))
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


@pytest.mark.cuda
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


@pytest.mark.cuda
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



@pytest.mark.cuda
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




# --------------------------------------------------------------------------------------------
# residual adds inside the output projections
@pytest.mark.parametrize("device", DEVICES)
def test_residual_added_inside_the_product_is_the_sum(device: str) -> None:
    """``residual.addmm_`` over flattened rows: the sum, written into the residual itself."""
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(2)
    residual, x = (torch.randn(3, 7, n, device=device, generator=gen).to(dtype) for n in (48, 80))
    weight = torch.randn(48, 80, device=device, generator=gen).to(dtype) / 9
    stock = residual + x @ weight.t()
    fused = add_into(residual, x, weight)
    assert fused is residual
    assert (fused.float() - stock.float()).abs().max() <= (2e-2 if device == "cuda" else 1e-5) * stock.abs().max()
