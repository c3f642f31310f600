"""The evaluate stage: the model and both VAD baselines on the same held-out test clips."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from qvad.analysis import calibration
from qvad.common.atomic import write_csv, write_json
from qvad.analysis.baselines import BASELINES, apply_rule, choose_rule, score_clips
from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.model.dataset import ClipDataset
from qvad.analysis.system_metrics import mcnemar, system_metrics
from qvad.model.store import load_trained
from qvad.common.params import get
from qvad.analysis.plots import accuracy_vs_snr_png, confusion_matrix_png, reliability_png
from qvad.model.scoring import score_ab_logits

OUT = Path("data/eval")


def score_model(model, processor, clips: list, prompt_cfg: dict, batch: int) -> tuple[np.ndarray, float]:
    """Answer logits [n, 2] and clips per second."""
    start = time.perf_counter()
    logits = score_ab_logits(model, processor, clips, prompt_cfg, batch)
    return logits, len(clips) / (time.perf_counter() - start)


def evaluate(params: dict) -> None:
    """Run the evaluate stage with ``params`` (params.yaml as a dict)."""
    pin_cpu_numerics(params["cpu_threads"])  # before any tensor work
    cfg = get(params, "evaluate")
    seed = int(params["seed"])
    dev, test = ClipDataset("data/splits/dev.csv"), ClipDataset("data/splits/test.csv")
    frame = test.frame.assign(y=test.labels)

    model, processor = load_trained(get(params, "model"))
    dev_logits, _ = score_model(model, processor, dev.audio, get(params, "prompt"), cfg["batch_size"])
    test_logits, model_cps = score_model(model, processor, test.audio, get(params, "prompt"), cfg["batch_size"])
    margin = calibration.speech_margin(test_logits)
    p_raw = expit(margin)  # softmax over the two answer logits
    temperature = calibration.fit_temperature(dev_logits, dev.labels)  # dev only, never test
    p_cal = calibration.apply_temperature(test_logits, temperature)
    model_pred = (margin > 0).astype(int)

    preds = {"model": model_pred}
    scores, rules, latency = {}, {}, {"model": round(1000 / model_cps, 3)}
    for name in BASELINES:
        kw = {"mode": cfg["webrtc_mode"], "frame_ms": cfg["webrtc_frame_ms"]}
        dev_scores, _ = score_clips(dev.audio, name, **kw)
        test_scores, ms = score_clips(test.audio, name, **kw)
        rules[name] = choose_rule(dev_scores, dev.labels)  # threshold and score picked on dev
        preds[name] = apply_rule(test_scores, rules[name])
        scores[name] = test_scores.add_prefix(f"{name}:")
        latency[name] = round(ms, 3)

    hygiene = get(params, "hygiene")
    note = {name: [role for role, key in (("found the speech regions", "speech_vad"),
                                           ("screened the non-speech files", "nonspeech_vad"))
                   if hygiene[key] == name] for name in BASELINES}
    metrics = {"test_clips": int(len(test)), "dev_clips": int(len(dev)), "systems": {}}
    for name, pred in preds.items():
        m = system_metrics(frame, pred, cfg["n_boot"], seed)
        m["latency_ms_per_clip"] = latency[name]
        if name != "model":
            m["rule"] = rules[name]._asdict()
            m["mcnemar_vs_model"] = mcnemar(test.labels, model_pred, pred)
            m["used_in_label_hygiene"] = ("yes: it " + " and ".join(note[name]) +
                                          "; its numbers are biased in its favour") if note[name] else "no"
        metrics["systems"][name] = m
    model_m = metrics["systems"]["model"]
    model_m["clips_per_second"] = round(model_cps, 2)
    model_m["confidence_gap"] = {k: (round(float(v), 4) if isinstance(v, float) else v)
                                 for k, v in calibration.confidence_gap(p_raw, test.labels).items()}
    model_m["temperature"] = round(float(temperature), 4)
    model_m["ece_before"] = round(calibration.expected_calibration_error(p_raw, test.labels, cfg["ece_bins"]), 4)
    model_m["ece_after"] = round(calibration.expected_calibration_error(p_cal, test.labels, cfg["ece_bins"]), 4)
    write_json("metrics/eval.json", metrics)

    predictions = pd.concat([frame[["clip_id", "label", "group", "duration_ms", "snr_db", "band", "orig_sr"]],
                             pd.DataFrame({"prediction": np.where(model_pred == 1, "speech", "nonspeech"),
                                           "p_speech": p_raw.round(6), "p_speech_calibrated": p_cal.round(6),
                                           **{f"{n}_prediction": np.where(preds[n] == 1, "speech", "nonspeech")
                                              for n in BASELINES}}),
                             *[s.round(6) for s in scores.values()]], axis=1)
    write_csv(OUT / "predictions.csv", predictions)
    write_json(OUT / "decision_rules.json", {"temperature": float(temperature),
                                             **{n: r._asdict() for n, r in rules.items()}})
    write_plots(frame, preds, p_raw, p_cal, temperature)


def write_plots(frame: pd.DataFrame, preds: dict, p_raw: np.ndarray, p_cal: np.ndarray, temperature: float) -> None:
    """CSV plots for `dvc plots` and the same views as PNG."""
    label = np.where(frame["y"] == 1, "speech", "nonspeech")
    confusion = pd.DataFrame({"actual": label, "predicted": np.where(preds["model"] == 1, "speech", "nonspeech")})
    write_csv("plots/confusion.csv", confusion)
    confusion_matrix_png(pd.DataFrame({"label": frame["y"], "pred": preds["model"]}), "plots/confusion.png",
                         title="model, test")
    per_clip = pd.concat([frame[["duration_ms", "snr_db"]].assign(system=name, correct=(p == frame["y"]).astype(int))
                          for name, p in preds.items()], ignore_index=True)
    acc = per_clip.pivot_table(index="snr_db", columns="system", values="correct", aggfunc="mean")
    write_csv("plots/accuracy_vs_snr.csv", acc.reset_index()[["snr_db", *preds]])
    accuracy_vs_snr_png(per_clip, "plots/accuracy_vs_snr.png")
    rel = pd.DataFrame({"label": frame["y"], "prob_raw": p_raw, "prob_calibrated": p_cal})
    reliability_png(rel, "plots/reliability.png", temperature=temperature)
    # One file per curve, empty bins left out: a blank cell in a shared table is drawn as 0.
    for name, p in (("raw", p_raw), ("calibrated", p_cal)):
        table = calibration.reliability_table(p, frame["y"], 10)
        centre = ((table["bin_lower"] + table["bin_upper"]) / 2).round(3)
        rows = pd.DataFrame({"confidence_bin": centre, "accuracy": table["accuracy"], "ideal": centre})
        write_csv(f"plots/reliability_{name}.csv", rows.dropna(subset=["accuracy"]))

