"""Static PNG figures for the evaluation report: same data -> same bytes.

Figures are built on ``matplotlib.figure.Figure`` (Agg canvas, no pyplot state), under
matplotlib's default style whatever the caller's rcParams, at a fixed dpi and without
the ``Software`` PNG tag, so DVC sees an unchanged file when the data are unchanged and
a rerun never shows up as a spurious diff. Each writer replaces its output atomically.

Input frames are tidy, one row per clip or per point; each writer documents its columns
and raises ``ValueError`` naming any that are missing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator, Sequence

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from qvad.common.atomic import atomic_path
from qvad.analysis.calibration import expected_calibration_error, reliability_table

DPI = 120
CLASS_NAMES = ("non-speech", "speech")
Z95 = 1.959963984540054
"""Two-sided 95 % normal quantile, for Wilson intervals."""

_AXES = {
    "duration_ms": ("clip duration (ms)", True),
    "snr_db": ("SNR (dB)", False),
}
"""Psychometric x variables: axis label and whether the axis is logarithmic."""


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing columns {missing}; got {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{what}: no rows to plot")


@contextmanager
def _figure(path: str | os.PathLike, figsize: tuple[float, float]) -> Iterator[Figure]:
    """Yield a figure under the default style; save it to ``path`` atomically when the block ends."""
    with matplotlib.style.context("default"):
        fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
        yield fig
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})


def _system_colors(systems: Sequence[str]) -> dict[str, str]:
    """A fixed colour per system, in the order given, so the model keeps its colour across figures."""
    return {s: f"C{i % 10}" for i, s in enumerate(systems)}


def _ordered(values: pd.Series) -> list:
    """Distinct values in order of first appearance (the caller's order, e.g. model first)."""
    return list(pd.unique(values))


def wilson_interval(k: np.ndarray, n: np.ndarray, z: float = Z95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes in n trials; unlike the normal interval it stays in [0, 1]
    and is not zero-width at 0 % or 100 %, which small test cells often hit."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    if (n <= 0).any() or (k < 0).any() or (k > n).any():
        raise ValueError("wilson_interval needs n > 0 and 0 <= k <= n")
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z * np.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n)) / denom
    # The interval holds p exactly; in floating point centre - half lands 1e-17 above 0 at k = 0
    # (n = 3, 6, 7...) and centre + half below 1 at k = n, and error bars then get a negative length.
    return np.clip(np.minimum(centre - half, p), 0.0, 1.0), np.clip(np.maximum(centre + half, p), 0.0, 1.0)


def confusion_matrix_png(df: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> None:
    """Write a 2x2 confusion matrix of counts and row percentages.

    Columns: ``label`` and ``pred``, each bool or 0/1 (1 = speech), one row per clip.
    Row percentages (recall per true class) are shown next to counts because the two
    classes need not be the same size.
    """
    _require(df, ["label", "pred"], "confusion_matrix_png")
    y, p = df["label"].to_numpy().astype(int), df["pred"].to_numpy().astype(int)
    counts = np.array([[np.sum((y == t) & (p == q)) for q in (0, 1)] for t in (0, 1)])
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    with _figure(path, (4.2, 3.8)) as fig:
        ax = fig.add_subplot()
        image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for t in (0, 1):
            for q in (0, 1):
                ax.text(q, t, f"{counts[t, q]}\n{100 * share[t, q]:.1f} %", ha="center", va="center",
                        color="white" if share[t, q] > 0.5 else "black")
        ax.set_xticks([0, 1], CLASS_NAMES)
        ax.set_yticks([0, 1], CLASS_NAMES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title or f"n = {counts.sum()}")
        fig.colorbar(image, ax=ax, label="share of true class")


def accuracy_vs_snr_png(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write accuracy against SNR, one panel per system and one line per clip duration.

    Columns: ``system`` (model or baseline name; panel order = first appearance),
    ``duration_ms``, ``snr_db`` (finite) and ``correct`` (bool or 0/1), one row per clip.
    Small multiples with a shared y axis, because one panel with systems x durations
    lines is unreadable, while the per-system panels compare at a glance.
    """
    _require(df, ["system", "duration_ms", "snr_db", "correct"], "accuracy_vs_snr_png")
    if not np.isfinite(df["snr_db"].to_numpy(dtype=np.float64)).all():
        raise ValueError("accuracy_vs_snr_png: snr_db must be finite")
    systems = _ordered(df["system"])
    durations = sorted(df["duration_ms"].unique())
    colors = {d: matplotlib.colormaps["viridis"](i / max(len(durations) - 1, 1))
              for i, d in enumerate(durations)}
    with _figure(path, (3.2 * len(systems) + 0.6, 3.4)) as fig:
        axes = fig.subplots(1, len(systems), sharey=True, squeeze=False)[0]
        for ax, system in zip(axes, systems):
            for d in durations:
                cell = df[(df["system"] == system) & (df["duration_ms"] == d)]
                if not cell.empty:
                    acc = cell.groupby("snr_db", sort=True)["correct"].mean()
                    ax.plot(acc.index, acc.to_numpy(dtype=np.float64), marker="o", ms=3,
                            color=colors[d], label=f"{d:g} ms")
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_title(str(system))
            ax.set_xlabel("SNR (dB)")
            ax.grid(alpha=0.3)
        axes[0].set_ylim(0.0, 1.02)
        axes[0].set_ylabel("accuracy")
        axes[-1].legend(title="duration", fontsize="small", loc="lower right")


def reliability_png(df: pd.DataFrame, path: str | os.PathLike, *, n_bins: int,
                    temperature: float | None = None) -> None:
    """Write a reliability diagram before and after temperature scaling, with bin counts below.

    Columns: ``label`` (bool or 0/1, 1 = speech), ``prob_raw`` and ``prob_calibrated``
    (P(speech) before and after scaling), one row per clip. The bins and the ECE in the legend
    are exactly those of metrics/eval.json and plots/reliability_*.csv: top-label confidence
    ``max(p, 1 - p)`` in ``n_bins`` equal bins over [0.5, 1] (qvad.analysis.calibration). The
    count panel shows how much each point rests on: a far-off point over 3 clips is noise.
    ``temperature`` (optional) is shown in the title.
    """
    _require(df, ["label", "prob_raw", "prob_calibrated"], "reliability_png")
    if n_bins < 2:
        raise ValueError("n_bins must be at least 2")
    label = df["label"].to_numpy().astype(int)
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = 0.4 * (edges[1] - edges[0])
    with _figure(path, (5.0, 6.0)) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        top.plot([0.5, 1], [0.5, 1], color="grey", lw=0.8, ls=":", label="perfect calibration")
        for i, (name, col) in enumerate((("before", "prob_raw"), ("after", "prob_calibrated"))):
            prob = df[col].to_numpy(dtype=np.float64)
            table = reliability_table(prob, label, n_bins)
            ece = expected_calibration_error(prob, label, n_bins)
            top.plot(table["confidence"], table["accuracy"], marker="o", color=f"C{i}",
                     label=f"{name} (ECE {ece:.3f})")
            bottom.bar(centres + (i - 0.5) * width, table["count"], width=width, color=f"C{i}", label=name)
        top.set_ylabel("accuracy of the predicted class")
        top.set_xlim(0.5, 1.0)
        top.set_ylim(0.0, 1.0)
        top.legend(loc="upper left", fontsize="small")
        suffix = f", T = {temperature:.3g}" if temperature is not None else ""
        top.set_title(f"reliability before / after temperature scaling{suffix}")
        bottom.set_xlabel("confidence of the predicted class, max(P, 1 - P)")
        bottom.set_ylabel("clips per bin")
        top.grid(alpha=0.3)


def _threshold_xerr(row: pd.Series, x_range: tuple[float, float]) -> tuple[list[list[float]], list[bool]]:
    """Error-bar arms of one threshold and which of them are censored (no finite CI limit).

    A censored limit lies beyond the tested range: its arm runs to the range edge and gets
    an arrow-head, rather than disappearing and making the interval look tight.
    """
    limits = [row.get("ci_low", np.nan), row.get("ci_high", np.nan)]
    censored = [not np.isfinite(v) for v in limits]
    low = x_range[0] if censored[0] else limits[0]
    high = x_range[1] if censored[1] else limits[1]
    return [[max(row["threshold"] - low, 0.0)], [max(high - row["threshold"], 0.0)]], censored


def _draw_thresholds(ax: Axes, color: str, thresholds: pd.DataFrame, x_range: tuple[float, float]) -> None:
    """A diamond at (threshold, target) with its CI, and a dashed line down to the x axis."""
    for _, row in thresholds[np.isfinite(thresholds["threshold"])].iterrows():
        xerr, censored = _threshold_xerr(row, x_range)
        ax.errorbar([row["threshold"]], [row["target"]], xerr=xerr, fmt="D", ms=6, color=color,
                    mec="black", mew=0.6, capsize=3, lw=1.2)
        for edge, marker, is_censored in zip(x_range, ("<", ">"), censored):
            if is_censored:
                ax.plot([edge], [row["target"]], marker=marker, ms=6, color=color)
        ax.axvline(row["threshold"], color=color, lw=0.8, ls="--", alpha=0.7)


def _draw_system(ax: Axes, x: str, color: str, points: pd.DataFrame, curve: pd.DataFrame,
                 thresholds: pd.DataFrame) -> None:
    """One system's fitted curve (and band), its data points with CIs and its threshold markers."""
    curve = curve.sort_values(x)
    if {"p_low", "p_high"} <= set(curve.columns):
        ax.fill_between(curve[x], curve["p_low"], curve["p_high"], color=color, alpha=0.18, lw=0)
    ax.plot(curve[x], curve["p"], color=color, lw=1.6, label=str(points["system"].iloc[0]))
    k, n = points["k"].to_numpy(dtype=np.float64), points["n"].to_numpy(dtype=np.float64)
    low, high = wilson_interval(k, n)
    rate = k / n
    ax.errorbar(points[x], rate, yerr=[rate - low, high - rate], fmt="o", ms=3.5, color=color,
                capsize=2, lw=0.9)
    _draw_thresholds(ax, color, thresholds, (float(points[x].min()), float(points[x].max())))


def psychometric_png(points: pd.DataFrame, curves: pd.DataFrame, thresholds: pd.DataFrame,
                     path: str | os.PathLike, *, x: str, y_label: str = "P(correct)",
                     chance: float | None = 0.5) -> None:
    """Write psychometric curves for the model and the baselines on one axis.

    ``x`` names the stimulus column shared by ``points`` and ``curves``: ``duration_ms``
    (log axis, since duration acts multiplicatively) or ``snr_db`` (linear).

    - ``points``: ``system``, ``x``, ``k`` (successes; may be fractional, e.g. n x balanced
      accuracy), ``n`` (trials); drawn with 95 % Wilson intervals computed here.
    - ``curves``: ``system``, ``x``, ``p`` (fitted curve on a fine grid), optional
      ``p_low``/``p_high`` (a band, drawn when present).
    - ``thresholds``: ``system``, ``target`` (performance level), ``threshold`` (x where the
      curve reaches it; NaN = censored, no marker), optional ``ci_low``/``ci_high``: the
      columns of ``qvad.analysis.psychometric_fit.bootstrap_thresholds`` plus ``system``. A NaN CI
      limit is drawn to the edge of the tested range with an arrow-head.

    Systems are ordered and coloured by first appearance in ``points``.
    """
    if x not in _AXES:
        raise ValueError(f"psychometric_png: x must be one of {list(_AXES)}, got {x!r}")
    _require(points, ["system", x, "k", "n"], "psychometric_png points")
    _require(curves, ["system", x, "p"], "psychometric_png curves")
    _require(thresholds, ["system", "threshold", "target"], "psychometric_png thresholds")
    x_label, log_x = _AXES[x]
    systems = _ordered(points["system"])
    colors = _system_colors(systems)
    with _figure(path, (6.4, 4.4)) as fig:
        ax = fig.add_subplot()
        for system in systems:
            _draw_system(ax, x, colors[system], points[points["system"] == system],
                         curves[curves["system"] == system], thresholds[thresholds["system"] == system])
        if chance is not None:
            ax.axhline(chance, color="grey", lw=0.8, ls=":")
        if log_x:
            ax.set_xscale("log")
            ticks = np.sort(points[x].unique())
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.minorticks_off()
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.set_ylim(0.0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
