"""Core model contract on the tiny Qwen2-Audio: loss, audio tokens, scoring, encoder truncation, LoRA scope.

Each test pins one property that, if broken, silently ruins results (chance-level scores, a
loss on the wrong token, a shifted answer slot, LoRA in the wrong tower) rather than crashing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model

from qvad import SAMPLE_RATE
from qvad.model import encoder_truncation as encoder_trunc
from qvad.model.collate import IGNORE_INDEX, ABCollator
from qvad.model.encoder_truncation import disable_encoder_truncation, enable_encoder_truncation
from qvad.model.loading import load_model_and_processor
from qvad.model.lora import apply_lora, peft_wrapping
from qvad.model.presets.tiny import build_tiny_checkpoint
from qvad.model.scoring import score_ab, score_ab_logits
from tests.helpers import TINY_SEED

MIXED_SECONDS = (0.1, 0.5, 1.3, 2.0)


def _load(tiny_dir: Path, truncate: bool = False, training: bool = False):
    torch.manual_seed(0)
    cfg = {"preset": "tiny", "path": str(tiny_dir), "truncate_encoder": truncate}
    return load_model_and_processor(cfg, "cpu", for_training=training)


def _clip(seconds: float, seed: int, kind: str = "noise") -> np.ndarray:
    """Deterministic test audio: white noise or a chirp-like tone, float32 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SAMPLE_RATE))
    if kind == "noise":
        return (0.1 * rng.standard_normal(n)).astype(np.float32)
    t = np.arange(n) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * (200 + 300 * rng.random()) * t * (1 + t))).astype(np.float32)


def _in_container(clip: np.ndarray, container_s: float, seed: int) -> np.ndarray:
    """Centre ``clip`` in low-level noise, as the data pipeline does for very short clips."""
    rng = np.random.default_rng(seed)
    out = (1e-3 * rng.standard_normal(int(container_s * SAMPLE_RATE))).astype(np.float32)
    start = (len(out) - len(clip)) // 2
    out[start : start + len(clip)] += clip
    return out


def _mixed_clips() -> list[np.ndarray]:
    """Eight clips: each mixed length as noise and as a tone."""
    specs = [(seconds, kind) for kind in ("noise", "tone") for seconds in MIXED_SECONDS]
    return [_clip(seconds, i, kind) for i, (seconds, kind) in enumerate(specs)]


def _make_decisive(model: torch.nn.Module, collator: ABCollator) -> None:
    """Spread the random model's A/B choice so predictions differ between clips.

    At initialisation every clip scores ~0.48; a decision that never flips would make
    'same predictions' vacuous. The B row becomes the A row plus a random direction, sized so
    P lands around 0.1-0.7: saturated P near 0 or 1 would hide errors in |dP|.
    """
    head = model.get_output_embeddings().weight
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        head[collator.id_nonspeech] = head[collator.id_speech] + 0.2 * torch.randn(head.shape[1], generator=gen)


def _constrained_generate(model: torch.nn.Module, collator: ABCollator, clips: list[np.ndarray]):
    """Greedy one-token generate restricted to 'A'/'B'; return (chosen ids, P('A') from the scores)."""
    allowed = [collator.id_speech, collator.id_nonspeech]
    batch = collator.prompt_batch(clips)
    with torch.inference_mode():
        out = model.generate(
            **batch,
            max_new_tokens=1,
            do_sample=False,
            prefix_allowed_tokens_fn=lambda _b, _ids: allowed,
            output_scores=True,
            return_dict_in_generate=True,
        )
    chosen = out.sequences[:, -1].numpy()
    p_speech = torch.softmax(out.scores[0][:, allowed].double(), -1)[:, 0].numpy()
    return chosen, p_speech


def _lora_module_names(model: torch.nn.Module) -> list[str]:
    return [name for name, mod in model.named_modules() if hasattr(mod, "lora_A") and len(mod.lora_A) > 0]


# (1) ---------------------------------------------------------------------------------------------
def test_loss_is_cross_entropy_on_the_answer_token_only(tiny_dir: Path) -> None:
    model, processor = _load(tiny_dir)
    collator = ABCollator(processor)
    clips = [_clip(s, i) for i, s in enumerate(MIXED_SECONDS)]
    labels = [1, 0, 0, 1]
    batch = collator([{"audio": a, "label": y} for a, y in zip(clips, labels)])

    supervised = batch["labels"] != IGNORE_INDEX
    assert supervised.sum(-1).tolist() == [1, 1, 1, 1]
    pos = supervised.float().argmax(-1)
    rows = torch.arange(len(clips))
    expected_ids = [collator.id_speech if y == 1 else collator.id_nonspeech for y in labels]
    assert batch["labels"][rows, pos].tolist() == expected_ids
    assert batch["input_ids"][rows, pos].tolist() == expected_ids
    # The answer directly follows each clip's full prompt, exactly as scoring presents it.
    prompts = collator.prompt_batch(clips)
    for i in range(len(clips)):
        prompt_only = prompts["input_ids"][i][prompts["attention_mask"][i] == 1]
        assert torch.equal(batch["input_ids"][i, : pos[i]], prompt_only)
        assert batch["attention_mask"][i, : pos[i] + 1].all() and not batch["attention_mask"][i, pos[i] + 1 :].any()

    with torch.no_grad():
        out = model(**batch)
    logits = out.logits[rows, pos - 1].double()  # the position that predicts the answer
    hand = torch.nn.functional.cross_entropy(logits, batch["labels"][rows, pos])
    assert abs(out.loss.item() - hand.item()) < 1e-5
    assert out.loss.item() > 0.1  # a real loss, not a degenerate zero


# (2) ---------------------------------------------------------------------------------------------
def test_every_clip_carries_its_audio_tokens(tiny_dir: Path) -> None:
    _, processor = _load(tiny_dir)
    collator = ABCollator(processor)
    clips = [_clip(s, i) for i, s in enumerate((0.03, 0.2, 0.5, 1.0, 1.3, 2.0))]
    tok = processor.tokenizer
    bos, eos = tok.convert_tokens_to_ids("<|audio_bos|>"), tok.convert_tokens_to_ids("<|audio_eos|>")
    for batch in (collator([{"audio": a, "label": 1} for a in clips]), collator.prompt_batch(clips)):
        frames = batch["feature_attention_mask"].sum(-1).tolist()
        assert frames == [math.ceil(len(a) / 160) for a in clips]  # 10 ms hop
        for i, f in enumerate(frames):
            expected = ((f - 1) // 2 + 1 - 2) // 2 + 1
            ids = batch["input_ids"][i].tolist()
            assert ids.count(processor.audio_token_id) == expected > 0
            start = ids.index(bos)
            assert ids[start + 1 : start + 1 + expected] == [processor.audio_token_id] * expected
            assert ids[start + 1 + expected] == eos
    # Anchors from the real model's behaviour: 0.2 s -> 5 tokens, 1 s -> 25 tokens.
    batch = collator.prompt_batch(clips)
    counts = (batch["input_ids"] == processor.audio_token_id).sum(-1).tolist()
    assert counts[1] == 5 and counts[3] == 25
    # An explicit feature device reaches the feature extractor (GPU boxes pass "cuda"), not
    # silently dropped like `audios=`: "meta" holds no data, so the STFT must fail on it.
    on_cpu = ABCollator(processor, feature_device="cpu").prompt_batch(clips)
    assert torch.equal(on_cpu["input_features"], batch["input_features"])
    with pytest.raises(NotImplementedError):
        ABCollator(processor, feature_device="meta").prompt_batch(clips[:1])


def test_too_short_clip_is_refused_with_its_length(tiny_dir: Path) -> None:
    _, processor = _load(tiny_dir)
    collator = ABCollator(processor)
    with pytest.raises(ValueError, match=r"clip 1 is too short: 320 samples \(20\.0 ms\)"):
        collator.prompt_batch([_clip(1.0, 0), _clip(0.02, 1)])


# (3) ---------------------------------------------------------------------------------------------
def test_score_ab_matches_constrained_generate(tiny_dir: Path) -> None:
    model, processor = _load(tiny_dir)
    collator = ABCollator(processor)
    _make_decisive(model, collator)
    clips = _mixed_clips()

    p = score_ab(model, processor, clips, None, batch_size=len(clips))
    chosen, p_gen = _constrained_generate(model, collator, clips)
    assert np.abs(p - p_gen).max() < 1e-5
    predicted = np.where(p >= 0.5, collator.id_speech, collator.id_nonspeech)
    assert (predicted == chosen).all()
    assert 0 < (p >= 0.5).sum() < len(clips), f"predictions never flip, test is vacuous: {p}"

    # Batch composition must not matter: left padding with correct position ids.
    p_single = np.array([score_ab(model, processor, [a], None, batch_size=1)[0] for a in clips[1::2]])
    assert np.abs(p[1::2] - p_single).max() < 1e-5
    p_pairs = score_ab(model, processor, clips, None, batch_size=3)
    assert np.abs(p - p_pairs).max() < 1e-5


def test_score_ab_on_peft_model_matches_generate(tiny_dir: Path) -> None:
    model, processor = _load(tiny_dir, truncate=True, training=True)
    collator = ABCollator(processor)
    _make_decisive(model, collator)
    peft_model, _ = apply_lora(model, {"r": 4, "alpha": 8, "dropout": 0.0, "targets": "attention"}, "tiny")
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter actually change the output
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))
    clips = _mixed_clips()
    p = score_ab(peft_model, processor, clips, None, batch_size=4)
    with peft_model.disable_adapter():
        p_off = score_ab(peft_model, processor, clips, None, batch_size=4)
    assert np.abs(p - p_off).max() > 1e-3  # the adapter is in the scored path
    chosen, p_gen = _constrained_generate(peft_model, collator, clips)
    assert np.abs(p - p_gen).max() < 1e-5
    assert (np.where(p >= 0.5, collator.id_speech, collator.id_nonspeech) == chosen).all()
    assert peft_model.training  # scoring restores the caller's mode


def test_answer_logits_of_a_bf16_model_are_float32_products(tiny_dir: Path) -> None:
    """The two answer logits are the float32 product of the last hidden state and the two lm_head
    rows: rounded to bfloat16 (as they were) P(speech) moved in steps of ~0.03 on the 7B."""
    model, processor = load_model_and_processor(
        {"preset": "tiny", "path": str(tiny_dir), "truncate_encoder": True, "quantization": "bf16",
         "dtype": "bfloat16"}, "cpu", for_training=False)
    collator = ABCollator(processor)
    with torch.no_grad():  # logits of the 7B's size, where a bfloat16 step is 0.125
        model.get_output_embeddings().weight.mul_(24.0)
    seen: list[torch.Tensor] = []
    model.model.language_model.norm.register_forward_hook(lambda _m, _a, out: seen.append(out[:, -1]))
    clips = _mixed_clips()
    logits = score_ab_logits(model, processor, clips, None, batch_size=len(clips))
    hidden = seen[-1].float()  # the batch (an earlier call computes the shared prefix)
    rows = model.get_output_embeddings().weight.detach()[[collator.id_speech, collator.id_nonspeech]].float()
    order = np.argsort([-len(a) for a in clips], kind="stable")  # the scorer's longest-first order
    expected = np.empty_like(logits)
    expected[order] = (hidden @ rows.T).numpy()
    assert np.abs(expected).max() > 8  # the size where bfloat16 rounding is coarse
    np.testing.assert_allclose(logits, expected, rtol=1e-6, atol=1e-5)
    as_bf16 = torch.from_numpy(logits).bfloat16().float().numpy()
    assert (as_bf16 != logits).any()  # not rounded to bfloat16 on the way


# (4) ---------------------------------------------------------------------------------------------
def _encoder_frames(model: torch.nn.Module) -> list[int]:
    """Record the mel length each encoder call receives."""
    seen: list[int] = []
    model.model.audio_tower.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
    return seen


def test_encoder_truncation_is_exact(tiny_dir: Path) -> None:
    model, processor = _load(tiny_dir, truncate=False)
    collator = ABCollator(processor)
    _make_decisive(model, collator)
    clips = [_clip(s, i, kind) for i, (s, kind) in enumerate(zip(MIXED_SECONDS, ("noise", "tone") * 2))]
    clips.append(_in_container(_clip(0.1, 9, "tone"), 2.0, seed=10))
    train_batch = collator([{"audio": a, "label": i % 2} for i, a in enumerate(clips)])
    frames = _encoder_frames(model)

    logits_full = score_ab_logits(model, processor, clips, None, batch_size=len(clips))
    with torch.no_grad():
        loss_full = model(**train_batch).loss.item()
    assert frames == [3000, 3000]

    for multiple in (20, 2):  # the default rounding, and the tightest cut the conv margin allows
        enable_encoder_truncation(model, multiple)
        frames.clear()
        logits_cut = score_ab_logits(model, processor, clips, None, batch_size=len(clips))
        with torch.no_grad():
            loss_cut = model(**train_batch).loss.item()
        assert frames == [220 if multiple == 20 else 204] * 2  # 200 valid frames + 3, rounded up
        p_full, p_cut = (1 / (1 + np.exp(lg[:, 1] - lg[:, 0])) for lg in (logits_full, logits_cut))
        assert np.abs(p_full - p_cut).max() < 1e-5
        assert np.abs(logits_full - logits_cut).max() < 1e-4
        assert abs(loss_full - loss_cut) < 1e-5

    disable_encoder_truncation(model)
    frames.clear()
    score_ab_logits(model, processor, clips[:1], None, batch_size=1)
    assert frames == [3000]


def test_truncation_margin_is_needed(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cutting right at the last valid frame changes the features: the exactness test is sensitive."""
    model, processor = _load(tiny_dir, truncate=False)
    clips = [_clip(2.0, 0)]
    logits_full = score_ab_logits(model, processor, clips, None, batch_size=1)
    monkeypatch.setattr(encoder_trunc, "CONV_MARGIN_FRAMES", 0)
    enable_encoder_truncation(model, 2)
    logits_cut = score_ab_logits(model, processor, clips, None, batch_size=1)
    assert np.abs(logits_full - logits_cut).max() > 1e-6


@pytest.mark.parametrize("value", [0, 3, -2, 2.0, True, "2"])
def test_bad_truncate_multiple_names_the_key(value: object) -> None:
    with pytest.raises(ValueError, match="model.truncate_multiple"):
        encoder_trunc.configured_multiple({"truncate_multiple": value})


def test_truncation_follows_the_model_params(tiny_dir: Path) -> None:
    """``truncate_encoder: false`` keeps the 30 s encoder; by default the frames are cut, rounded to
    DEFAULT_MULTIPLE (or ``truncate_multiple``)."""
    assert encoder_trunc.configured_multiple({}) == encoder_trunc.DEFAULT_MULTIPLE
    assert encoder_trunc.configured_multiple({"truncate_multiple": 20}) == 20
    for cfg, truncated in (({"truncate_encoder": False}, False), ({}, True)):
        model, _ = _load(tiny_dir, truncate=False)
        encoder_trunc.truncate_as_configured(model, cfg)
        assert any(getattr(m, encoder_trunc._HOOK_ATTR, None) is not None for m in model.modules()) == truncated


def test_truncation_reaches_peft_trainable_encoder_copy(tiny_dir: Path) -> None:
    model, processor = _load(tiny_dir, truncate=True, training=True)
    peft_model, _ = apply_lora(model, {"r": 4, "alpha": 8, "targets": "attention"}, "tiny")
    trained_copy = peft_model.base_model.model.model.audio_tower.modules_to_save["default"]
    seen: list[int] = []
    trained_copy.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[-1]))
    collator = ABCollator(processor)
    out = peft_model(**collator([{"audio": _clip(1.0, 0), "label": 1}]))
    out.loss.backward()
    assert seen == [104]  # 1 s: 100 valid frames + the 3-frame conv margin, up to the next even count
    assert trained_copy.conv1.weight.grad is not None and trained_copy.conv1.weight.grad.abs().sum() > 0


# (5) ---------------------------------------------------------------------------------------------
def test_lora_scope_excludes_audio_tower_unless_asked(tiny_dir: Path) -> None:
    n_layers = 2  # tiny text and audio depth
    real = "qwen2-audio-7b-instruct"  # scope rules of the real model, applied to the tiny weights

    peft_model, counts = apply_lora(_load(tiny_dir)[0], {"r": 4, "alpha": 8, "targets": "attention"}, real)
    names = _lora_module_names(peft_model)
    assert len(names) == 4 * n_layers
    assert all(".language_model.layers." in n for n in names)
    assert {n.split(".")[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert not any("audio_tower" in n or "multi_modal_projector" in n for n in names)
    assert counts["lora"] == counts["trainable"] > 0 and counts["full"] == 0

    peft_model, _ = apply_lora(_load(tiny_dir)[0], {"r": 4, "alpha": 8, "targets": "attention+mlp"}, real)
    names = _lora_module_names(peft_model)
    assert len(names) == 7 * n_layers and not any("audio_tower" in n for n in names)

    cfg = {"r": 4, "alpha": 8, "targets": "attention", "audio_layers": n_layers}
    peft_model, _ = apply_lora(_load(tiny_dir)[0], cfg, real)
    audio = [n for n in _lora_module_names(peft_model) if ".audio_tower." in n]
    assert sorted({n.split(".")[-1] for n in audio}) == ["k_proj", "out_proj", "q_proj", "v_proj"]
    assert len(audio) == 4 * n_layers

    peft_model, _ = apply_lora(_load(tiny_dir)[0], {**cfg, "audio_layers": 1}, real)  # the last layer only
    audio = [n for n in _lora_module_names(peft_model) if ".audio_tower." in n]
    assert len(audio) == 4 and all(f".layers.{n_layers - 1}." in n for n in audio)
    for bad in (-1, n_layers + 1, True, "all"):
        with pytest.raises(ValueError, match="lora.audio_layers"):
            apply_lora(_load(tiny_dir)[0], {**cfg, "audio_layers": bad}, real)

    # The trap the regex avoids: a bare name list also adapts the audio tower's q/k/v.
    with peft_wrapping():  # peft's own read of a deprecated transformers property, hidden as qvad hides it
        naive = get_peft_model(_load(tiny_dir)[0],
                               LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    assert any(".audio_tower." in n for n in _lora_module_names(naive))


def test_tiny_preset_trains_audio_path_in_full(tiny_dir: Path) -> None:
    model, _ = _load(tiny_dir, training=True)
    peft_model, counts = apply_lora(model, {"r": 4, "alpha": 8, "targets": "attention"}, "tiny")
    assert not any("audio_tower" in n for n in _lora_module_names(peft_model))
    inner = peft_model.base_model.model.model
    for part in ("audio_tower", "multi_modal_projector"):
        copy = getattr(inner, part).modules_to_save["default"]
        assert all(p.requires_grad for p in copy.parameters())
        assert not any(p.requires_grad for p in getattr(inner, part).original_module.parameters())
    full = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" not in n)
    assert counts["full"] == full > 0 and counts["lora"] > 0
    assert counts["trainable"] == counts["lora"] + counts["full"]
    with pytest.raises(ValueError, match="audio_layers"):
        apply_lora(_load(tiny_dir)[0], {"r": 4, "alpha": 8, "audio_layers": 1}, "tiny")


# (6) ---------------------------------------------------------------------------------------------
def test_tiny_build_is_deterministic(tmp_path: Path, tiny_dir: Path) -> None:
    again = build_tiny_checkpoint(tmp_path / "again", seed=TINY_SEED)
    other = build_tiny_checkpoint(tmp_path / "other", seed=TINY_SEED + 1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()
    n_params = sum(p.numel() for p in _load(tiny_dir)[0].parameters())
    assert 2e5 < n_params < 2e6


def test_bf16_model_takes_float32_mels_in_training_and_scoring(tiny_dir: Path) -> None:
    model, processor = load_model_and_processor(
        {"preset": "tiny", "path": str(tiny_dir), "quantization": "bf16"}, "cpu", for_training=True
    )
    assert model.dtype == torch.bfloat16
    clips = [_clip(0.5, 0), _clip(1.0, 1)]
    loss = model(**ABCollator(processor)([{"audio": a, "label": 1} for a in clips])).loss
    loss.backward()
    p_bf16 = score_ab(model, processor, clips, None, batch_size=2)
    p_fp32 = score_ab(_load(tiny_dir)[0], processor, clips, None, batch_size=2)
    assert np.abs(p_bf16 - p_fp32).max() < 1e-2


def test_nf4_quantizes_only_the_language_model(tiny_dir: Path) -> None:
    """Scoring reads lm_head rows and the audio path is precision-sensitive: both stay bf16."""
    pytest.importorskip("bitsandbytes")
    cfg = {"preset": "tiny", "path": str(tiny_dir), "quantization": "nf4"}
    model, processor = load_model_and_processor(cfg, "cpu", for_training=False)
    kinds = {name: type(mod).__name__ for name, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)}
    lm = {k for n, k in kinds.items() if n.startswith("model.language_model.")}
    rest = {k for n, k in kinds.items() if not n.startswith("model.language_model.")}
    assert lm == {"Linear4bit"} and rest == {"Linear"}
    assert model.get_output_embeddings().weight.dtype == torch.bfloat16
    p = score_ab(model, processor, [_clip(0.5, 0), _clip(1.0, 1)], None, batch_size=2)
    assert np.isfinite(p).all()
