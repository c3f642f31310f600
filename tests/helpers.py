"""Helpers the test modules share: synthetic audio and labels, tiny models, throw-away pipeline copies.

Fixtures live in conftest.py; everything here is a plain function or constant, imported as
``from tests.helpers import ...`` (pytest.ini puts the repository root on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


# ----------------------------------------------------------------------------- synthetic audio and labels

def voiced_like(seconds: float, sr: int = 16_000, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A vowel-like harmonic signal with syllable-rate amplitude modulation (WebRTC calls it voiced)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 25))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.3 * x * envelope / np.max(np.abs(x))).astype(np.float32)


def correlated_clips(n_groups_per_class: int = 30, clips_per_group: int = 25,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions and groups where each group has its own accuracy (clips correlated)."""
    rng = np.random.default_rng(seed)
    n_groups = 2 * n_groups_per_class
    group_acc = np.clip(0.8 + rng.normal(0.0, 0.15, n_groups), 0.05, 0.99)
    groups = np.repeat(np.arange(n_groups), clips_per_group)
    labels = (groups < n_groups_per_class).astype(int)
    correct = rng.random(groups.size) < group_acc[groups]
    preds = np.where(correct, labels, 1 - labels)
    return labels, preds, groups


# ----------------------------------------------------------------------------- tiny models

TINY_SEED = 1234
"""Seed of the session's tiny checkpoint (conftest's ``tiny_dir``; test_model_core rebuilds it byte for byte)."""


def build_tiny_causal_lm(out: Path) -> Path:
    """A random 1-layer Qwen2 causal LM with a byte-level BPE and a chat template, saved like a hub model."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from qvad.model.prompt import DEFAULT_USER_TEXT

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([DEFAULT_USER_TEXT, "Is there human speech? <prompt> </prompt> score"] * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lora_on_base(root: Path, preset: str, *, for_training: bool, **lora: object):  # noqa: ANN201
    """``(model, processor, params, model_cfg)``: root/models/base built for ``preset`` (float32, CPU),
    loaded after ``torch.manual_seed(0)``, with LoRA r 4 (plus ``lora`` overrides) as apply_lora sets it."""
    import torch

    from qvad.model.loading import load_model_and_processor
    from qvad.model.lora import apply_lora
    from qvad.model.store import prepare_base

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    model_cfg = {**params["model"], "preset": preset, "path": None, "quantization": "none", "dtype": "float32"}
    loaded_cfg = prepare_base(model_cfg, 0, root / "models" / "base")
    torch.manual_seed(0)
    model, processor = load_model_and_processor(loaded_cfg, "cpu", for_training=for_training)
    # the tiny preset trains its tower in full, so it takes no encoder LoRA (apply_lora refuses it)
    lora_cfg = {**params["lora"], "r": 4, **lora, **({"audio_layers": 0} if preset == "tiny" else {})}
    model, _ = apply_lora(model, lora_cfg, preset)
    return model, processor, params, model_cfg


def save_models(root: Path, model, processor, params: dict, model_cfg: dict, temperature: float) -> Path:  # noqa: ANN001
    """Write root/models/adapter and root/models/detector.json as train and evaluate do; root/models."""
    from qvad.detector_config import detector_config

    models = root / "models"
    model.save_pretrained(models / "adapter")
    processor.save_pretrained(models / "adapter")
    cfg = detector_config({**params, "model": model_cfg}, temperature=temperature)
    (models / "detector.json").write_text(json.dumps(cfg, indent=2))
    return models


def build_model_dir(root: Path, preset: str = "tiny") -> Path:
    """models/{base,adapter,detector.json} laid out as train/evaluate write them, with an untrained adapter."""
    model, processor, params, model_cfg = lora_on_base(root, preset, for_training=False)
    return save_models(root, model, processor, params, model_cfg, temperature=1.7)


# ----------------------------------------------------------------------------- pipeline copies

TINY = {
    "data": {"packages": ["klettres-data", "sound-theme-freedesktop", "frozen-bubble-data", "lincity-ng-data"],
             "max_files_per_package": 45, "max_seconds_per_file": 8},
    "mix": {"durations_ms": [200, 1000], "snrs_db": [0, 20], "clips_per_cell": 10, "max_group_share": 0.5},
    "audit": {"min_per_cell": 1, "max_class_imbalance": 0.25},
}


def merge(base: dict, over: dict) -> dict:
    """Recursive dict update (params overrides)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # dvc.yaml says `python`: make it the interpreter running the tests (the venv's).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(cwd), "PATH": path}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def make_copy(tmp: Path, overrides: dict) -> Path:
    """Copy the tracked files into ``tmp/repo`` and set up a git-less DVC project there."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    repo = tmp / "repo"
    for rel in filter(None, files.decode().split("\0")):
        src, dst = ROOT / rel, repo / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/")) and rel != "dvc.lock":
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for d in ("data", "models", "metrics", "plots"):
        (repo / d).mkdir(exist_ok=True)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "config", "--local", "core.no_scm", "true"], repo)
    run([*DVC, "config", "--local", "core.site_cache_dir", str(tmp / "site_cache")], repo)
    run([*DVC, "config", "--local", "cache.dir", str(tmp / "cache")], repo)
    return repo


def out_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


def load_tiny(tiny_dir: Path, training: bool = False):  # noqa: ANN201 - (model, processor)
    """The tiny checkpoint on the CPU with encoder truncation on, seeded, as the scorer tests load it."""
    import torch

    from qvad.model.loading import load_model_and_processor

    torch.manual_seed(0)
    return load_model_and_processor({"preset": "tiny", "path": str(tiny_dir), "truncate_encoder": True}, "cpu",
                                    for_training=training)


def mixed_clips() -> list[np.ndarray]:
    """Noise and tones of mixed lengths (so rows pad differently and decisions differ)."""
    rng = np.random.default_rng(5)
    out = []
    for i, seconds in enumerate((0.3, 1.0, 2.0, 1.3, 0.5, 0.8)):
        t = np.arange(int(seconds * 16_000)) / 16_000
        tone = 0.5 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t * (1 + t))
        out.append((tone if i % 2 else 0.1 * rng.standard_normal(len(t))).astype(np.float32))
    return out
