"""An offline HTML error report: accuracy per category, and the worst errors to listen to.

One self-contained file: styles inline, every clip embedded as a 16-bit PCM WAV ``data:`` URI
in an ``<audio controls>`` element, every spectrogram as a PNG ``data:`` URI. No script, font,
stylesheet or image is fetched from anywhere, and the page's Content-Security-Policy allows
only inline styles and ``data:`` images and media, so a stray external reference would be
blocked even on a machine with internet. ``scripts/check_report_offline.sh`` loads it in
headless Chromium with the network refused and checks that every audio element loads.

Reproducible: the same inputs give the same bytes (no timestamps, sorted and fixed-precision
numbers, PNGs drawn at a fixed size and dpi without the ``Software`` tag, WAVs written by
scipy, which adds no chunk of its own). Written atomically.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.style
import numpy as np
import pandas as pd
import soundfile as sf
from matplotlib import colormaps
from matplotlib.figure import Figure
from scipy.io import wavfile

from qvad.common.atomic import write_text

CSP = "default-src 'none'; img-src data:; media-src data:; style-src 'unsafe-inline'"
SPECTROGRAM_SIZE_IN = (6.0, 2.2)
SPECTROGRAM_DPI = 100
SPECTROGRAM_DB_RANGE = (-100.0, 0.0)
"""Fixed colour range (dB re full scale), so spectrograms of different clips compare."""
SPECTROGRAM_LEVELS = 32
"""Colour steps (about 3 dB each): fewer colours keep each PNG near 70 kB instead of 130 kB."""
N_FFT, HOP = 512, 128

CATEGORY_COLUMNS = ("category", "system", "n", "n_speech", "n_nonspeech", "groups",
                    "accuracy", "accuracy_low", "accuracy_high")

STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f2f2f2; } td.l, th.l { text-align: left; }
.bar { position: relative; height: 0.7em; width: 8em; background: #eee; margin-top: 0.2em; }
.bar span { position: absolute; top: 0; height: 100%; }
.bar .ci { background: #9ecae1; } .bar .est { width: 2px; background: #08519c; }
.err { border: 1px solid #ddd; padding: 0.6em 0.9em; margin: 1em 0; }
.err h3 { margin: 0 0 0.4em 0; font-size: 1em; }
.err dl { display: grid; grid-template-columns: repeat(3, max-content minmax(8em, auto)); gap: 0.1em 1em; margin: 0.4em 0; font-size: 0.9em; }
.err dt { color: #555; } .err dd { margin: 0; }
.err img { display: block; margin-top: 0.4em; }
.note { color: #555; font-size: 0.9em; }
""".strip()


def _fmt(value: object) -> str:
    """Stable text for a cell: integers as such, other floats at 4 decimals, '–' for missing."""
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{int(value)}" if value == int(value) else f"{value:.4f}"
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _esc(value: object) -> str:
    return html.escape(_fmt(value), quote=True)


def _read_mono(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    if x.shape[0] == 0:
        raise ValueError(f"{path}: no audio frames")
    return x.mean(axis=1), int(sr)


def wav_bytes(x: np.ndarray, sr: int) -> bytes:
    """16-bit PCM mono WAV (every browser plays it; half the size of float), deterministic."""
    pcm = np.round(np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0) * 32767).astype("<i2")
    buf = io.BytesIO()
    wavfile.write(buf, sr, pcm)
    return buf.getvalue()


def spectrogram_png(x: np.ndarray, sr: int) -> bytes:
    """Log-magnitude STFT (Hann, 512 / hop 128) as PNG bytes, fixed size, dpi and colour range."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < N_FFT:
        x = np.pad(x, (0, N_FFT - x.size))
    window = np.hanning(N_FFT)
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP] * window
    mag = np.abs(np.fft.rfft(frames, axis=1)).T / (window.sum() / 2)
    db = 20 * np.log10(np.maximum(mag, 1e-12))
    with matplotlib.style.context("default"):
        fig = Figure(figsize=SPECTROGRAM_SIZE_IN, dpi=SPECTROGRAM_DPI)
        fig.subplots_adjust(left=0.08, right=0.93, bottom=0.21, top=0.95)  # fixed: no layout engine
        ax = fig.add_subplot()
        cmap = colormaps["magma"].resampled(SPECTROGRAM_LEVELS)
        im = ax.imshow(db, origin="lower", aspect="auto", cmap=cmap, interpolation="nearest",
                       vmin=SPECTROGRAM_DB_RANGE[0], vmax=SPECTROGRAM_DB_RANGE[1],
                       extent=(0.0, x.size / sr, 0.0, sr / 2000))
        ax.set_xlabel("time (s)")
        ax.set_ylabel("kHz")
        fig.colorbar(im, ax=ax, label="dBFS", pad=0.01, fraction=0.04)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=SPECTROGRAM_DPI, metadata={"Software": None})
    return buf.getvalue()


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def _category_section(table: pd.DataFrame) -> str:
    missing = [c for c in CATEGORY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"category table lacks columns {missing}")
    systems = list(dict.fromkeys(table["system"].astype(str)))
    head = ("<tr><th class=l>category</th><th>n</th><th>speech</th><th>non-speech</th><th>groups</th>"
            + "".join(f"<th class=l>{html.escape(s)}: accuracy [95% CI]</th>" for s in systems) + "</tr>")
    rows = []
    for category, part in table.groupby("category", sort=True):
        first = part.iloc[0]
        cells = [f"<td class=l>{_esc(category)}</td>", f"<td>{_esc(int(first['n']))}</td>",
                 f"<td>{_esc(int(first['n_speech']))}</td>", f"<td>{_esc(int(first['n_nonspeech']))}</td>",
                 f"<td>{_esc(int(first['groups']))}</td>"]
        by_system = {str(r["system"]): r for _, r in part.iterrows()}
        for s in systems:
            r = by_system.get(s)
            if r is None:
                cells.append("<td class=l>–</td>")
                continue
            acc, low, high = (float(r[k]) for k in ("accuracy", "accuracy_low", "accuracy_high"))
            ci = f" [{low:.3f}, {high:.3f}]" if math.isfinite(low) and math.isfinite(high) else " [–]"
            bar = ""
            if math.isfinite(acc):
                ci_span = (f'<span class=ci style="left:{100 * low:.1f}%;width:{100 * (high - low):.1f}%">'
                           "</span>") if math.isfinite(low) and math.isfinite(high) else ""
                bar = (f'<div class=bar>{ci_span}<span class=est style="left:{100 * acc:.1f}%"></span>'
                       "</div>")
            cells.append(f"<td class=l>{acc:.3f}{ci}{bar}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n{head}\n" + "\n".join(rows) + "\n</table>"


def _verdict(row: pd.Series) -> str:
    """' : speech, model said nonspeech (0.97)' when the row has those columns."""
    if not {"label", "prediction"} <= set(row.index):
        return ""
    conf = f" ({_esc(row['confidence'])})" if "confidence" in row.index else ""
    return f": {_esc(row['label'])}, model said {_esc(row['prediction'])}{conf}"


def _error_section(errors: pd.DataFrame, audio_paths: Mapping[str, str | os.PathLike]) -> str:
    if "clip_id" not in errors.columns:
        raise ValueError("errors lacks column 'clip_id'")
    missing = [c for c in errors["clip_id"].astype(str) if c not in audio_paths]
    if missing:
        raise ValueError(f"no audio path for {len(missing)} listed error(s), e.g. {missing[:3]}")
    shown = [c for c in errors.columns if c not in ("rank", "clip_id")]
    blocks = []
    for i, (_, row) in enumerate(errors.iterrows(), start=1):
        clip_id = str(row["clip_id"])
        x, sr = _read_mono(audio_paths[clip_id])
        rank = row["rank"] if "rank" in errors.columns else i
        meta = "".join(f"<dt>{html.escape(c)}</dt><dd>{_esc(row[c])}</dd>" for c in shown)
        blocks.append(
            f'<div class=err id="err-{_esc(rank)}">\n'
            f"<h3>#{_esc(rank)} {html.escape(clip_id)}{_verdict(row)}</h3>\n"
            f"<dl>{meta}</dl>\n"
            f'<audio controls preload="metadata" data-clip-id="{html.escape(clip_id, quote=True)}" '
            f'data-duration-s="{x.size / sr:.3f}" src="{_data_uri("audio/wav", wav_bytes(x, sr))}"></audio>\n'
            f'<img alt="spectrogram of {html.escape(clip_id, quote=True)}" '
            f'src="{_data_uri("image/png", spectrogram_png(x, sr))}">\n'
            "</div>")
    return "\n".join(blocks) if blocks else "<p class=note>No errors listed.</p>"


def render_report(category_table: pd.DataFrame, errors: pd.DataFrame,
                  audio_paths: Mapping[str, str | os.PathLike], *, title: str = "qvad: error analysis",
                  notes: Sequence[str] = ()) -> str:
    """The report page as a string (see :func:`write_report`)."""
    notes_html = "".join(f"<p class=note>{html.escape(str(n))}</p>\n" for n in notes)
    return (
        "<!DOCTYPE html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{STYLE}\n</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{notes_html}"
        "<h2>Accuracy by source category (test split)</h2>\n"
        "<p class=note>95% intervals resample whole source groups; a category with one group has "
        "none. n counts clips; groups counts distinct speakers or sources.</p>\n"
        f"{_category_section(category_table)}\n"
        f"<h2>The model's most confident errors ({len(errors)})</h2>\n"
        "<p class=note>confidence: the probability the model gave its (wrong) answer; p_speech: its "
        "raw P(speech). Spectrograms share one colour scale (dB re full scale).</p>\n"
        f"{_error_section(errors, audio_paths)}\n"
        "</body>\n</html>\n")


def write_report(out_html: str | os.PathLike, category_table: pd.DataFrame, errors: pd.DataFrame,
                 audio_paths: Mapping[str, str | os.PathLike], *, title: str = "qvad: error analysis",
                 notes: Sequence[str] = ()) -> None:
    """Write the one-file offline report to ``out_html`` atomically.

    ``category_table``: :func:`qvad.analysis.error_analysis.accuracy_by_category`'s output.
    ``errors``: :func:`~qvad.analysis.error_analysis.most_confident_errors`'s output (any
    columns; ``clip_id`` required, ``rank`` used when present). ``audio_paths``: clip id ->
    audio file for every listed error (a missing one is an error). ``notes``: lines shown
    under the title (e.g. which VAD cleaned the labels).
    """
    write_text(Path(out_html), render_report(category_table, errors, audio_paths, title=title, notes=notes))
