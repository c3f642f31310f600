"""Training bookkeeping: the curves DVC plots, and which checkpoint a re-run resumes from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from qvad.model.trainer import LossHistory, prepare_checkpoint_dir


def _log(history: LossHistory, step: int, **logs: float) -> None:
    history.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)


def test_dev_loss_and_balanced_accuracy_logged_apart_share_one_row() -> None:
    history = LossHistory()
    _log(history, 10, loss=2.0, learning_rate=1e-3)
    _log(history, 20, loss=1.5)
    _log(history, 20, eval_loss=1.4, eval_runtime=0.1)   # Trainer.evaluate's own log
    _log(history, 20, eval_balanced_accuracy=0.61)       # ABTrainer.evaluate's extra log
    _log(history, 25, eval_loss=1.3)
    _log(history, 25, eval_balanced_accuracy=0.66)
    _log(history, 25, eval_loss=1.35)                    # best checkpoint re-evaluated after training
    _log(history, 25, eval_balanced_accuracy=0.64)
    train, dev = history.tables()
    assert train.to_dict("list") == {"step": [10, 20], "train_loss": [2.0, 1.5]}
    assert dev.to_dict("list") == {"step": [20, 25], "dev_loss": [1.4, 1.3], "dev_balanced_accuracy": [0.61, 0.66]}


def test_empty_history_gives_empty_tables() -> None:
    train, dev = LossHistory().tables()
    assert train.empty and dev.empty and list(dev.columns) == ["step", "dev_loss", "dev_balanced_accuracy"]


@pytest.mark.parametrize("logs", [{"learning_rate": 1e-3}, {}])
def test_logs_without_losses_add_no_rows(logs: dict) -> None:
    history = LossHistory()
    _log(history, 5, **logs)
    assert history.rows == []


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
