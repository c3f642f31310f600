"""The local source: a user's own folder of ``speech/`` and ``nonspeech/`` audio.

Groups come from an optional ``groups.csv`` (columns ``path,group``, paths relative to
the folder); otherwise from the first sub-folder under the class folder (one speaker
or source per sub-folder), or the file itself when it sits directly in the class folder.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from qvad.data.sources.builtin import AUDIO_SUFFIXES
from qvad.data.categories import category_for, local_categories
from qvad.data.manifest import LABELS, RawItem


def _groups_table(root: Path) -> dict[str, str]:
    path = root / "groups.csv"
    if not path.exists():
        return {}
    df = pd.read_csv(path, dtype=str)
    if not {"path", "group"} <= set(df.columns):
        raise ValueError(f"{path}: needs columns 'path' and 'group', found {list(df.columns)}")
    return dict(zip(df["path"], df["group"]))


def collect_local(root: str | Path) -> list[RawItem]:
    """RawItems for every audio file under ``root/speech`` and ``root/nonspeech``."""
    root = Path(root).expanduser()
    if not all((root / label).is_dir() for label in LABELS):
        raise FileNotFoundError(f"{root}: data.source=local needs sub-folders {list(LABELS)}")
    groups = _groups_table(root)
    categories = local_categories(root)
    items = []
    for label in LABELS:
        for path in sorted((root / label).rglob("*")):
            if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            inner = path.relative_to(root / label).parts
            group = groups.get(rel) or (inner[0] if len(inner) > 1 else Path(inner[0]).stem)
            items.append(RawItem(
                id=re.sub(r"[^A-Za-z0-9._-]+", "_", "local__" + Path(rel).with_suffix("").as_posix().replace("/", "__")),
                src=str(path), source_path=rel, label=label, group=f"local:{label}:{group}",
                package="local", version="", licence="user-supplied",
                category=category_for("local", "local", rel, label, {"category": categories.get(rel)})))
    if not items:
        raise FileNotFoundError(f"{root}: no audio files ({sorted(AUDIO_SUFFIXES)}) under speech/ or nonspeech/")
    return items
