"""``qvad export``: merged weights equal to base + adapter, loadable without peft, a card that matches the metrics.

A small model is built and trained for a few steps on the tiny and the whisper-tiny presets (an
untrained adapter has LoRA B = 0, so merging it would prove nothing). Tolerances: the merged
model computes ``x (W + s B A)^T`` where the unmerged one computes ``x W^T + s (x A^T) B^T``, in
float32 both; only the rounding differs (relative ~1e-7 a layer). Measured on these clips: max
|logit difference| 1.4e-6 (tiny) and 1.2e-6 (whisper-tiny), max |P difference| 1.6e-7 and
2.3e-7 (the default run's model, 100 test clips: 2.9e-6 and 3.5e-7). TOL_LOGIT = 1e-4 and
TOL_P = 1e-5 leave ~40x headroom for other CPUs' kernels, while a merge that lost the LoRA scale
or a fully trained module moves P far more (checked: the base alone differs by > 100x TOL_P).
"""

from __future__ import annotations

import csv
import filecmp
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from qvad import SAMPLE_RATE
from qvad.cli import main
from qvad.detector import Detector
from qvad.detector_config import detector_config
from qvad.export.checks import ExportError
from qvad.export.folder import export_models
from qvad.export.model_card import SNIPPET_PLACEHOLDER, CardInputs, load_card_inputs, model_card, num, with_ci

from tests.helpers import lora_on_base, save_models

ROOT = Path(__file__).resolve().parents[1]
TOL_P = 1e-5
TOL_LOGIT = 1e-4
METRICS = ("train", "eval", "psychometric", "categories")


def _clips() -> list[np.ndarray]:
    """Noise, a tone and a buzzy 'voiced' signal, shorter than, equal to and longer than the 2 s container."""
    rng = np.random.default_rng(7)
    t = np.arange(int(3.0 * SAMPLE_RATE)) / SAMPLE_RATE
    voiced = (np.sign(np.sin(2 * np.pi * 140 * t)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) * 0.3).astype(np.float32)
    return [(0.2 * rng.standard_normal(int(0.3 * SAMPLE_RATE))).astype(np.float32),
            (0.5 * np.sin(2 * np.pi * 440 * t[: SAMPLE_RATE])).astype(np.float32),
            voiced[: 2 * SAMPLE_RATE], voiced]


def write_project(root: Path, manifest_rows: int = 4) -> Path:
    """params.yaml and the committed metrics, and a small manifest as the download stage writes it."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    (root / "metrics").mkdir(exist_ok=True)
    for name in METRICS:
        shutil.copy(ROOT / "metrics" / f"{name}.json", root / "metrics" / f"{name}.json")
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    with open(root / "data/raw/manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "path", "label", "group", "package", "version", "licence", "category"])
        for i in range(manifest_rows):
            speech = i % 2 == 0
            w.writerow([f"c{i}", f"data/raw/audio/c{i}.wav", "speech" if speech else "nonspeech", f"g{i // 2}",
                        "klettres-data" if speech else "warzone2100-music", "4:22.12.3-1" if speech else "4.3.3-3",
                        "GPL-2+", "speech:klettres:en" if speech else "music"])
    return root


def trained_models(root: Path, preset: str, steps: int = 3) -> Path:
    """models/{base,adapter,detector.json} after a few optimiser steps (LoRA B and the full modules move)."""
    import torch

    from qvad.model.collate import ABCollator

    model, processor, params, model_cfg = lora_on_base(root, preset, for_training=True, dropout=0.0)
    collator = ABCollator(processor, params["prompt"])
    clips = _clips()
    examples = [{"audio": c[: 2 * SAMPLE_RATE], "label": int(i >= 2)} for i, c in enumerate(clips)]
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.02)
    model.train()
    for _ in range(steps):
        model(**collator(examples)).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    return save_models(root, model, processor, params, model_cfg, temperature=1.3)


@pytest.fixture(scope="module", params=["tiny", "whisper-tiny"])
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = write_project(tmp_path_factory.mktemp(f"export-{request.param}"))
    trained_models(root, request.param)
    return root


@pytest.fixture(scope="module")
def merged(project: Path) -> Path:
    export_models(project / "models", project / "exported", project_dir=project)
    return project / "exported"


def _card_code(card: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


# ---------------------------------------------------------------------------------------------
# equivalence

def test_merged_export_scores_as_base_plus_adapter(project: Path, merged: Path) -> None:
    from qvad.model.store import load_trained

    unmerged = Detector.from_dir(project / "models", device="cpu", batch_size=4)
    export = Detector.from_dir(merged, device="cpu", batch_size=4)
    assert export.config.extra["export"]["merged"] is True
    assert "Peft" not in type(export.model).__name__ and "Peft" in type(unmerged.model).__name__
    inputs = [unmerged.prepare(c[: 2 * SAMPLE_RATE], key=i) for i, c in enumerate(_clips())]
    la, lb = unmerged.logits(inputs), export.logits(inputs)
    assert np.abs(la - lb).max() < TOL_LOGIT
    p_unmerged = np.array([unmerged.predict(c) for c in _clips()])
    p_export = np.array([export.predict(c) for c in _clips()])
    assert np.abs(p_unmerged - p_export).max() < TOL_P
    # the adapter matters: the base alone scores differently, so the comparison above is not vacuous
    base_model, _ = load_trained(unmerged.config.model, adapter=None, base=project / "models/base", dev="cpu")
    p_base = Detector(base_model, unmerged.processor, unmerged.config, batch_size=4).score_prepared(inputs)
    assert np.abs(p_base - unmerged.score_prepared(inputs)).max() > 100 * TOL_P


def test_merged_folder_is_plain_safetensors_with_the_contract(merged: Path) -> None:
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "detector.json", "README.md", "tokenizer.json",
            "chat_template.jinja"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl")) or n.startswith("adapter")]
    assert (merged / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable by a server's user
    det = json.loads((merged / "detector.json").read_text())
    assert det["export"] == {"merged": True, "dtype": "float32",
                             "trained_with": {"quantization": "none", "dtype": "float32"}}
    assert det["model"]["quantization"] == "none" and det["model"]["path"] is None
    assert not list(merged.parent.glob(".exported.*"))  # no temp folder left behind


def test_card_code_gives_the_detectors_logits(merged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The card's plain-transformers example (run as printed) reads the same A/B logits as the Detector."""
    export = Detector.from_dir(merged, device="cpu", batch_size=4)
    clip = _clips()[3][: 2 * SAMPLE_RATE]  # the container's length: no noise is drawn
    sf.write(tmp_path / "clip.wav", clip, SAMPLE_RATE, subtype="FLOAT")
    monkeypatch.chdir(tmp_path)
    code = _card_code((merged / "README.md").read_text())
    assert code.count(SNIPPET_PLACEHOLDER) == 1
    scope: dict = {}
    exec(compile(code.replace(SNIPPET_PLACEHOLDER, str(merged)), "card", "exec"), scope)
    expected = export.logits([export.prepare(clip)])[0]
    assert abs(scope["logit_a"] - expected[0]) < TOL_LOGIT and abs(scope["logit_b"] - expected[1]) < TOL_LOGIT
    assert abs(scope["p_speech"] - export.calibrate(expected[None])[0]) < TOL_P


BLOCK_PEFT = ("import sys\n"
              "sys.modules['peft'] = None  # peft unimportable, as where it is not installed\n")


def test_merged_export_loads_without_peft(merged: Path) -> None:
    script = BLOCK_PEFT + (
        "import json, numpy as np\n"
        "try:\n    import peft\n    raise SystemExit('peft still importable')\nexcept ImportError:\n    pass\n"
        "import torch; torch.set_num_threads(1)\n"
        "from qvad.detector import Detector\n"
        f"det = Detector.from_dir({str(merged)!r}, device='cpu', batch_size=4)\n"
        "clip = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)\n"
        "print(json.dumps({'p': det.predict(clip), 'peft': sys.modules.get('peft') is not None}))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["peft"] is False
    clip = (0.3 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32)
    assert abs(out["p"] - Detector.from_dir(merged, device="cpu", batch_size=4).predict(clip)) < TOL_P


def test_no_merge_copies_base_and_adapter(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    export_models(project / "models", out, merge=False, project_dir=project)
    for part in ("base", "adapter"):
        cmp = filecmp.dircmp(project / "models" / part, out / part)
        assert not (cmp.left_only or cmp.right_only or cmp.diff_files)
    assert (out / "detector.json").read_bytes() == (project / "models/detector.json").read_bytes()
    assert "```python" not in (out / "README.md").read_text()  # the transformers example needs merged weights
    clip = _clips()[1]
    p_out = Detector.from_dir(out, device="cpu", batch_size=4).predict(clip)
    assert p_out == Detector.from_dir(project / "models", device="cpu", batch_size=4).predict(clip)


# ---------------------------------------------------------------------------------------------
# bad input

def test_missing_parts_are_named(project: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(project / "models", models)
    (models / "detector.json").unlink()
    with pytest.raises(ExportError, match=rf"{models / 'detector.json'}: not found"):
        export_models(models, tmp_path / "out", project_dir=project)
    shutil.copy(project / "models/detector.json", models / "detector.json")
    (models / "adapter/adapter_model.safetensors").unlink()
    with pytest.raises(ExportError, match=rf"{models / 'adapter' / 'adapter_model.safetensors'}: not found: no trained"):
        export_models(models, tmp_path / "out", project_dir=project)
    with pytest.raises(ExportError, match="models folder not found"):
        export_models(tmp_path / "nope", tmp_path / "out", project_dir=project)
    assert not (tmp_path / "out").exists()


def test_non_empty_out_dir_needs_force_and_survives_a_failed_export(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user file")
    with pytest.raises(ExportError, match=rf"{out}: exists and is not empty; pass --force"):
        export_models(project / "models", out, merge=False, project_dir=project)
    broken = write_project(tmp_path / "broken")
    (broken / "data/raw/manifest.csv").unlink()
    with pytest.raises(ExportError, match=r"manifest.csv: not found"):
        export_models(project / "models", out, merge=False, force=True, project_dir=broken)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]  # untouched by the failed export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "out"]  # no temp folder left
    result = export_models(project / "models", out, merge=False, force=True, project_dir=project)
    assert result.replaced_files == 1 and not (out / "mine.txt").exists() and (out / "README.md").is_file()
    with pytest.raises(ExportError, match="overlaps the models folder"):
        export_models(project / "models", project / "models" / "inside", force=True, project_dir=project)


def test_adapter_of_another_base_is_refused(project: Path, tmp_path: Path) -> None:
    preset = json.loads((project / "models/detector.json").read_text())["model"]["preset"]
    other = "whisper-tiny" if preset == "tiny" else "tiny"
    models = tmp_path / "models"
    shutil.copytree(project / "models", models)
    shutil.rmtree(models / "base")
    from qvad.model.store import prepare_base

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    prepare_base({**params["model"], "preset": other, "path": None}, 0, models / "base")
    weights = models / "adapter" / "adapter_model.safetensors"
    with pytest.raises(ExportError, match=rf"{weights}: base_model\.model\.model\..*: .*trained on another base"):
        export_models(models, tmp_path / "out", project_dir=project)
    assert not (tmp_path / "out").exists()


def test_hub_base_named_differently_is_refused(project: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(project / "models", models)
    shutil.rmtree(models / "base")
    (models / "base").mkdir()
    (models / "base/source.json").write_text(json.dumps({"preset": "qwen2-audio-7b-instruct",
                                                          "hub_id": "Qwen/Qwen2-Audio-7B-Instruct"}))
    with pytest.raises(ExportError, match=r"adapter_config.json: base_model_name_or_path is .* but .*source.json "
                                          r"names 'Qwen/Qwen2-Audio-7B-Instruct'"):
        export_models(models, tmp_path / "out", project_dir=project)


def test_cli_export(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    argv = ["export", str(project / "models"), str(out), "--no-merge", "--project-dir", str(project)]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().err and (out / "detector.json").is_file()
    assert main(argv) == 2 and "pass --force" in capsys.readouterr().err
    assert main(["export", "a", "b", "c"]) == 2


# ---------------------------------------------------------------------------------------------
# the model card

def _committed_inputs(tmp_path: Path, evaluation: dict | None = None) -> CardInputs:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    detector = detector_config(params, temperature=1.3398006613120486)
    write_project(tmp_path)
    inputs = load_card_inputs(detector, params=tmp_path / "params.yaml", train=tmp_path / "metrics/train.json",
                              evaluation=tmp_path / "metrics/eval.json",
                              psychometric=tmp_path / "metrics/psychometric.json",
                              categories=tmp_path / "metrics/categories.json",
                              manifest=tmp_path / "data/raw/manifest.csv", pyproject=ROOT / "pyproject.toml")
    return inputs if evaluation is None else CardInputs(**{**inputs.__dict__, "evaluation": evaluation})


def _row(card: str, first_cell: str) -> str:
    rows = [line for line in card.splitlines() if line.startswith(f"| {first_cell} |")]
    assert len(rows) == 1, (first_cell, rows)
    return rows[0]


def test_card_figures_are_the_committed_metrics(tmp_path: Path) -> None:
    inputs = _committed_inputs(tmp_path)
    card = model_card(inputs, merged=True, dtype="float32")
    ev = json.loads((ROOT / "metrics/eval.json").read_text())
    for name, s in ev["systems"].items():
        row = _row(card, f"`{name}`")
        assert f"| {s['balanced_accuracy']} [{s['balanced_accuracy_ci95'][0]}, {s['balanced_accuracy_ci95'][1]}] |" in row
        assert f"| {s['accuracy']} [{s['accuracy_ci95'][0]}, {s['accuracy_ci95'][1]}] |" in row
        assert f"| {s['recall']['speech']} | {s['recall']['nonspeech']} |" in row
    for name, d in ev["model_minus_baseline"].items():
        assert _row(card, f"`model` - `{name}`") == (
            f"| `model` - `{name}` | {d['difference']} [{d['ci95'][0]}, {d['ci95'][1]}] | {d['p_value']} | {d['p_holm']} |")
    for snr, cell in ev["systems"]["model"]["by"]["snr_db"].items():
        assert _row(card, f"snr_db = {snr}") == (f"| snr_db = {snr} | {cell['balanced_accuracy']} | {cell['accuracy']} "
                                                 f"| {int(cell['n'])} |")
    assert f"ECE {ev['calibration']['ece_before']} before, {ev['calibration']['ece_after']} after" in card
    psy = json.loads((ROOT / "metrics/psychometric.json").read_text())
    dt75 = psy["systems"]["model"]["DT75"]
    assert f"| {dt75['value']} [{dt75['ci95'][0]}, {dt75['ci95'][1]}] |" in _row(card, "DT75")
    dt50 = psy["systems"]["model"]["DT50"]
    assert f"| {dt50['value']} [below the tested range, {dt50['ci95'][1]}] |" in _row(card, "DT50")
    train = json.loads((ROOT / "metrics/train.json").read_text())
    assert f"dev balanced accuracy {train['best_dev_balanced_accuracy']}" in card
    assert "T = 1.3398006613120486" in card and "| `klettres-data` | `4:22.12.3-1` | GPL-2+ | speech | 2 | 2 |" in card
    assert card.startswith("---\nlibrary_name: transformers\n") and "license: mit" in card
    assert model_card(inputs, merged=True, dtype="float32") == card  # deterministic


def test_card_shows_metrics_it_does_not_know_yet(tmp_path: Path) -> None:
    ev = json.loads((ROOT / "metrics/eval.json").read_text())
    for system in ev["systems"].values():  # as if the run predated them: only the model gets them here
        for key in ("roc_auc", "roc_auc_ci95", "average_precision", "average_precision_ci95", "ranked_by"):
            system.pop(key, None)
    ev["systems"]["model"].update(roc_auc=0.9512, roc_auc_ci95=[0.91, 0.97], average_precision=0.94)
    card = model_card(_committed_inputs(tmp_path, ev), merged=True, dtype="float32")
    header = next(line for line in card.splitlines() if line.startswith("| system |"))
    assert header.endswith("| average precision | roc auc |")
    assert _row(card, "`model`").endswith("| 0.94 | 0.9512 [0.91, 0.97] |")
    assert _row(card, "`silero`").endswith("| n/a | n/a |")


def test_card_without_optional_metrics_says_so(tmp_path: Path) -> None:
    inputs = CardInputs(**{**_committed_inputs(tmp_path).__dict__, "psychometric": None, "categories": None})
    card = model_card(inputs, merged=False, dtype="float32")
    assert "Not measured in this run (metrics/psychometric.json is missing)." in card


def test_number_formatting_round_trips() -> None:
    for value in (0.9005, 5.447e-12, -13.119, 1.3398006613120486, 255.914):
        assert float(num(value)) == value
    assert num(291.0) == "291" and num(None) == "n/a" and with_ci(0.5, [0.4, None]) == "0.5 [0.4, n/a]"


def test_nf4_trained_adapter_merges_into_a_bf16_checkpoint(project: Path, tmp_path: Path) -> None:
    """A QLoRA run (model.quantization nf4) exports the unquantised base + adapter in bfloat16."""
    models = tmp_path / "models"
    shutil.copytree(project / "models", models)
    det = json.loads((models / "detector.json").read_text())
    det["model"].update(quantization="nf4", dtype="bfloat16")
    (models / "detector.json").write_text(json.dumps(det))
    result = export_models(models, tmp_path / "out", project_dir=project)
    exported = json.loads((tmp_path / "out/detector.json").read_text())
    assert result.dtype == "bfloat16" and exported["model"]["quantization"] == "bf16"
    assert exported["export"]["trained_with"] == {"quantization": "nf4", "dtype": "bfloat16"}
    assert "measured on the model as trained: a nf4 base" in (tmp_path / "out/README.md").read_text()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "out/model.safetensors"), framework="pt") as f:
        assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}
    clip = _clips()[2]
    p_bf16 = Detector.from_dir(tmp_path / "out", device="cpu", batch_size=4).predict(clip)
    p_fp32 = Detector.from_dir(project / "models", device="cpu", batch_size=4).predict(clip)
    assert abs(p_bf16 - p_fp32) < 0.02  # bf16 keeps 8 bits of mantissa: rounding, not a different model
