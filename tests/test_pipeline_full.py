"""The whole chain on tiny params: repro, interrupted training that resumes, an experiment, a metrics diff."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import DVC, TINY, build_tiny_causal_lm, make_copy, merge, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FULL = merge(TINY, {
    "train": {"epochs": 2, "batch_size": 8, "eval_steps": 4, "logging_steps": 2, "warmup_steps": 2},
    "opro": {"search": {"iterations": 2, "proposals_per_iteration": 3, "minidev_size": 8}},
    "evaluate": {"n_boot": 100, "report_errors": 3},
    "psychometric": {"bases_per_class": 3, "n_boot": 20, "durations_ms": [20, 80, 200, 1000],
                     "snrs_db": [-10, 0, 10, 20], "snr_durations_ms": [1000], "rt60_s": [0.6]},
})


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def full_repo(tmp_path_factory) -> Path:
    repo = make_copy(tmp_path_factory.mktemp("e2e_full"), FULL)
    run([*DVC, "config", "--local", "core.no_scm", "false"], repo)
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "e2e")  # CI machines may have no global git identity
    git(repo, "config", "user.email", "e2e@localhost")
    git(repo, "add", "-A")  # a project has commits (DVCLive reads the current one; an empty repo has none)
    git(repo, "commit", "-qm", "project")
    run([*DVC, "repro"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "baseline")
    return repo


def test_whole_chain_writes_every_metric(full_repo):
    ev = json.loads((full_repo / "metrics/eval.json").read_text())
    assert set(ev["systems"]) == {"model", "webrtc", "silero", "ten"}
    for name, m in ev["systems"].items():
        lo, hi = m["balanced_accuracy_ci95"]
        assert lo <= m["balanced_accuracy"] <= hi and m["n"] == ev["test_clips"]
    for name in ("webrtc", "silero", "ten"):
        paired = ev["model_minus_baseline"][name]
        lo, hi = paired["ci95"]
        assert lo <= paired["difference"] <= hi and 0 <= paired["p_value"] <= paired["p_holm"] <= 1
        assert 0 <= paired["mcnemar_clips"]["p_value"] <= 1
    assert "yes" in ev["systems"]["silero"]["used_in_label_hygiene"]
    assert "latency_ms_per_clip" not in json.dumps(ev)  # timings live in benchmarks/, not tracked metrics
    categories = json.loads((full_repo / "metrics/categories.json").read_text())
    assert categories and (full_repo / "reports/error_report.html").stat().st_size > 1000
    opro = json.loads((full_repo / "metrics/opro.json").read_text())
    assert opro["proposer"] == "template" and opro["n_scored"] > 0
    chosen = json.loads((full_repo / "models/prompt.json").read_text())
    detector = json.loads((full_repo / "models/detector.json").read_text())
    assert detector["prompt"] == {key: chosen[key] for key in ("system", "user", "audio_position")}
    psy = json.loads((full_repo / "metrics/psychometric.json").read_text())
    assert {"DT75", "DT90", "DT50", "SNR-75@1000ms"} <= set(psy["systems"]["model"])
    train = json.loads((full_repo / "metrics/train.json").read_text())
    assert train["preset"] == "whisper-tiny" and train["trainable_parameters"]["lora"] > 0
    audio = train["modules"]["audio_tower"]  # lora.audio_layers: the last layers adapted, the rest frozen
    assert audio["role"] == "LoRA" and audio["parameters"]["frozen"] > 0 and audio["parameters"]["full"] == 0
    assert train["modules"]["multi_modal_projector"]["role"] == "full"
    assert train["modules"]["language_model"]["role"] == "LoRA"
    dev = pd.read_csv(full_repo / "dvclive/plots/metrics/eval/balanced_accuracy.tsv", sep="\t")
    assert len(dev) > 0 and dev["balanced_accuracy"].between(0, 1).all()
    assert dev["step"].is_monotonic_increasing and dev["step"].is_unique
    for png in ("confusion", "accuracy_vs_snr", "reliability", "psychometric/duration", "psychometric/snr_1000ms"):
        assert (full_repo / f"plots/{png}.png").stat().st_size > 1000


def test_plots_show_draws_exactly_the_defined_plots(full_repo):
    shown = json.loads(run([*DVC, "plots", "show", "--json"], full_repo).stdout)["data"]
    charts = {"loss", "dev_balanced_accuracy", "confusion", "accuracy_vs_snr", "reliability",
              "psychometric_duration", "psychometric_snr", "opro_reward", "opro_best", "accuracy_by_category",
              "roc", "precision_recall"}
    images = {"plots/confusion.png", "plots/accuracy_vs_snr.png", "plots/reliability.png",
              "plots/psychometric/duration.png", "plots/psychometric/snr_1000ms.png"}
    assert set(shown) == charts | images  # no stray per-file charts of the CSVs


def test_exp_run_changes_lora_rank_and_metrics_diff_shows_it(full_repo):
    run([*DVC, "exp", "run", "-S", "lora.r=32"], full_repo)
    diff = run([*DVC, "metrics", "diff", "--json"], full_repo).stdout
    changes = json.loads(diff)["metrics/train.json"]
    lora = changes["trainable_parameters.lora"]
    assert lora["new"] == 2 * lora["old"]


def test_interrupted_training_resumes_from_checkpoint(full_repo):
    """Kill `train` once a checkpoint exists; the next run resumes from it.

    The kill may land while a later checkpoint is half written: the re-run must then resume
    from the last complete one (qvad.model.trainer.prepare_checkpoint_dir), not fail on the partial one.
    """
    ckpt = full_repo / "models/checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=full_repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(full_repo), "TQDM_DISABLE": "1"})
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpt.glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run([sys.executable, "-m", "stages.train"], full_repo)
    train = json.loads((full_repo / "metrics/train.json").read_text())
    assert train["resumed"] is True and train["steps"] > 0
    dev = pd.read_csv(full_repo / "dvclive/plots/metrics/eval/balanced_accuracy.tsv", sep="\t")
    assert dev["step"].is_unique  # rows after the resumed checkpoint were dropped, not duplicated


def test_prompt_search_reads_no_test_clip_and_repeats_itself(full_repo):
    """optimize_prompt runs with the test split absent, and the same seed gives the same bytes."""
    test_csv, hidden = full_repo / "data/splits/test.csv", full_repo / "test.csv.hidden"
    outputs = ("models/prompt.json", "metrics/opro.json", "plots/opro_candidates.csv")
    before = {p: (full_repo / p).read_bytes() for p in outputs}
    test_csv.rename(hidden)
    try:
        run([sys.executable, "-m", "stages.optimize_prompt"], full_repo)
    finally:
        hidden.rename(test_csv)
    assert {p: (full_repo / p).read_bytes() for p in outputs} == before


def test_llm_proposer_runs_as_a_pipeline_experiment(full_repo, tmp_path):
    """`dvc exp run -S opro.proposer=llm` on a tiny random causal LM: the path runs, junk is rejected."""
    lm = build_tiny_causal_lm(tmp_path / "lm")
    run([*DVC, "exp", "run", "-S", "opro.proposer=llm", "-S", f"opro.llm.model={lm}",
         "-S", "opro.llm.max_new_tokens=24", "-S", "opro.search.iterations=1", "optimize_prompt"], full_repo)
    opro = json.loads((full_repo / "metrics/opro.json").read_text())
    assert opro["proposer"] == "llm" and opro["iterations_run"] == 1
    assert sum(opro["rejected"].values()) > 0  # a random LM writes no valid prompt; each rejection has a reason
    assert opro["kept_training_prompt"] is True


def test_exp_run_in_two_processes(full_repo):
    """`dvc exp run -S train.processes=2`: train, optimize_prompt, evaluate and psychometric under
    torchrun with two gloo processes; the same steps and every metric (tests/test_data_parallel.py
    checks the numbers against one process)."""
    steps = json.loads((full_repo / "metrics/train.json").read_text())["steps"]
    run([*DVC, "exp", "run", "-S", "train.processes=2"], full_repo)
    assert json.loads((full_repo / "logs/train_timing.json").read_text())["processes"] == 2
    assert json.loads((full_repo / "metrics/train.json").read_text())["steps"] == steps
    ev = json.loads((full_repo / "metrics/eval.json").read_text())
    assert 0 <= ev["systems"]["model"]["balanced_accuracy"] <= 1
    assert "DT75" in json.loads((full_repo / "metrics/psychometric.json").read_text())["systems"]["model"]
