"""Temporal integration as a test: a mixed-effects logistic model of correctness on duration x SNR.

The psychometric curves give thresholds per condition; whether a longer clip tolerates more
noise is a claim about the *interaction* of duration and SNR. For each system and class, on the
variants of the ``snr@<d>ms`` conditions (every SNR at each SNR duration, the same bases), the
model is

    logit P(correct) = b0 + b1 * log2_duration + b2 * snr_db + b3 * log2_duration * snr_db + u_group

with both predictors centred on the design's mean, so b1 and b2 are the effects at the design's
centre, and a random intercept ``u_group ~ N(0, s^2)`` per source group (a speaker or a
non-speech source): the variants of one group share voice and recording, so their errors are
correlated, as the group bootstrap assumes everywhere else. b3 > 0 is temporal integration: each
doubling of duration makes the SNR slope steeper, i.e. a longer clip keeps its accuracy at lower
SNRs.

Why statsmodels' ``BinomialBayesMixedGLM`` (variational Bayes) and not GEE: the question is
about a clip of a given source (a subject-specific effect, the model the upstream study fitted),
and GEE's sandwich errors rest on the number of clusters, here about a dozen groups a class,
where they are known to be too small. The VB fit is a mean-field Gaussian posterior under weak
priors (sd 2 on each fixed effect): reported are the posterior means, +/- 1.96 posterior sd as
the 95 % interval, and for b3 a Wald-type z = mean / sd with its two-sided normal p. Mean-field
VB tends to understate posterior spread, so p is a screen, not an exact test.

Why per class: noise masks speech but makes non-speech sound more like noise, so SNR moves the
two classes' correctness in opposite directions, and a pooled slope would average them away.
The speech fit is the temporal-integration test (hit rate); the non-speech one says whether
false alarms depend on the same factors.

Determinism: statsmodels draws the VB starting standard deviations from ``rng`` (fresh OS entropy
when it is None), so the fit is seeded; with the seed fixed it is a deterministic BFGS run and
the rounded figures are the same bytes on a CPU.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm
from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

TERMS = ("intercept", "log2_duration", "snr_db", "log2_duration:snr_db")
INTERACTION = TERMS[-1]


def design(trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(fixed-effect matrix, group indicator matrix, group index, centres) of ``trials``.

    ``trials`` has ``duration_ms``, ``snr_db``, ``group`` and ``correct`` (0/1).
    """
    missing = {"duration_ms", "snr_db", "group", "correct"} - set(trials.columns)
    if missing:
        raise ValueError(f"glmm: trials lack columns {sorted(missing)}")
    log_d = np.log2(trials["duration_ms"].to_numpy(dtype=float))
    snr = trials["snr_db"].to_numpy(dtype=float)
    if not (np.isfinite(log_d).all() and np.isfinite(snr).all()):
        raise ValueError("glmm: duration_ms must be > 0 and snr_db finite on every trial")
    centres = {"log2_duration": float(log_d.mean()), "snr_db": float(snr.mean())}
    ld, sn = log_d - centres["log2_duration"], snr - centres["snr_db"]
    exog = np.column_stack([np.ones_like(ld), ld, sn, ld * sn])
    names, index = np.unique(trials["group"].astype(str).to_numpy(), return_inverse=True)
    groups = np.zeros((len(trials), len(names)))
    groups[np.arange(len(trials)), index] = 1.0
    return exog, groups, index, centres


def fit_glmm(trials: pd.DataFrame, seed: int) -> dict:
    """Fit the model to one system's trials of one class; JSON-ready, rounded to 4 decimals.

    Needs both durations and both outcomes: with every trial correct (or wrong) there is
    nothing to fit, and the result says so instead of reporting the priors.
    """
    exog, groups, _, centres = design(trials)
    y = trials["correct"].to_numpy(dtype=float)
    out: dict = {"n": int(len(y)), "groups": int(groups.shape[1]), "accuracy": round(float(y.mean()), 4),
                 "centres": {k: round(v, 4) for k, v in centres.items()}}
    if y.min() == y.max() or np.unique(exog[:, 1]).size < 2 or np.unique(exog[:, 2]).size < 2:
        return {**out, "status": "not fitted: needs both outcomes and at least two durations and SNRs"}
    model = BinomialBayesMixedGLM(y, exog, groups, np.zeros(groups.shape[1], dtype=int),
                                  fep_names=list(TERMS), vcp_names=["group"])
    res = model.fit_vb(rng=np.random.default_rng(seed))
    if not (np.isfinite(res.fe_mean).all() and np.isfinite(res.fe_sd).all() and (res.fe_sd > 0).all()):
        return {**out, "status": "not fitted: the variational fit gave no finite posterior"}
    coefficients = {}
    for name, mean, sd in zip(TERMS, res.fe_mean, res.fe_sd):
        coefficients[name] = {"mean": round(float(mean), 4), "sd": round(float(sd), 4),
                              "ci95": [round(float(mean - 1.96 * sd), 4), round(float(mean + 1.96 * sd), 4)]}
    b3, s3 = float(res.fe_mean[-1]), float(res.fe_sd[-1])
    return {**out, "status": "fitted" if res.optim_retvals.success else "fitted, optimiser did not report convergence",
            "coefficients": coefficients,
            "group_sd": round(float(np.exp(res.vcp_mean[0])), 4),  # vcp is the log of the group sd
            "interaction": {"z": round(b3 / s3, 3), "p_value": float(f"{2 * norm.sf(abs(b3 / s3)):.4g}")}}


def glmm_report(table: pd.DataFrame, preds: dict[str, np.ndarray], seed: int) -> dict:
    """The model per system and class on the ``snr@`` variants of the psychometric ``table``.

    ``table`` is the stage's variant table (``condition``, ``label`` 1 = speech, ``group``,
    ``duration_ms``, ``snr_db``), ``preds`` each system's 0/1 decisions in its row order.
    """
    rows = table["condition"].astype(str).str.startswith("snr@").to_numpy()
    if not rows.any():
        raise ValueError("glmm: the psychometric table has no snr@ conditions (psychometric.snr_durations_ms)")
    sub = table.loc[rows, ["label", "group", "duration_ms", "snr_db"]].reset_index(drop=True)
    report = {"formula": "correct ~ log2_duration * snr_db + (1 | group), predictors centred",
              "method": "statsmodels BinomialBayesMixedGLM.fit_vb (mean-field variational Bayes, fe prior sd 2); "
                        "ci95 = posterior mean +/- 1.96 sd; interaction p two-sided from z = mean / sd",
              "conditions": sorted(table.loc[rows, "condition"].astype(str).unique()), "systems": {}}
    for system, pred in preds.items():
        trials = sub.assign(correct=(np.asarray(pred)[rows] == sub["label"].to_numpy()).astype(int))
        report["systems"][system] = {cls: fit_glmm(trials[trials["label"] == code].reset_index(drop=True), seed)
                                     for cls, code in (("speech", 1), ("nonspeech", 0))}
    return report
