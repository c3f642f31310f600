"""The download stage: decode the chosen data source into data/raw/ (16 kHz mono WAV + manifest)."""

from __future__ import annotations

import logging
import random
import shutil
from pathlib import Path

import pandas as pd

from qvad.common.atomic import write_csv, write_json
from qvad.data.sources.builtin import collect_builtin
from qvad.data.sources.local import collect_local
from qvad.data.manifest import decode_items
from qvad.data.sources.public import collect_noise_musan, collect_public
from qvad.common.params import choice, get, require

OUT = Path("data/raw")


def _subsample(items: list, per_package: int | None, seed: int) -> list:
    """Keep at most ``per_package`` items per package, chosen by seed (tiny test corpora)."""
    if per_package is None:
        return items
    by_pkg: dict[str, list] = {}
    for it in items:
        by_pkg.setdefault(it.package, []).append(it)
    rng = random.Random(seed)
    return sorted((it for group in by_pkg.values() for it in rng.sample(group, min(per_package, len(group)))),
                  key=lambda it: it.id)


def download(params: dict) -> None:
    """Run the download stage with ``params`` (params.yaml as a dict)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    source = choice(params, "data.source", ("builtin", "local", "public"))
    cache = Path(get(params, "data.cache_dir")).expanduser()
    max_s = float(get(params, "data.max_seconds_per_file"))
    require(max_s > 0, "data.max_seconds_per_file", "must be > 0")
    per_pkg = get(params, "data.max_files_per_package")
    require(per_pkg is None or (isinstance(per_pkg, int) and per_pkg > 0), "data.max_files_per_package",
            "must be null or a positive integer")
    excluded: list[dict] = []
    if source == "builtin":
        items, excluded = collect_builtin(list(get(params, "data.packages")), cache)
    elif source == "local":
        require(get(params, "data.local_dir") is not None, "data.local_dir", "required when data.source=local")
        items = collect_local(get(params, "data.local_dir"))
    else:
        items = collect_public(params["data"], cache)
    items += collect_noise_musan(params["data"], cache)
    items = _subsample(items, per_pkg, int(params["seed"]))

    if OUT.exists():
        shutil.rmtree(OUT)
    manifest, failures = decode_items(items, OUT / "audio", max_s)
    write_csv(OUT / "manifest.csv", manifest)
    skipped = pd.concat([failures.assign(kind="decode_failed"),
                         pd.DataFrame(excluded, columns=failures.columns).assign(kind="excluded_by_rule")])
    write_csv(OUT / "skipped.csv", skipped.sort_values(["package", "source_path"]))
    write_json("metrics/download.json", summarize(manifest, skipped, source))


def summarize(manifest: pd.DataFrame, skipped: pd.DataFrame, source: str) -> dict:
    """Per-package and per-class counts, so a shrinking corpus shows up in `dvc metrics diff`."""
    per_pkg = {}
    for pkg, df in manifest.groupby("package"):
        sk = skipped[skipped["package"] == pkg]
        per_pkg[pkg] = {
            "version": str(df["version"].iloc[0]),
            "files": int(len(df)),
            "minutes": round(float(df["duration_s"].sum()) / 60, 3),
            "groups": int(df["group"].nunique()),
            "decode_failed": int((sk["kind"] == "decode_failed").sum()),
            "excluded_by_rule": int((sk["kind"] == "excluded_by_rule").sum()),
        }
    per_class = {
        label: {"files": int(len(df)), "minutes": round(float(df["duration_s"].sum()) / 60, 3),
                "groups": int(df["group"].nunique())}
        for label, df in manifest.groupby("label")
    }
    return {"source": source, "files": int(len(manifest)), "per_class": per_class, "per_package": per_pkg,
            "decode_failed": int((skipped["kind"] == "decode_failed").sum()),
            "excluded_by_rule": int((skipped["kind"] == "excluded_by_rule").sum())}

