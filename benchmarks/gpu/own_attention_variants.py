"""Own-part attention of the split scorer (1,024 rows x 32 heads x 32 causal queries, head dim 128, bf16):
flash vs memory-efficient vs cuDNN vs plain matmuls, each returning the log-sum-exp the merge needs.

Usage (GPU box): ``python3 benchmarks/gpu/own_attention_variants.py``; it prints milliseconds per
call (mean of 20 after one warm-up) and how far the memory-efficient kernel is from flash.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.gpu.cuda_timing import ms_per_call  # noqa: E402

ROWS, HEADS, TOKENS, DIM = 1024, 32, 32, 128
SCALE = DIM ** -0.5
ATEN = torch.ops.aten


def main() -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(ROWS, TOKENS, HEADS, DIM, device="cuda", generator=gen, dtype=torch.bfloat16)
               .transpose(1, 2) for _ in range(3))  # the projections' layout, as the scorer passes them

    def flash():  # noqa: ANN202
        return ATEN._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=SCALE)

    def efficient():  # noqa: ANN202
        return ATEN._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True, scale=SCALE)

    def cudnn():  # noqa: ANN202
        return ATEN._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True, False, scale=SCALE)

    def math():  # noqa: ANN202
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * SCALE
        scores = scores.masked_fill(torch.ones(TOKENS, TOKENS, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
        lse = torch.logsumexp(scores, -1)
        return torch.matmul(torch.exp(scores - lse[..., None]).to(v.dtype), v), lse

    print("flash ms", ms_per_call(flash))
    print("efficient ms", ms_per_call(efficient))
    try:
        print("cudnn ms", ms_per_call(cudnn))
    except RuntimeError as exc:
        print("cudnn", exc)
    ref, other = flash(), efficient()
    print("eff vs flash out", (ref[0].float() - other[0].float()).abs().max().item(),
          "lse", (ref[1][..., :TOKENS] - other[1][..., :TOKENS]).abs().max().item(), other[1].shape)
    print("math ms", ms_per_call(math))


if __name__ == "__main__":
    main()
