"""The group_split stage: write train/dev/test clip lists from the group plan made before mixing."""

from __future__ import annotations

import pandas as pd

from qvad.common.atomic import write_csv
from qvad.common.params import get
from qvad.data.manifest import read_manifest
from qvad.data.grouping import SPLITS
from qvad.data.train_groups import cap_speech_groups

COLUMNS = ["clip_id", "path", "label", "split", "group", "noise_group", "noise_id", "noise_type", "source_id",
           "seg_id", "audio_md5", "duration_ms", "snr_db", "band", "orig_sr", "package", "cut_start_s",
           "cut_end_s", "container_ms", "category", "voiced_frac"]


def group_split(params: dict) -> None:
    """Run the group_split stage: the group plan decides every split; ``split.max_train_speech_groups``
    may thin the training list's speech groups (qvad.data.train_groups)."""
    clips = read_manifest("data/normalized/manifest.csv", [c for c in COLUMNS if c != "split"])
    groups = pd.read_csv("data/mixed/groups.csv")
    split_of = dict(zip(groups["group"], groups["split"]))
    clips["split"] = clips["group"].map(split_of)
    if clips["split"].isna().any():
        raise SystemExit(f"group_split: clips from groups missing in the group plan: "
                         f"{sorted(clips.loc[clips['split'].isna(), 'group'].unique())[:5]}")
    for split in SPLITS:
        rows = clips.loc[clips["split"] == split, COLUMNS]
        if split == "train":
            rows = cap_speech_groups(rows, get(params, "split.max_train_speech_groups"), int(params["seed"]))
        write_csv(f"data/splits/{split}.csv", rows)

