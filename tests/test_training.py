"""Training bookkeeping: the DVCLive curves DVC plots, and which checkpoint a re-run resumes from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from qvad.model.trainer import best_evaluation, prepare_checkpoint_dir
from qvad.model.training_log import StepDVCLiveCallback


def _tsv(live_dir: Path, name: str) -> list[tuple[int, float]]:
    rows = (live_dir / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[1])) for r in rows]


def _log(callback: StepDVCLiveCallback, step: int, **logs: float) -> None:
    callback.on_log(None, SimpleNamespace(global_step=step, is_world_process_zero=True), None, logs=logs)


def _callback(live_dir: Path, resume_step: int | None = None) -> StepDVCLiveCallback:
    callback = StepDVCLiveCallback(live_dir, resume_step)
    callback.setup(None, None, None)
    return callback


def test_dvclive_rows_sit_at_the_optimiser_step_and_skip_wall_clock(tmp_path: Path) -> None:
    live_dir = tmp_path / "dvclive"
    callback = _callback(live_dir)
    _log(callback, 10, loss=2.0, learning_rate=1e-3)
    _log(callback, 20, loss=1.5)
    _log(callback, 20, eval_loss=1.4, eval_runtime=0.1, eval_samples_per_second=9.0)  # Trainer.evaluate's log
    _log(callback, 20, eval_balanced_accuracy=0.61)  # ABTrainer.evaluate's extra log, same step
    _log(callback, 30, train_runtime=5.0, train_loss=1.7, total_flos=1e9)  # end-of-training summary
    assert _tsv(live_dir, "loss") == [(10, 2.0), (20, 1.5)]
    assert _tsv(live_dir, "eval/loss") == [(20, 1.4)]
    assert _tsv(live_dir, "eval/balanced_accuracy") == [(20, 0.61)]
    logged = {p.relative_to(live_dir / "plots" / "metrics").as_posix() for p in live_dir.rglob("*.tsv")}
    assert logged == {"loss.tsv", "learning_rate.tsv", "eval/loss.tsv", "eval/balanced_accuracy.tsv"}


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path: Path) -> None:
    live_dir = tmp_path / "dvclive"
    first = _callback(live_dir)
    for step in (10, 20, 30):
        _log(first, step, loss=1.0 / step)
    resumed = _callback(live_dir, resume_step=20)  # killed after step 30, last checkpoint at 20
    _log(resumed, 30, loss=0.5)
    assert _tsv(live_dir, "loss") == [(10, 0.1), (20, 0.05), (30, 0.5)]


def _checkpoint(root: Path, step: int, state: str | None) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / "trainer_state.json").write_text(state)
    return path


def test_resume_skips_a_checkpoint_cut_off_mid_save(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    assert prepare_checkpoint_dir(ckpt, "run-a") is None and (ckpt / "RUN_KEY").read_text() == "run-a"
    done = _checkpoint(ckpt, 4, '{"global_step": 4}')
    _checkpoint(ckpt, 12, '{"global_st')   # killed while writing its state
    _checkpoint(ckpt, 8, None)             # killed before its state
    assert prepare_checkpoint_dir(ckpt, "run-a") == done
    assert sorted(c.name for c in ckpt.glob("checkpoint-*")) == ["checkpoint-4"]


def test_checkpoints_of_another_run_are_discarded(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    prepare_checkpoint_dir(ckpt, "run-a")
    _checkpoint(ckpt, 4, '{"global_step": 4}')
    assert prepare_checkpoint_dir(ckpt, "run-b") is None
    assert not list(ckpt.glob("checkpoint-*")) and (ckpt / "RUN_KEY").read_text() == "run-b"


def test_best_evaluation_merges_the_two_logs_of_the_best_step() -> None:
    history = [{"step": 84, "eval_loss": 0.4}, {"step": 84, "eval_balanced_accuracy": 0.85},
               {"step": 168, "eval_loss": 0.3}, {"step": 168, "eval_balanced_accuracy": 0.88},
               {"step": 168, "loss": 0.2}]
    best = best_evaluation(history, "models/checkpoints/checkpoint-168")
    assert best == {"eval_loss": 0.3, "eval_balanced_accuracy": 0.88}
    with pytest.raises(RuntimeError, match="no dev evaluation"):
        best_evaluation(history, None)
