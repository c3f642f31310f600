"""Own-part attention of the split scorer (1,024 rows x 32 heads x 32 causal queries, head dim 128, bf16):
flash vs memory-efficient vs cuDNN vs plain matmuls, each returning the log-sum-exp the merge needs.

Usage (GPU box): ``python3 benchmarks/gpu/own_attention_variants.py``."""

import torch, time
B, H, T, D = 1024, 32, 32, 128
g = torch.Generator(device="cuda").manual_seed(0)
q, k, v = (torch.randn(B, T, H, D, device="cuda", generator=g, dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
def t(fn, n=20):
    fn(); torch.cuda.synchronize(); s = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - s) / n * 1e3
A = torch.ops.aten
print("flash ms", t(lambda: A._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=D ** -0.5)))
print("efficient ms", t(lambda: A._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True, scale=D ** -0.5)))
try:
    print("cudnn ms", t(lambda: A._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, True, False, scale=D ** -0.5)))
except Exception as e: print("cudnn", e)
o1 = A._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=D ** -0.5)
o2 = A._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True, scale=D ** -0.5)
print("eff vs flash out", (o1[0].float() - o2[0].float()).abs().max().item(), "lse", (o1[1][..., :T] - o2[1][..., :T]).abs().max().item(), o2[1].shape)
def math():
    s = torch.matmul(q, k.transpose(-1, -2)).float() * D ** -0.5
    s = s.masked_fill(torch.ones(T, T, device="cuda", dtype=torch.bool).triu(1), float("-inf"))
    l = torch.logsumexp(s, -1); return torch.matmul(torch.exp(s - l[..., None]).to(v.dtype), v), l
print("math ms", t(math))
