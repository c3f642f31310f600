"""Triton kernels and torch-level kernels the accel forwards call; none of them swaps a forward.

- ``bf16``: Triton (on CUDA builds of torch) and bfloat16 rounding that makes fused kernels exact.
- ``rotary``: Qwen2's rotary embedding for q and k in one kernel, forward and backward.
- ``prefix_split``: a shared prefix and each row's own keys attended by two flash calls, merged by
  their log-sum-exp.
- ``prefix_one_pass``: the same attention in one Triton kernel, rotary included (short rows).
- ``silu_mul``: the MLP's ``silu(gate) * up`` in one kernel.

Each falls back to the stock torch expression where it does not apply (the CPU, other dtypes)
or does not build, and records why in a module constant (``*_ERROR``).
"""
