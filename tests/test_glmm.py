"""The duration x SNR mixed-effects model recovers a known interaction, finds none where there is none,
and gives the same figures on a rerun."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qvad.analysis.glmm import INTERACTION, fit_glmm, glmm_report

DURATIONS, SNRS = (200, 1000), (-20, -15, -10, -5, 0, 5, 10, 20)


def simulate(interaction: float, seed: int = 0, n_groups: int = 12, bases: int = 4) -> pd.DataFrame:
    """Binary correctness from logit = 1 + 0.8 log2 d + 0.15 snr + interaction * log2 d * snr + u_group."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 0.7, n_groups)
    ld_c, snr_c = np.mean(np.log2(DURATIONS)), np.mean(SNRS)
    rows = []
    for g in range(n_groups):
        for _ in range(bases):
            for d in DURATIONS:
                for s in SNRS:
                    ld, sn = np.log2(d) - ld_c, s - snr_c
                    eta = 1.0 + 0.8 * ld + 0.15 * sn + interaction * ld * sn + u[g]
                    rows.append({"group": f"g{g}", "duration_ms": d, "snr_db": s,
                                 "correct": int(rng.random() < 1 / (1 + np.exp(-eta)))})
    return pd.DataFrame(rows)


def test_known_interaction_is_recovered_and_significant():
    fit = fit_glmm(simulate(0.1), seed=1)
    b3 = fit["coefficients"][INTERACTION]
    assert fit["status"] == "fitted"
    assert b3["ci95"][0] < 0.1 < b3["ci95"][1]
    assert fit["interaction"]["p_value"] < 1e-3
    assert fit["coefficients"]["snr_db"]["mean"] == pytest.approx(0.15, abs=0.03)


def test_no_interaction_is_not_called_one():
    fit = fit_glmm(simulate(0.0, seed=2), seed=1)
    assert fit["coefficients"][INTERACTION]["ci95"][0] < 0 < fit["coefficients"][INTERACTION]["ci95"][1]
    assert fit["interaction"]["p_value"] > 0.01


def test_same_inputs_same_figures():
    trials = simulate(0.1, seed=3)
    assert fit_glmm(trials, seed=5) == fit_glmm(trials, seed=5)


def test_all_correct_is_reported_not_fitted():
    trials = simulate(0.1).assign(correct=1)
    assert fit_glmm(trials, seed=0)["status"].startswith("not fitted")


def test_report_per_system_and_class_on_the_snr_conditions_only():
    speech, non = simulate(0.1, seed=4), simulate(-0.05, seed=5).assign(group=lambda d: "n" + d["group"])
    table = pd.concat([speech.assign(label=1), non.assign(label=0)], ignore_index=True)
    table["condition"] = "snr@" + table["duration_ms"].astype(str) + "ms"
    clean = table.head(10).assign(condition="duration", snr_db=None)  # no SNR: must be left out
    table = pd.concat([table, clean], ignore_index=True)
    # a system that answers right exactly when the simulation says "correct"
    pred = np.where(table["correct"].fillna(1).astype(int) == 1, table["label"], 1 - table["label"])
    report = glmm_report(table.drop(columns="correct"), {"sys": pred, "oracle": table["label"].to_numpy()}, seed=0)
    assert report["conditions"] == ["snr@1000ms", "snr@200ms"]
    assert report["systems"]["sys"]["speech"]["n"] == len(speech)
    assert report["systems"]["sys"]["speech"]["coefficients"][INTERACTION]["mean"] > 0
    assert report["systems"]["oracle"]["nonspeech"]["status"].startswith("not fitted")


def test_missing_columns_and_no_snr_conditions_are_clear_errors():
    with pytest.raises(ValueError, match="snr_db"):
        fit_glmm(simulate(0.1).drop(columns="snr_db"), seed=0)
    table = simulate(0.1).assign(label=1, condition="duration")
    with pytest.raises(ValueError, match="snr@"):
        glmm_report(table, {"sys": np.ones(len(table), dtype=int)}, seed=0)
