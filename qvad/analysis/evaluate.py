"""The evaluate stage: the model and the VAD baselines on the same held-out test clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

from qvad.analysis import calibration, paired, ranking
from qvad.analysis.error_analysis import (accuracy_by_category, category_accuracy_per_system, category_metrics,
                                          most_confident_errors)
from qvad.analysis.error_report import write_report
from qvad.common.atomic import write_csv, write_json
from qvad.analysis.baselines import BASELINES, apply_rule, baseline_scores, choose_rule
from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.model.dataset import ClipDataset
from qvad.analysis.system_metrics import groups_per_class, mcnemar, system_metrics
from qvad.detector_config import detector_config
from qvad.model.store import ADAPTER, device, load_trained, read_prompt
from qvad.common.params import get
from qvad.analysis.plots import accuracy_vs_snr_png, confusion_matrix_png, reliability_png
from qvad.parallel.group import join_group
from qvad.parallel.scoring import score_ab_logits

OUT = Path("data/eval")
DETECTOR = Path("models/detector.json")
REPORT = Path("reports")
MIN_GROUPS = 10
"""Fewer test groups than this in a class, and a percentile group bootstrap undercovers: say so."""


def used_in_hygiene(name: str, hygiene: dict) -> str:
    """Whether a baseline VAD cleaned the labels it is scored against (it is then favoured)."""
    roles = [role for role, key in (("found the speech regions", "speech_vad"),
                                    ("screened the non-speech files", "nonspeech_vad")) if hygiene[key] == name]
    return ("yes: it " + " and ".join(roles) + "; its numbers are biased in its favour") if roles else "no"


def group_warnings(frame: pd.DataFrame) -> list[str]:
    """One warning per class with fewer than MIN_GROUPS source groups in the test split."""
    counts = groups_per_class(frame["y"].to_numpy(), frame["group"].to_numpy())
    return [f"test {label}: only {n} source groups (< {MIN_GROUPS}); group-bootstrap CIs may undercover"
            for label, n in counts.items() if n < MIN_GROUPS]


def paired_comparisons(frame: pd.DataFrame, preds: dict[str, np.ndarray], n_boot: int, seed: int) -> dict:
    """Model minus each baseline: BA difference with a paired group-bootstrap CI, Holm-adjusted, and McNemar."""
    y, groups, model = frame["y"].to_numpy(), frame["group"].to_numpy(), preds["model"]
    out = {name: paired.paired_ba_difference(y, model, pred, groups, n_boot=n_boot, seed=seed)
           for name, pred in preds.items() if name != "model"}
    adjusted = paired.holm({name: res["p_value"] for name, res in out.items()})
    for name, res in out.items():
        res["p_holm"] = adjusted[name]
        res["mcnemar_clips"] = mcnemar(y, model, preds[name])
        out[name] = {k: (round(v, 4) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, list)
                         else v) for k, v in res.items()}
    return out


def evaluate(params: dict) -> None:
    """Run the evaluate stage with ``params`` (params.yaml as a dict)."""
    pin_cpu_numerics(params["cpu_threads"])  # before any tensor work
    cfg = get(params, "evaluate")
    seed = int(params["seed"])
    prompt_cfg = read_prompt()  # the prompt optimize_prompt chose on dev
    dev, test = ClipDataset("data/splits/dev.csv"), ClipDataset("data/splits/test.csv")
    frame = test.frame.assign(y=test.labels)

    group = join_group(params, device())  # train.processes > 1: the scoring is shared, rank 0 writes
    model, processor = load_trained(get(params, "model"),
                                    adapter=None if get(params, "evaluate.without_adapter") else ADAPTER)
    dev_logits = score_ab_logits(model, processor, dev.audio, prompt_cfg, cfg["batch_size"])
    test_logits = score_ab_logits(model, processor, test.audio, prompt_cfg, cfg["batch_size"])
    if not group.is_main:
        return
    margin = calibration.speech_margin(test_logits)
    p_raw = expit(margin)  # softmax over the two answer logits
    temperature = calibration.fit_temperature(dev_logits, dev.labels)  # dev only, never test
    p_cal = calibration.apply_temperature(test_logits, temperature)
    preds = {"model": (margin > 0).astype(int)}
    scores, rules = {}, {}
    dev_scores = baseline_scores(dev.audio, cfg, params["cpu_threads"])
    test_scores = baseline_scores(test.audio, cfg, params["cpu_threads"])
    for name in BASELINES:
        rules[name] = choose_rule(dev_scores[name], dev.labels)  # score and threshold on dev
        preds[name] = apply_rule(test_scores[name], rules[name]).astype(int)
        scores[name] = test_scores[name].add_prefix(f"{name}:")

    metrics = {"test_clips": int(len(test)), "dev_clips": int(len(dev)),
               "test_groups": groups_per_class(frame["y"].to_numpy(), frame["group"].to_numpy()),
               "warnings": group_warnings(frame), "systems": {}}
    for name, pred in preds.items():
        m = system_metrics(frame, pred, cfg["n_boot"], seed)
        if name != "model":
            m["rule"] = rules[name]._asdict()
            m["used_in_label_hygiene"] = used_in_hygiene(name, get(params, "hygiene"))
        metrics["systems"][name] = m
    metrics["model_minus_baseline"] = paired_comparisons(frame, preds, cfg["n_boot"], seed)
    clip_scores = {"model": p_cal, **{n: test_scores[n][rules[n].score].to_numpy() for n in BASELINES}}
    ranking.add_ranking_metrics(metrics, frame["y"].to_numpy(), clip_scores,
                                {"model": "p_speech_calibrated", **{n: rules[n].score for n in BASELINES}},
                                frame["group"].to_numpy(), cfg["n_boot"], seed)
    bins = int(cfg["ece_bins"])
    metrics["calibration"] = {
        "definition": f"top-label ECE, {bins} equal bins of max(P, 1 - P) over [0.5, 1]",
        "temperature": round(float(temperature), 4),
        "ece_before": round(calibration.expected_calibration_error(p_raw, test.labels, bins), 4),
        "ece_after": round(calibration.expected_calibration_error(p_cal, test.labels, bins), 4),
        "confidence_gap": {k: (round(float(v), 4) if isinstance(v, float) else v)
                           for k, v in calibration.confidence_gap(p_raw, test.labels).items()},
    }
    write_json("metrics/eval.json", metrics)

    predictions = pd.concat([frame[["clip_id", "label", "group", "duration_ms", "snr_db", "band", "orig_sr"]],
                             pd.DataFrame({"prediction": np.where(preds["model"] == 1, "speech", "nonspeech"),
                                           "p_speech": p_raw.round(6), "p_speech_calibrated": p_cal.round(6),
                                           **{f"{n}_prediction": np.where(preds[n] == 1, "speech", "nonspeech")
                                              for n in BASELINES}}),
                             *[s.round(6) for s in scores.values()]], axis=1)
    write_csv(OUT / "predictions.csv", predictions)
    write_json(OUT / "decision_rules.json", {"temperature": float(temperature),
                                             **{n: r._asdict() for n, r in rules.items()}})
    write_json(DETECTOR, detector_config(params, float(temperature), prompt=prompt_cfg))
    write_plots(frame, preds, p_raw, p_cal, temperature, bins)
    ranking.write_curves(frame["y"].to_numpy(), clip_scores, "plots")
    write_error_analysis(frame, preds, p_cal, cfg, seed, get(params, "hygiene"))


def write_error_analysis(frame: pd.DataFrame, preds: dict, p_speech: np.ndarray, cfg: dict, seed: int,
                         hygiene: dict) -> None:
    """Accuracy per source category (every system), the model's most confident errors, the listening page."""
    table = accuracy_by_category(frame, preds, cfg["n_boot"], seed)
    write_json("metrics/categories.json", category_metrics(table))
    for system, rows in category_accuracy_per_system(table).items():
        write_csv(f"plots/accuracy_by_category/{system}.csv", rows)
    errors = most_confident_errors(frame, p_speech, preds, int(cfg["report_errors"]))
    write_csv(REPORT / "errors.csv", errors)
    notes = [f"{name}: used in label hygiene: {used_in_hygiene(name, hygiene)}" for name in BASELINES]
    write_report(REPORT / "error_report.html", table, errors, dict(zip(frame["clip_id"], frame["path"])),
                 notes=["Test split; P(speech) is the dev-calibrated probability.", *notes])


def write_plots(frame: pd.DataFrame, preds: dict, p_raw: np.ndarray, p_cal: np.ndarray, temperature: float,
                bins: int) -> None:
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
    reliability_png(rel, "plots/reliability.png", n_bins=bins, temperature=temperature)
    # One file per curve, empty bins left out: a blank cell in a shared table is drawn as 0.
    for name, p in (("raw", p_raw), ("calibrated", p_cal)):
        table = calibration.reliability_table(p, frame["y"], bins)
        centre = ((table["bin_lower"] + table["bin_upper"]) / 2).round(3)
        rows = pd.DataFrame({"confidence_bin": centre, "accuracy": table["accuracy"], "ideal": centre})
        write_csv(f"plots/reliability_{name}.csv", rows.dropna(subset=["accuracy"]))

