"""The psychometric stage: duration and SNR thresholds (DT75, SNR-75, ...) for the model and the VADs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

from qvad.analysis import bootstrap, metrics
from qvad.common.atomic import write_csv, write_json
from qvad.analysis.baselines import BASELINES, DecisionRule, apply_rule, baseline_scores
from qvad.analysis.glmm import glmm_report
from qvad.common.cpu_numerics import pin_cpu_numerics
from qvad.common.params import get
from qvad.analysis.plots import psychometric_png
from qvad.analysis.psychometric_fit import bootstrap_curve, bootstrap_thresholds
from qvad.analysis.variants import build_variants, pick_bases, held_out_segments


def predictions(audio: list, params: dict) -> dict[str, np.ndarray] | None:
    """Hard decisions of every system, with the baselines' rules exactly as evaluate chose them on dev.

    None in a process other than rank 0 of a group (``train.processes`` > 1): it scored its share."""
    # Imported here, not at the top: the worker processes of this stage unpickle this module's
    # functions, and the model stack (transformers, peft) would add ~8 s of imports to each.
    from qvad.model.store import ADAPTER, device, load_trained, read_prompt
    from qvad.parallel.group import join_group
    from qvad.parallel.scoring import score_ab_logits

    rules = json.loads(open("data/eval/decision_rules.json").read())
    group = join_group(params, device())
    model, processor = load_trained(get(params, "model"),
                                    adapter=None if get(params, "evaluate.without_adapter") else ADAPTER)
    logits = score_ab_logits(model, processor, audio, read_prompt(), get(params, "evaluate.batch_size"))
    if not group.is_main:
        return None
    out = {"model": (logits[:, 0] > logits[:, 1]).astype(int)}
    scores = baseline_scores(audio, get(params, "evaluate"), params["cpu_threads"])
    for name in BASELINES:
        out[name] = apply_rule(scores[name], DecisionRule(**rules[name]))
    return out


def thresholds_and_band(trials: pd.DataFrame, stim: str, kind: str, cfg: dict,
                        seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """DTxx / SNR-xx on balanced accuracy with the fitted curve and its CI band (same resamples),
    plus the 50 % point of speech recall (guess rate free)."""
    common = {"group_col": "group", "stim_col": stim, "kind": kind, "n_boot": cfg["n_boot"], "seed": seed}
    lo, hi = trials[stim].min(), trials[stim].max()
    grid = np.geomspace(lo, hi, 200) if kind != "logistic" else np.linspace(lo, hi, 200)
    balanced, band = bootstrap_curve(trials, grid=grid, targets=tuple(cfg["targets"]), curve="balanced", **common)
    speech = bootstrap_thresholds(trials, targets=(0.5,), curve="speech", **common).assign(curve="speech")
    return pd.concat([balanced.assign(curve="balanced"), speech], ignore_index=True), band


def points(trials: pd.DataFrame, stim: str) -> pd.DataFrame:
    """Balanced accuracy per level as effective binomial counts (k = n x BA) for plotting."""
    rows = []
    for level, df in trials.groupby(stim):
        ba = metrics.balanced_accuracy(df["label"], df["pred"])
        rows.append({stim: level, "level": level, "n": len(df), "k": len(df) * ba, "balanced_accuracy": ba})
    return pd.DataFrame(rows)


def summary(row: pd.Series) -> dict:
    def num(v: float) -> float | None:
        return None if pd.isna(v) else round(float(v), 3)
    return {"value": num(row["threshold"]), "status": row["status"], "ci95": [num(row["ci_low"]), num(row["ci_high"])],
            "ci_status": [row["ci_low_status"], row["ci_high_status"]]}


def condition_results(system: str, cond: str, df: pd.DataFrame, cfg: dict, seed: int
                      ) -> tuple[dict, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None]:
    """One system's metrics for one condition, plus (points, curve band, thresholds) for curves.

    Duration and SNR conditions get fitted thresholds with bootstrap CIs; the others (noise
    type, reverb, ...) get balanced accuracy per level with a group-bootstrap CI.
    """
    out: dict = {}
    if cond == "duration" or cond.startswith("snr@"):
        stim, kind = ("duration_ms", "log_logistic") if cond == "duration" else ("snr_db", "logistic")
        th, band = thresholds_and_band(df, stim, kind, cfg, seed)
        name = "DT" if cond == "duration" else f"SNR{cond[3:]}-"
        for _, r in th.iterrows():
            key = f"{name}{int(round(100 * r['target']))}" if cond == "duration" else \
                f"SNR-{int(round(100 * r['target']))}{cond[3:]}"
            out[key] = summary(r)
        tags = {"system": system, "condition": cond}
        return out, (points(df, stim).assign(**tags), band.assign(**tags),
                     th[th["curve"] == "balanced"].assign(**tags))
    for level, d in df.groupby("level"):
        ci = bootstrap.group_bootstrap_ci(metrics.balanced_accuracy, d["label"].to_numpy(), d["pred"].to_numpy(),
                                          d["group"].to_numpy(), n_boot=cfg["n_boot"], seed=seed)
        out[f"{cond}:{level}"] = {"balanced_accuracy": round(ci.estimate, 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}
    return out, None


def psychometric(params: dict) -> None:
    """Run the psychometric stage with ``params`` (params.yaml as a dict)."""
    pin_cpu_numerics(params["cpu_threads"])  # before any tensor work
    cfg, seed = get(params, "psychometric"), int(params["seed"])
    segments = held_out_segments(pd.read_csv("data/hygiene/manifest.csv", keep_default_na=False),
                             pd.read_csv("data/mixed/groups.csv"))
    candidates = pick_bases(segments, None, cfg["base_ms"] / 1000, seed)
    bases, table, audio = build_variants(candidates, cfg["bases_per_class"], cfg, get(params, "mix"),
                                         get(params, "normalize"), float(get(params, "hygiene.min_speech_frac")), seed)
    preds = predictions(audio, params)
    if preds is None:  # this process's share of the scoring is done; rank 0 writes the outputs
        return

    report = {"bases": {"speech": int((bases["label"] == "speech").sum()),
                         "nonspeech": int((bases["label"] == "nonspeech").sum()),
                         "groups": int(bases["group"].nunique())},
               "variants": int(len(table)),
               "speech_variants_below_voicing_floor": int(((table["label"] == 1) & (table["voiced_frac"] < float(
                   get(params, "hygiene.min_speech_frac")))).sum()),
               "systems": {}}
    jobs = [(system, cond, df) for system, pred in preds.items()
            for cond, df in table.assign(pred=pred, correct=(pred == table["label"]).astype(int)).groupby("condition")]
    # The bootstrap refits (L-BFGS-B from a grid of starts) are a third of the stage; each (system,
    # condition) is independent and seeded alike, so processes give the same bytes as a loop.
    results = Parallel(n_jobs=params["cpu_threads"] or -1)(
        delayed(condition_results)(system, cond, df, cfg, seed) for system, cond, df in jobs)
    all_points, all_curves, all_thresholds = [], [], []
    for (system, _, _), (out, extra) in zip(jobs, results):
        report["systems"].setdefault(system, {}).update(out)
        if extra is not None:
            all_points.append(extra[0])
            all_curves.append(extra[1])
            all_thresholds.append(extra[2])
    report["glmm"] = glmm_report(table, preds, seed)
    write_json("metrics/psychometric.json", report)
    pts, crv, ths = (pd.concat(x, ignore_index=True) for x in (all_points, all_curves, all_thresholds))
    write_csv("plots/psychometric_points.csv", pts)
    # Wide tables for `dvc plots` (one line per system): duration, and SNR at the longest SNR duration.
    longest = f"snr@{max(cfg['snr_durations_ms'])}ms"
    for name, cond, stim in (("duration", "duration", "duration_ms"), ("snr", longest, "snr_db")):
        wide = pts[pts["condition"] == cond].pivot_table(index=stim, columns="system", values="balanced_accuracy")
        write_csv(f"plots/psychometric_{name}.csv", wide.reset_index()[[stim, *preds]])
    shutil.rmtree("plots/psychometric", ignore_errors=True)  # one PNG per condition of *these* params
    for cond in pts["condition"].unique():
        stim = "duration_ms" if cond == "duration" else "snr_db"
        sel = (lambda df: df[df["condition"] == cond])  # noqa: E731
        psychometric_png(sel(pts), sel(crv), sel(ths), f"plots/psychometric/{cond.replace('@', '_')}.png", x=stim,
                         y_label="balanced accuracy")

