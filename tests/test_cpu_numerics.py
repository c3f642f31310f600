"""CPU numerics pinning: portable kernels, a fixed thread count, and bytes that do not depend on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qvad.common.cpu_numerics import PORTABLE, pin_cpu_numerics
from qvad.common.params import ParamsError


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_pins_portable_kernels_and_threads(monkeypatch, restore_threads) -> None:
    for key in PORTABLE:
        monkeypatch.delenv(key, raising=False)
    in_force = pin_cpu_numerics(1)
    assert in_force == {**PORTABLE, "threads": 1} and torch.get_num_threads() == 1


def test_an_explicit_environment_wins(monkeypatch, restore_threads) -> None:
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    assert pin_cpu_numerics(None)["ATEN_CPU_CAPABILITY"] == "default"


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2"])
def test_bad_thread_count_names_the_key(bad, restore_threads) -> None:
    with pytest.raises(ParamsError, match="cpu_threads"):
        pin_cpu_numerics(bad)


CHILD = """
import hashlib, sys, torch
from qvad.common.cpu_numerics import pin_cpu_numerics
pin_cpu_numerics(int(sys.argv[1]))
g = torch.Generator().manual_seed(0)
x = torch.randn(8, 128, 400, generator=g)
w = torch.randn(64, 128, 3, generator=g, requires_grad=True)
y = torch.nn.functional.conv1d(x, w).transpose(1, 2) @ torch.randn(64, 96, generator=g)
y.softmax(-1).log().sum().backward()
print(hashlib.md5(y.detach().numpy().tobytes() + w.grad.numpy().tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_same_thread_param_gives_same_bytes_whatever_omp_says() -> None:
    """The pinned thread count, not the environment's, decides the bytes of a forward and backward."""
    def digest(omp: str, threads: int) -> str:
        env = {"OMP_NUM_THREADS": omp, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads)], env=env, capture_output=True,
                             text=True, check=True, cwd=Path(__file__).parents[1])
        return out.stdout.strip()

    assert digest("1", 2) == digest("2", 2)
