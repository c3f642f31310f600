"""The raw manifest: one schema for every data source, so later stages never care where audio came from."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from qvad import SAMPLE_RATE
from qvad.audio.io import AudioError, load_audio, write_wav

log = logging.getLogger(__name__)

LABELS = ("speech", "nonspeech")

RAW_COLUMNS = [
    "id",            # stable id, unique in the manifest; also the decoded file's stem
    "path",          # decoded 16 kHz mono float WAV, relative to the repo root
    "label",         # speech | nonspeech
    "group",         # speaker (speech) or sound source (non-speech): the unit of splitting
    "package",       # Debian package, dataset name or 'local'
    "version",       # package / dataset version
    "licence",
    "source_path",   # original file, relative to its package or dataset root
    "orig_sr",       # sample rate of the original file
    "duration_s",    # duration of the decoded audio
    "audio_md5",     # md5 of the decoded samples: finds duplicates under other names
    "category",      # what the source is (music, sound effect, speech:<corpus>:<lang>...): qvad.data.categories
]

FAILURE_COLUMNS = ["package", "source_path", "reason"]


@dataclass(frozen=True)
class RawItem:
    """One file (or one region of a file) a data source wants decoded into data/raw."""

    id: str
    src: str                    # absolute path of the original file
    source_path: str            # path shown in the manifest (relative to its package / dataset)
    label: str
    group: str
    package: str
    version: str
    licence: str
    start_s: float = 0.0
    end_s: float | None = None  # None: to the end (capped by max_seconds)
    category: str = "unknown"   # qvad.data.categories; "unknown" is never replaced by a guess


def samples_md5(x: np.ndarray) -> str:
    """md5 of float32 samples: equal for byte-identical audio, whatever the file name."""
    return hashlib.md5(np.ascontiguousarray(x, dtype=np.float32).tobytes()).hexdigest()


def _decode_one(args: tuple[RawItem, str, float]) -> dict:
    item, out_dir, max_seconds = args
    if item.label not in LABELS:
        return {"failure": f"label {item.label!r} not in {LABELS}", "item": item}
    want = max_seconds if item.end_s is None else min(max_seconds, item.end_s - item.start_s)
    try:
        x, sr = load_audio(item.src, max_seconds=want, start_seconds=item.start_s)
    except AudioError as exc:
        return {"failure": exc.reason, "item": item}
    if x.size == 0 or float(np.max(np.abs(x))) == 0.0:
        return {"failure": "region empty or silent", "item": item}
    rel = Path(out_dir) / f"{item.id}.wav"
    write_wav(rel, x)
    row = {k: v for k, v in asdict(item).items() if k in RAW_COLUMNS}
    row.update(path=rel.as_posix(), orig_sr=sr, duration_s=round(x.size / SAMPLE_RATE, 6),
               audio_md5=samples_md5(x))
    return {"row": row}


def decode_items(items: list[RawItem], out_dir: str | os.PathLike, max_seconds: float,
                 workers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Decode every item to ``out_dir/<id>.wav``; return (manifest, failures).

    A bad file never stops the run: it lands in ``failures`` with its reason, so the
    counts in the metrics show exactly what was dropped and why.
    """
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise ValueError(f"duplicate manifest id {dup!r}: ids must be unique")
    workers = workers or min(os.cpu_count() or 1, 8)
    jobs = [(it, str(out_dir), max_seconds) for it in items]
    rows, failures = [], []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for res in tqdm(pool.map(_decode_one, jobs, chunksize=16), total=len(jobs), desc="decode"):
            if "row" in res:
                rows.append(res["row"])
            else:
                it = res["item"]
                log.warning("skipped %s (%s): %s", it.source_path, it.package, res["failure"])
                failures.append({"package": it.package, "source_path": it.source_path,
                                 "reason": res["failure"]})
    manifest = pd.DataFrame(rows, columns=RAW_COLUMNS).sort_values("id").reset_index(drop=True)
    return manifest, pd.DataFrame(failures, columns=FAILURE_COLUMNS)


def read_manifest(path: str | os.PathLike, columns: list[str] = RAW_COLUMNS) -> pd.DataFrame:
    """Read a manifest and check its schema, naming the file and the missing columns."""
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df
