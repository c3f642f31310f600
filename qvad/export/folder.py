"""``export_models``: write the export into a temporary folder beside OUT_DIR, then move it into place.

Nothing is written at OUT_DIR until the export is complete: a failure leaves OUT_DIR as it was.
An existing non-empty OUT_DIR is replaced only with ``force``, and its old contents are removed
only after the new folder has been renamed into place (the caller is told how many files went).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvad.common.atomic import _umask, write_json, write_text
from qvad.detector_config import DETECTOR_FILE, EXPORT_KEY, DetectorConfig
from qvad.export.checks import ExportError, Source, check_adapter_fits, check_out_dir, check_source
from qvad.export.model_card import load_card_inputs, model_card


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_models` wrote: the folder, whether it is merged, its dtype, files replaced."""

    out_dir: Path
    merged: bool
    dtype: str | None
    replaced_files: int


def merged_detector(raw: dict[str, Any], dtype: str) -> dict[str, Any]:
    """detector.json of a merged export: the model block loads the folder itself, unquantised.

    ``model.quantization`` becomes 'none' (float32) or 'bf16'; the training-time values are kept in
    ``export.trained_with``, so the card and a reader can tell an NF4-trained model from the rest.
    """
    model = dict(raw["model"])
    trained = {k: model.get(k) for k in ("quantization", "dtype")}
    model.update(path=None, quantization="none" if dtype == "float32" else "bf16", dtype=dtype)
    return {**raw, "model": model, EXPORT_KEY: {"merged": True, "dtype": dtype, "trained_with": trained}}


def _write(source: Source, tmp: Path, merge: bool, dtype: str | None, project_dir: Path) -> None:
    raw = json.loads(source.detector.read_text(encoding="utf-8"))
    DetectorConfig.from_dict(raw, source.detector)  # a broken contract must not be exported
    if merge:
        from qvad.export.merge import merged_model, save_merged

        model, processor = merged_model(source, dtype)
        save_merged(model, processor, tmp)
        detector = merged_detector(raw, dtype)
        write_json(tmp / DETECTOR_FILE, detector)
    else:
        shutil.copytree(source.base, tmp / "base")
        shutil.copytree(source.adapter, tmp / "adapter")
        shutil.copy2(source.detector, tmp / DETECTOR_FILE)
        detector = raw
    inputs = load_card_inputs(
        detector, params=project_dir / "params.yaml", train=project_dir / "metrics/train.json",
        evaluation=project_dir / "metrics/eval.json", psychometric=project_dir / "metrics/psychometric.json",
        categories=project_dir / "metrics/categories.json", manifest=project_dir / "data/raw/manifest.csv",
        pyproject=project_dir / "pyproject.toml")
    write_text(tmp / "README.md", model_card(inputs, merged=merge, dtype=dtype or str(raw["model"].get("dtype"))))


def export_models(models_dir: str | os.PathLike, out_dir: str | os.PathLike, *, merge: bool = True,
                  force: bool = False, dtype: str | None = None,
                  project_dir: str | os.PathLike = ".") -> ExportResult:
    """Export ``models_dir`` (base/, adapter/, detector.json) to ``out_dir``.

    ``merge``: the adapter merged into the base (qvad.export.merge), else base and adapter copied.
    ``dtype``: the merged weights' dtype (None: float32 for a float32 run, else bfloat16).
    ``project_dir``: where params.yaml, metrics/ and data/raw/manifest.csv of the run are, for the card.
    Raises :class:`ExportError` naming the path and the problem for unusable input.
    """
    source = check_source(models_dir)
    out, project = Path(out_dir), Path(project_dir)
    check_out_dir(out, source.root, force)
    check_adapter_fits(source)
    if merge:
        from qvad.export.merge import saved_dtype

        dtype = saved_dtype(json.loads(source.detector.read_text(encoding="utf-8"))["model"], dtype)
    elif dtype is not None:
        raise ExportError("--dtype applies to a merged export only (--no-merge copies the weights as they are)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        _write(source, tmp, merge, dtype, project)
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the folder gets what mkdir would give
        if out.exists():  # an empty folder, or (force) a full one
            replaced = _move_into_place(tmp, out)
        else:
            os.rename(tmp, out)
            replaced = 0
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, merge, dtype, replaced)


def _move_into_place(tmp: Path, out: Path) -> int:
    """Rename the finished ``tmp`` over the existing ``out``; delete the old one last. Returns its file count."""
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.rename(out, old / out.name)  # same filesystem: two renames, no copy
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old / out.name, out)  # put the user's folder back
        raise
    count = sum(1 for p in old.rglob("*") if p.is_file())
    shutil.rmtree(old)
    return count
