"""Split CSVs to in-memory examples: a few thousand 2 s clips fit easily in RAM."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from qvad.audio.io import read_wav


class ClipDataset(torch.utils.data.Dataset):
    """Examples ``{"audio": float32 array, "label": 1 speech / 0 non-speech}`` of one split."""

    def __init__(self, csv: str | Path, limit: int | None = None) -> None:
        df = pd.read_csv(csv, keep_default_na=False)
        if limit is not None:
            df = df.iloc[:limit]
        if df.empty:
            raise ValueError(f"{csv}: no clips")
        self.frame = df.reset_index(drop=True)
        self.audio = [read_wav(p) for p in df["path"]]
        self.labels = (df["label"] == "speech").astype(int).to_numpy()

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.audio[i], "label": int(self.labels[i])}


def spec_augment(features: torch.Tensor, valid: torch.Tensor, generator: torch.Generator,
                 freq_width: int = 8, time_width: int = 10) -> torch.Tensor:
    """One frequency and one time mask per row, inside the row's valid frames (light SpecAugment)."""
    out = features.clone()
    for i in range(out.shape[0]):
        f0 = int(torch.randint(0, out.shape[1] - freq_width, (1,), generator=generator))
        out[i, f0:f0 + int(torch.randint(0, freq_width + 1, (1,), generator=generator))] = 0.0
        frames = int(valid[i])
        if frames > time_width:
            t0 = int(torch.randint(0, frames - time_width, (1,), generator=generator))
            out[i, :, t0:t0 + int(torch.randint(0, time_width + 1, (1,), generator=generator))] = 0.0
    return out
