"""Error analysis on the test split: accuracy per source category, and the most confident errors.

Input is the evaluate stage's test frame, one row per clip, with at least ``clip_id``,
``label`` ('speech' / 'nonspeech'), ``y`` (1 / 0), ``group`` (source group, the unit of the
bootstrap) and ``category`` (from the manifest, :mod:`qvad.data.categories`). Predictions
are per system (``{"model": 0/1 array, "webrtc": ..., "silero": ...}``), aligned with the
frame's rows.

Intervals resample whole source groups (:func:`qvad.analysis.bootstrap.group_bootstrap_ci`):
a category often holds few groups (one speaker, one language), and its clips are correlated.
A category with a single group gets no interval (NaN): resampling one group always returns
it, so the interval would have zero width and say nothing about other speakers or sources.
Every system uses the same resamples within a category, so their intervals are comparable.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from qvad.analysis.bootstrap import group_bootstrap_ci
from qvad.analysis.metrics import accuracy

UNKNOWN = "unknown"

CATEGORY_TABLE_COLUMNS = ["category", "system", "n", "n_speech", "n_nonspeech", "groups", "correct",
                          "accuracy", "accuracy_low", "accuracy_high"]

ERROR_REQUIRED = ("clip_id", "label", "y", "category", "source_id", "duration_ms", "snr_db")
ERROR_CONTEXT = ("source_id", "package", "group", "category", "label", "duration_ms", "snr_db",
                 "band", "orig_sr", "noise_type", "path")
"""Columns copied into the error list, in this order, when the frame has them."""


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: frame lacks columns {missing}; has {list(frame.columns)}")


def _check_preds(frame: pd.DataFrame, preds: Mapping[str, object]) -> dict[str, np.ndarray]:
    if not preds:
        raise ValueError("preds is empty: give at least one system")
    out = {}
    for name, pred in preds.items():
        arr = np.asarray(pred)
        if arr.shape != (len(frame),):
            raise ValueError(f"preds[{name!r}] has shape {arr.shape}, frame has {len(frame)} rows")
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"preds[{name!r}] must hold only 0 and 1")
        out[name] = arr.astype(np.int64)
    return out


def _y(frame: pd.DataFrame) -> np.ndarray:
    y = frame["y"].to_numpy()
    if not np.isin(y, (0, 1)).all():
        raise ValueError("column y must hold only 0 and 1")
    label_y = (frame["label"] == "speech").to_numpy().astype(np.int64)
    if not (label_y == y).all():
        raise ValueError("columns label and y disagree (y must be 1 exactly where label is 'speech')")
    return y.astype(np.int64)


def categories_of(frame: pd.DataFrame, column: str = "category") -> pd.Series:
    """The category column as strings, missing or empty cells as ``unknown``."""
    cats = frame[column].astype("object")
    cats = cats.where(cats.notna(), UNKNOWN).astype(str).str.strip()
    return cats.where(cats != "", UNKNOWN)


def category_seed(seed: int, category: str) -> int:
    """Bootstrap seed of one category: fixed by the run's seed and the category's name alone,
    so adding a category elsewhere never changes another category's interval."""
    state = np.random.SeedSequence([int(seed), zlib.crc32(category.encode("utf-8"))])
    return int(state.generate_state(1)[0])


def accuracy_by_category(frame: pd.DataFrame, preds: Mapping[str, object], n_boot: int = 2000,
                         seed: int = 0, *, alpha: float = 0.05, column: str = "category") -> pd.DataFrame:
    """Accuracy of every system per category, with its group-bootstrap ``1 - alpha`` interval.

    One row per (category, system): categories sorted by name, systems in the order of
    ``preds``. Columns :data:`CATEGORY_TABLE_COLUMNS` (``groups`` is the number of distinct
    source groups; ``accuracy_low`` / ``accuracy_high`` NaN when ``n_boot`` is 0 or the
    category has a single group). ``column`` picks another category column (e.g. a coarser one).
    """
    _require(frame, ("label", "y", "group", column), "accuracy_by_category")
    if frame.empty:
        raise ValueError("accuracy_by_category: frame is empty")
    y = _y(frame)
    preds = _check_preds(frame, preds)
    cats = categories_of(frame, column).to_numpy()
    groups = frame["group"].astype(str).to_numpy()
    rows = []
    for category in sorted(set(cats)):
        idx = np.flatnonzero(cats == category)
        yc, gc = y[idx], groups[idx]
        n_groups = len(set(gc))
        cat_seed = category_seed(seed, category)
        for system, pred in preds.items():
            pc = pred[idx]
            low = high = math.nan
            if n_boot > 0 and n_groups > 1:
                ci = group_bootstrap_ci(accuracy, yc, pc, gc, n_boot=n_boot, seed=cat_seed, alpha=alpha)
                low, high = ci.low, ci.high
            rows.append({"category": category, "system": system, "n": len(idx),
                         "n_speech": int(yc.sum()), "n_nonspeech": int(len(idx) - yc.sum()),
                         "groups": n_groups, "correct": int((yc == pc).sum()),
                         "accuracy": accuracy(yc, pc), "accuracy_low": low, "accuracy_high": high})
    return pd.DataFrame(rows, columns=CATEGORY_TABLE_COLUMNS)


def _round(value: float, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def category_metrics(table: pd.DataFrame) -> dict:
    """The table of :func:`accuracy_by_category` as JSON-ready metrics (no NaN: null instead).

    ``{category: {"n", "n_speech", "n_nonspeech", "groups",
                  "systems": {system: {"accuracy", "accuracy_ci95": [low, high] | null}}}}``
    """
    out: dict = {}
    for category, rows in table.groupby("category", sort=True):
        first = rows.iloc[0]
        systems = {}
        for _, r in rows.iterrows():
            low, high = _round(r["accuracy_low"]), _round(r["accuracy_high"])
            systems[str(r["system"])] = {"accuracy": _round(r["accuracy"]),
                                         "accuracy_ci95": None if low is None else [low, high]}
        out[str(category)] = {"n": int(first["n"]), "n_speech": int(first["n_speech"]),
                              "n_nonspeech": int(first["n_nonspeech"]), "groups": int(first["groups"]),
                              "systems": systems}
    return out


def category_accuracy_wide(table: pd.DataFrame, value: str = "accuracy") -> pd.DataFrame:
    """Wide table for a DVC plot: ``category`` and one column per system (in table order)."""
    systems = list(dict.fromkeys(table["system"]))
    wide = table.pivot(index="category", columns="system", values=value)
    return wide.reset_index()[["category", *systems]].rename_axis(columns=None)


def category_accuracy_per_system(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One tidy table per system (``category, accuracy, accuracy_low, accuracy_high, n, groups``):
    one CSV per system lets DVC's ``bar_horizontal`` template draw one panel per system."""
    cols = ["category", "accuracy", "accuracy_low", "accuracy_high", "n", "groups"]
    return {str(system): rows[cols].reset_index(drop=True)
            for system, rows in table.groupby("system", sort=False)}


def _prediction_names(pred: np.ndarray) -> np.ndarray:
    return np.where(pred == 1, "speech", "nonspeech")


def most_confident_errors(frame: pd.DataFrame, p_speech: object, preds: Mapping[str, object], n: int,
                          *, model: str = "model") -> pd.DataFrame:
    """The ``n`` errors of ``model`` it was most sure of, most confident first.

    Confidence of an answer is the probability the model gave it: ``p_speech`` for a "speech"
    answer, ``1 - p_speech`` for "nonspeech". Ties are broken by ``clip_id`` (ascending), so
    the list is the same whatever the row order. Columns: ``rank`` (1 = most confident),
    ``clip_id``, the context columns of :data:`ERROR_CONTEXT` the frame has, ``p_speech``,
    ``prediction`` and ``confidence`` (the model's), and ``<system>_prediction`` for every
    other system in ``preds``.
    """
    _require(frame, ERROR_REQUIRED, "most_confident_errors")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if model not in preds:
        raise ValueError(f"preds has no {model!r} entry; has {list(preds)}")
    y = _y(frame)
    preds = _check_preds(frame, preds)
    p = np.asarray(p_speech, dtype=float)
    if p.shape != (len(frame),) or not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError(f"p_speech must be {len(frame)} probabilities in [0, 1]")
    if frame["clip_id"].duplicated().any():
        raise ValueError("clip_id is not unique in frame")
    pred = preds[model]
    confidence = np.where(pred == 1, p, 1.0 - p)
    wrong = np.flatnonzero(pred != y)
    clip_ids = frame["clip_id"].astype(str).to_numpy()
    order = wrong[np.lexsort((clip_ids[wrong], -confidence[wrong]))][:n]
    context = [c for c in ERROR_CONTEXT if c in frame.columns]
    out = frame.iloc[order][["clip_id", *context]].reset_index(drop=True)
    out["category"] = categories_of(frame).to_numpy()[order]
    out.insert(0, "rank", np.arange(1, len(order) + 1))
    out["p_speech"] = p[order]
    out["prediction"] = _prediction_names(pred[order])
    out["confidence"] = confidence[order]
    for name, other in preds.items():
        if name != model:
            out[f"{name}_prediction"] = _prediction_names(other[order])
    return out
