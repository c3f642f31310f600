"""scripts/data_scale.py: which `dvc exp show` entries form the curve, and its per-point summary."""

from __future__ import annotations

import pytest

from scripts.data_scale import curve_runs, summarize


def entry(name: str, groups: int, model_ba: float, cap=None, train_seed=None, lr=0.001, state=None) -> dict:
    params = {"seed": 1234, "split": {"fractions": [0.55, 0.2, 0.25], "max_train_speech_groups": cap},
              "train": {"seed": train_seed, "learning_rate": lr}}
    data = {"rev": name, "params": {"params.yaml": {"data": params}},
            "metrics": {"metrics/eval.json": {"data": {"systems": {"model": {"balanced_accuracy": model_ba,
                                                                              "roc_auc": model_ba + 0.05},
                                                                    "silero": {"balanced_accuracy": 0.789}}}},
                        "metrics/audit.json": {"data": {"groups_per_split": {"train/speech": groups}}}}}
    return {"rev": name, "name": name, "data": data, "executor": None if state is None else {"state": state}}


def shown() -> list[dict]:
    base = entry("base", 27, 0.90)
    exps = [entry("g4-s1", 4, 0.70, 4, 1), entry("g4-s2", 4, 0.74, 4, 2), entry("g16-s1", 16, 0.86, 16, 1),
            entry("all-s1", 27, 0.89, None, 1),
            entry("other-lr", 4, 0.10, 4, 1, lr=0.003),           # differs elsewhere: not a curve point
            entry("running", 8, 0.90, 8, 1, state="running")]    # shows its start commit's metrics
    base["experiments"] = [{"name": e["name"], "executor": e.pop("executor"), "revs": [e]} for e in exps]
    return [{"rev": "workspace", "data": {}}, base]


def test_curve_takes_finished_runs_that_vary_only_groups_and_seed():
    table = curve_runs(shown())
    assert table["run"].tolist() == ["g4-s1", "g4-s2", "g16-s1", "all-s1", "base"]
    assert table["train_speech_groups"].tolist() == [4, 4, 16, 27, 27]
    assert table["train_seed"].tolist() == [1, 2, 1, 1, 1234]  # null train.seed is the global seed


def test_summary_per_point_and_log_fit():
    summary = summarize(curve_runs(shown()), extrapolate=50)
    four = summary["points"][0]
    assert four["train_speech_groups"] == 4 and four["model"]["balanced_accuracy_mean"] == pytest.approx(0.72)
    assert four["silero"]["balanced_accuracy_std"] == 0.0  # Silero does not train
    fit = summary["model_log2_fit"]
    assert fit["slope_per_doubling"] > 0 and fit["at_50_groups"] > fit["intercept"]


def test_no_finished_run_is_a_clear_error():
    with pytest.raises(SystemExit, match="queue and run"):
        curve_runs([{"rev": "workspace", "data": {}}])
