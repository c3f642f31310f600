"""The transformers guard: every stock function the patches mirror is the pinned release's, each
mirror is marked where it is written, and another release leaves the speed-ups off with one warning
and the stock numbers.

On a transformers upgrade :func:`test_mirrored_stock_source_is_the_pinned_release` fails once per
changed stock function, naming the qvad modules to re-check against its new source.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from qvad import SAMPLE_RATE
from qvad.model import accel
from qvad.model.accel import guard
from qvad.model.accel.decoder_attention import fast_attention_enabled
from qvad.model.loading import load_model_and_processor
from qvad.model.scoring import score_ab_logits

ROOT = Path(__file__).resolve().parents[1]
ATTENTION = "transformers.models.qwen2.modeling_qwen2.Qwen2Attention.forward"


@pytest.mark.parametrize("name", sorted(guard.FINGERPRINTS))
def test_mirrored_stock_source_is_the_pinned_release(name: str) -> None:
    users = sorted(module for module, names in guard.STOCK.items() if name in names)
    assert guard.fingerprint(name) == guard.FINGERPRINTS[name], (
        f"transformers {transformers.__version__}: the source of {name} is not the one qvad's patches were "
        f"written against (transformers {guard.PINNED_TRANSFORMERS}). Read its new source and re-check "
        f"{', '.join(users)} (the lines marked '# Mirrors {name}' or '# Relies on {name}'); then update "
        "FINGERPRINTS and PINNED_TRANSFORMERS in qvad/model/accel/guard.py.")


def test_the_pinned_release_is_the_installed_and_required_one() -> None:
    assert transformers.__version__ == guard.PINNED_TRANSFORMERS
    assert f"transformers=={guard.PINNED_TRANSFORMERS}" in (ROOT / "requirements.txt").read_text().split()


def _module_file(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def test_every_mirror_is_marked_where_it_is_written_and_listed_in_the_guard() -> None:
    marker = re.compile(r"^\s*# (?:Mirrors|Relies on) (transformers\.[\w.]+)", re.M)
    for module, names in guard.STOCK.items():
        marked = set(marker.findall(_module_file(module).read_text()))
        assert marked == set(names), (module, sorted(marked ^ set(names)))
    for path in (ROOT / "qvad").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if marker.search(path.read_text()):
            assert module in guard.STOCK, f"{module} marks a mirror but qvad/model/accel/guard.py's STOCK omits it"
    assert set(guard.FINGERPRINTS) == {name for names in guard.STOCK.values() for name in names}
    assert {module for modules in accel.GUARDED.values() for module in modules} <= set(guard.STOCK)


def test_another_release_with_the_same_mirrored_code_keeps_the_speedups() -> None:
    assert guard.stale(guard.STOCK, version="9.0.0") == {}


def _load(tiny_dir: Path):  # noqa: ANN202
    torch.manual_seed(0)
    return load_model_and_processor({"preset": "tiny", "path": str(tiny_dir)}, "cpu", for_training=False)


def test_a_changed_stock_forward_leaves_its_speedup_off_with_one_warning_and_the_stock_numbers(
        tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    clips = [(0.1 * rng.standard_normal(int(s * SAMPLE_RATE))).astype(np.float32) for s in (0.4, 1.0, 0.7)]
    model, processor = _load(tiny_dir)
    reference = score_ab_logits(model, processor, clips, None, 2, prefix_cache=False)
    monkeypatch.setattr(transformers, "__version__", "9.0.0")
    monkeypatch.setitem(guard.FINGERPRINTS, ATTENTION, "0" * 16)  # as if 9.0.0 had changed Qwen2Attention.forward
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, processor = _load(tiny_dir)
    shown = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(shown) == 1 and "qvad.model.accel.decoder_attention" in shown[0] and ATTENTION in shown[0], shown
    assert not fast_attention_enabled(model)
    accel.reset_counters()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        fallback = score_ab_logits(model, processor, clips, None, 2)  # asks for the shared prefix: stock path instead
    assert accel.counters()["prefix_reads"] == 0 and not fast_attention_enabled(model)
    assert np.array_equal(fallback, reference)
