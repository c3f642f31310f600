"""Tests for qvad.analysis.error_analysis and error_report: accuracy per category, worst errors, the report."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from qvad.analysis import error_analysis as ea
from qvad.analysis.error_report import write_report
from qvad.audio.io import write_wav

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- accuracy by category

def _frame() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """3 categories: 'music' (4 groups, 16 clips), 'speech:a:en' (2 groups), 'solo' (1 group)."""
    rows = []
    for g in range(4):
        rows += [("nonspeech", f"m{g}", "music")] * 4
    for g in range(2):
        rows += [("speech", f"s{g}", "speech:a:en")] * 5
    rows += [("speech", "solo0", "solo")] * 3
    df = pd.DataFrame(rows, columns=["label", "group", "category"])
    df["y"] = (df["label"] == "speech").astype(int)
    df["clip_id"] = [f"c{i:03d}" for i in range(len(df))]
    y = df["y"].to_numpy()
    model = y.copy()
    model[[0, 1, 5, 16]] = 1 - model[[0, 1, 5, 16]]  # music: 3 errors (groups m0, m1); speech: 1
    return df, {"model": model, "webrtc": np.ones(len(df), int)}


def test_accuracy_by_category_counts_and_intervals():
    df, preds = _frame()
    table = ea.accuracy_by_category(df, preds, n_boot=300, seed=1)
    assert list(table.columns) == ea.CATEGORY_TABLE_COLUMNS
    assert list(table["category"]) == ["music", "music", "solo", "solo", "speech:a:en", "speech:a:en"]
    assert list(table["system"]) == ["model", "webrtc"] * 3
    row = table.set_index(["category", "system"])
    music = row.loc[("music", "model")]
    assert (music["n"], music["groups"], music["correct"], music["n_nonspeech"]) == (16, 4, 13, 16)
    assert music["accuracy"] == pytest.approx(13 / 16)
    assert music["accuracy_low"] <= music["accuracy"] <= music["accuracy_high"]
    assert music["accuracy_low"] < music["accuracy_high"]
    assert row.loc[("music", "webrtc"), "accuracy"] == 0.0
    speech = row.loc[("speech:a:en", "model")]
    assert (speech["n"], speech["groups"], speech["correct"]) == (10, 2, 9)
    assert speech["accuracy_low"] <= 0.9 <= speech["accuracy_high"]
    solo = row.loc[("solo", "model")]  # one group: an interval would be fake-certain
    assert solo["groups"] == 1 and solo["accuracy"] == 1.0
    assert math.isnan(solo["accuracy_low"]) and math.isnan(solo["accuracy_high"])


def test_accuracy_by_category_is_deterministic_and_order_free():
    df, preds = _frame()
    a = ea.accuracy_by_category(df, preds, n_boot=200, seed=3)
    perm = np.random.default_rng(0).permutation(len(df))
    b = ea.accuracy_by_category(df.iloc[perm].reset_index(drop=True),
                                {k: v[perm] for k, v in preds.items()}, n_boot=200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    # a category's interval does not depend on which other categories are present
    keep = (df["category"] == "music").to_numpy()
    c = ea.accuracy_by_category(df[keep].reset_index(drop=True), {k: v[keep] for k, v in preds.items()},
                                n_boot=200, seed=3)
    pd.testing.assert_frame_equal(c, a[a["category"] == "music"].reset_index(drop=True))
    assert ea.accuracy_by_category(df, preds, n_boot=0)["accuracy_low"].isna().all()


def test_accuracy_by_category_checks_inputs():
    df, preds = _frame()
    with pytest.raises(ValueError, match="category"):
        ea.accuracy_by_category(df.drop(columns="category"), preds, n_boot=10)
    with pytest.raises(ValueError, match="shape"):
        ea.accuracy_by_category(df, {"model": preds["model"][:-1]}, n_boot=10)
    with pytest.raises(ValueError, match="disagree"):
        ea.accuracy_by_category(df.assign(y=1 - df["y"]), preds, n_boot=10)
    missing = df.assign(category=df["category"].where(df.index > 2, None))
    assert "unknown" in set(ea.accuracy_by_category(missing, preds, n_boot=0)["category"])


def test_category_metrics_and_plot_tables():
    df, preds = _frame()
    table = ea.accuracy_by_category(df, preds, n_boot=100)
    metrics = ea.category_metrics(table)
    json.dumps(metrics, allow_nan=False)  # write_json refuses NaN
    assert metrics["solo"]["systems"]["model"]["accuracy_ci95"] is None
    assert metrics["music"]["groups"] == 4 and len(metrics["music"]["systems"]["model"]["accuracy_ci95"]) == 2
    wide = ea.category_accuracy_wide(table)
    assert list(wide.columns) == ["category", "model", "webrtc"] and len(wide) == 3
    per = ea.category_accuracy_per_system(table)
    assert list(per) == ["model", "webrtc"]
    assert list(per["model"].columns) == ["category", "accuracy", "accuracy_low", "accuracy_high", "n", "groups"]


# ----------------------------------------------------------------------------- most confident errors

def _errors_frame():
    df = pd.DataFrame({
        "clip_id": ["e", "d", "c", "b", "a", "f"],
        "label": ["speech", "nonspeech", "nonspeech", "speech", "nonspeech", "speech"],
        "source_id": list("ABCDEF"), "package": "pkg", "group": list("gghhij"),
        "category": ["speech:x:en", "music", "music", "speech:x:en", "ambience", "speech:x:en"],
        "duration_ms": [200, 400, 800, 200, 400, 800], "snr_db": [0, 5, -5, 10, 0, 0],
    })
    df["y"] = (df["label"] == "speech").astype(int)
    # e: speech, said no at 0.1 (conf 0.9); d: nonspeech, said yes at 0.9 (0.9, tie with e);
    # c: nonspeech, yes at 0.7; b: speech, no at 0.4 (0.6); a, f correct
    p = np.array([0.1, 0.9, 0.7, 0.4, 0.2, 0.8])
    preds = {"model": (p > 0.5).astype(int), "webrtc": np.array([1, 1, 0, 0, 0, 1]),
             "silero": np.zeros(6, int)}
    return df, p, preds


def test_most_confident_errors_order_and_columns():
    df, p, preds = _errors_frame()
    out = ea.most_confident_errors(df, p, preds, n=10)
    assert list(out["clip_id"]) == ["d", "e", "c", "b"]  # 0.9 (tie: by clip id), 0.9, 0.7, 0.6
    assert list(out["rank"]) == [1, 2, 3, 4]
    assert out["confidence"].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.6])
    assert out["p_speech"].tolist() == pytest.approx([0.9, 0.1, 0.7, 0.4])
    assert list(out["prediction"]) == ["speech", "nonspeech", "speech", "nonspeech"]
    assert list(out["webrtc_prediction"]) == ["speech", "speech", "nonspeech", "nonspeech"]
    assert list(out["silero_prediction"]) == ["nonspeech"] * 4
    for col in ("source_id", "package", "category", "duration_ms", "snr_db", "label"):
        assert col in out.columns
    assert "model_prediction" not in out.columns
    assert list(ea.most_confident_errors(df, p, preds, n=2)["clip_id"]) == ["d", "e"]
    assert ea.most_confident_errors(df, p, preds, n=0).empty
    perm = [5, 3, 1, 0, 4, 2]
    shuffled = ea.most_confident_errors(df.iloc[perm].reset_index(drop=True), p[perm],
                                        {k: v[perm] for k, v in preds.items()}, n=10)
    pd.testing.assert_frame_equal(shuffled, out)


def test_most_confident_errors_checks_inputs():
    df, p, preds = _errors_frame()
    with pytest.raises(ValueError, match="snr_db"):
        ea.most_confident_errors(df.drop(columns="snr_db"), p, preds, 3)
    with pytest.raises(ValueError, match="probabilities"):
        ea.most_confident_errors(df, p * 2, preds, 3)
    with pytest.raises(ValueError, match="model"):
        ea.most_confident_errors(df, p, {"webrtc": preds["webrtc"]}, 3)


# ----------------------------------------------------------------------------- the report

@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory):
    """Three 2 s 16 kHz float WAVs like data/normalized's, their errors and a category table."""
    folder = tmp_path_factory.mktemp("clips")
    df, p, preds = _errors_frame()
    errors = ea.most_confident_errors(df, p, preds, n=3)
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    paths = {}
    for i, clip in enumerate(errors["clip_id"]):
        x = 0.05 * rng.standard_normal(32000) + 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) * (t > 0.8) * (t < 1.2)
        paths[clip] = folder / f"{clip}.wav"
        write_wav(paths[clip], x.astype(np.float32))
    fdf, fpreds = _frame()
    table = ea.accuracy_by_category(fdf, fpreds, n_boot=100)
    return table, errors, paths


@pytest.fixture(scope="module")
def report(report_inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "errors.html"
    write_report(out, *report_inputs, notes=["webrtc: used in label hygiene"])
    return out


def test_report_is_self_contained_and_deterministic(report, report_inputs, tmp_path):
    table, errors, paths = report_inputs
    page = report.read_text(encoding="utf-8")
    again = tmp_path / "again.html"
    write_report(again, table, errors, paths, notes=["webrtc: used in label hygiene"])
    assert again.read_bytes() == report.read_bytes()
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert "<script" not in page and "<link" not in page
    audios = re.findall(r"<audio [^>]*>", page)
    assert len(audios) == len(errors) == 3
    for clip, tag in zip(errors["clip_id"], audios):
        assert f'data-clip-id="{clip}"' in tag and "controls" in tag
        src = re.search(r'src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', tag)
        assert src, tag[:200]
        x, sr = sf.read(io.BytesIO(base64.b64decode(src.group(1))), dtype="float32")
        ref, _ = sf.read(str(paths[clip]), dtype="float32")
        assert sr == 16000 and x.shape == ref.shape == (32000,)
        assert np.max(np.abs(x - ref)) < 1e-4  # 16-bit PCM of the same samples
    pngs = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) == 3 and all(base64.b64decode(s)[:8] == b"\x89PNG\r\n\x1a\n" for s in pngs)
    for category in ("music", "speech:a:en", "solo"):
        assert f"<td class=l>{category}</td>" in page
    assert "0.812 [" in page  # music, model: 13/16 with its interval


def test_report_needs_every_clip(report_inputs, tmp_path):
    table, errors, paths = report_inputs
    with pytest.raises(ValueError, match="no audio path"):
        write_report(tmp_path / "r.html", table, errors, {k: v for k, v in list(paths.items())[1:]})
    assert not (tmp_path / "r.html").exists()


CHROMIUM = os.environ.get("CHROMIUM", "chromium")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="chromium not installed (apt-get install -y chromium)")
def test_report_plays_offline_in_chromium(report, tmp_path):
    script = ROOT / "scripts" / "check_report_offline.sh"
    png = tmp_path / "report.png"
    res = subprocess.run(["bash", str(script), str(report), str(png)],
                         check=False, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 of 3 audio elements loaded" in res.stdout
    assert png.stat().st_size > 0
    # a broken clip must fail the check (the checker is not a rubber stamp)
    page = report.read_text(encoding="utf-8")
    start = page.index("data:audio/wav;base64,") + len("data:audio/wav;base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(page[:start] + "AAAA" + page[page.index('"', start):], encoding="utf-8")
    res = subprocess.run(["bash", str(script), str(broken), str(tmp_path / "broken.png")],
                         check=False, capture_output=True, text=True, timeout=180)
    assert res.returncode == 1 and "2 of 3 audio elements loaded" in res.stdout, res.stdout + res.stderr
