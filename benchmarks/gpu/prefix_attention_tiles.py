"""The one-pass prefix attention kernel (qvad.model.accel.kernels.prefix_one_pass) at the 7B scorer's shapes, per
tile choice, against the two-pass path it replaces (fused rotary + two flash calls + merge).

Shapes: 32 heads of 128, question first (53 prefix tokens, 32 own, 2,048 rows) and audio first
(20 prefix, 66 own, 1,024 rows). Prints milliseconds per call (mean of 20 after a warm-up) and the
largest difference from the two-pass result. Usage (GPU box): ``python3 benchmarks/gpu/prefix_attention_tiles.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.gpu.cuda_timing import ms_per_call  # noqa: E402
from qvad.model.accel.kernels import prefix_one_pass  # noqa: E402
from qvad.model.accel.kernels.prefix_split import split_prefix_attention  # noqa: E402
from qvad.model.accel.kernels.rotary import rotary  # noqa: E402

HEADS, DIM = 32, 128
SCALE = DIM ** -0.5
SHAPES = {"question_first": (2048, 53, 32), "audio_first": (1024, 20, 66)}  # rows, prefix, own tokens
TILES = [(bm, bn, w) for bm in (16, 32, 64) for bn in (32, 64) for w in (2, 4, 8)]


def inputs(rows: int, prefix: int, tokens: int):  # noqa: ANN201
    gen = torch.Generator(device="cuda").manual_seed(0)
    # the projections' layout: q, k and v are [rows, tokens, heads, dim] views of [rows, tokens, 4096]
    q, k, v = (torch.randn(rows, tokens, HEADS * DIM, device="cuda", generator=gen).to(torch.bfloat16)
               .view(rows, tokens, HEADS, DIM) for _ in range(3))
    pk, pv = (torch.randn(1, prefix, HEADS, DIM, device="cuda", generator=gen).to(torch.bfloat16) for _ in range(2))
    pos = torch.arange(tokens, device="cuda", dtype=torch.float32)[None] + prefix
    inv = 1.0 / (10000 ** (torch.arange(0, DIM, 2, device="cuda").float() / DIM))
    emb = torch.cat([pos[..., None] * inv] * 2, -1)
    return q, k, v, pk, pv, (emb.cos().to(torch.bfloat16), emb.sin().to(torch.bfloat16))


def main() -> None:
    with torch.inference_mode():
        for name, (rows, prefix, tokens) in SHAPES.items():
            q, k, v, pk, pv, rot = inputs(rows, prefix, tokens)

            def two_pass():  # noqa: ANN202
                rq, rk = rotary(q, k, *rot)
                return split_prefix_attention(rq, rk, v, pk, pv, SCALE)

            ref = two_pass()
            print(f"{name} rows {rows} prefix {prefix} own {tokens}: two-pass {ms_per_call(two_pass):.3f} ms")
            for bm, bn, w in TILES:
                def one():  # noqa: ANN202
                    return prefix_one_pass.launch(q, k, v, pk, pv, SCALE, rot, False, block_m=bm, block_n=bn,
                                                   num_warps=w)
                try:
                    diff = (one().float() - ref.float()).abs().max().item()
                    print(f"  block_m {bm:3d} block_n {bn:3d} warps {w}: {ms_per_call(one):.3f} ms, max diff {diff:.4f}")
                except Exception as exc:  # noqa: BLE001 - a tile that does not build is a result too
                    print(f"  block_m {bm:3d} block_n {bn:3d} warps {w}: {type(exc).__name__}: {str(exc)[:120]}")
            rq, rk = rotary(q, k, *rot)
            pre = lambda: prefix_one_pass.launch(rq, rk, v, pk, pv, SCALE, None, False)  # noqa: E731
            print(f"  default tile, q and k rotated beforehand (no rotation in the kernel): {ms_per_call(pre):.3f} ms")
            last = lambda: prefix_one_pass.launch(q, k, v, pk, pv, SCALE, rot, True)  # noqa: E731
            print(f"  answer slot (one query): {ms_per_call(last):.3f} ms; two-pass "
                  f"{ms_per_call(lambda: split_prefix_attention(*rotary(q, k, *rot), v, pk, pv, SCALE, True)):.3f} ms")


if __name__ == "__main__":
    main()
