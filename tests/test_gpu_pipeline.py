"""The GPU pipeline check's parts that need no GPU: the gathering script's dry run, the metric-key
comparison, the counters, and the base-model pointer a prebuilt checkpoint takes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.gpu_pipeline.check import missing_keys
from qvad.model.store import base_cfg, prepare_base

ROOT = Path(__file__).resolve().parents[1]


def test_gather_dry_run_lists_every_pinned_wheel_and_writes_nothing(tmp_path: Path) -> None:
    wheels, data = tmp_path / "wheels", tmp_path / "data"
    run = subprocess.run(["bash", "scripts/gather_gpu_carry.sh", "--dry-run", "--wheels", str(wheels),
                          "--data", str(data), "--python", sys.executable, "--psy-bases", "3"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    download = next(line for line in run.stdout.splitlines() if " pip download " in line)
    pins = [line for line in (ROOT / "benchmarks/gpu_pipeline/wheels.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert all(f" {pin}" in download for pin in pins)
    assert "--python-version 3.12" in download
    assert "libbitsandbytes_(cpu|cuda130|cuda132)" in run.stdout
    assert "--psy-bases 3" in run.stdout
    assert not wheels.exists() and not data.exists()


def test_gather_refuses_unknown_arguments() -> None:
    run = subprocess.run(["bash", "scripts/gather_gpu_carry.sh", "--dry-run", "--bogus"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "--bogus" in run.stderr


def test_carried_wheels_keep_requirements_pins() -> None:
    pins = {line.split("==")[0].lower(): line.split()[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    for line in (ROOT / "benchmarks/gpu_pipeline/wheels.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name = line.split("==")[0].lower()
            assert pins.get(name, line) == line, f"{line} differs from requirements.txt's {pins[name]}"


def test_missing_keys_reports_reference_paths_only() -> None:
    reference = {"a": 1, "b": {"c": 2, "d": [1]}, "e": {}}
    assert missing_keys(reference, {"a": 0, "b": {"c": 0, "d": [], "x": 1}, "e": {}}, False) == []
    assert missing_keys(reference, {"a": 0, "b": {"d": []}}, False) == ["b.c", "e"]


def test_missing_keys_pools_data_named_top_level() -> None:
    reference = {"music": {"n": 1, "systems": {"model": 1}}, "speech:x": {"n": 2, "groups": 1}}
    assert missing_keys(reference, {"other": {"n": 3, "groups": 2, "systems": {"model": 0}}}, True) == []
    assert missing_keys(reference, {"other": {"n": 3}}, True) == ["groups", "systems", "systems.model"]


def test_prepare_base_points_at_a_prebuilt_offline_checkpoint(tmp_path: Path) -> None:
    """model.path set for an offline preset: that folder is used, nothing is built (it used to be ignored)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    prebuilt = tmp_path / "prebuilt"
    prebuilt.mkdir()
    base = tmp_path / "base"
    cfg = prepare_base({**params["model"], "preset": "tiny", "path": str(prebuilt)}, 0, base)
    assert cfg["path"] == str(prebuilt)
    assert not (base / "config.json").exists()
    assert json.loads((base / "source.json").read_text()) == {"preset": "tiny", "hub_id": str(prebuilt)}
    assert base_cfg(params["model"], base)["path"] == str(prebuilt)


def test_prepare_base_build_drops_an_old_pointer(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    base = tmp_path / "base"
    base.mkdir()
    (base / "source.json").write_text(json.dumps({"preset": "tiny", "hub_id": "/elsewhere"}))
    cfg = prepare_base({**params["model"], "preset": "tiny", "path": None}, 0, base)
    assert cfg["path"] == str(base) and (base / "config.json").is_file()
    assert base_cfg(params["model"], base)["path"] == str(base)


def test_counters_see_the_shared_prefix_when_scoring(tmp_path: Path) -> None:
    from benchmarks.gpu_pipeline import counters

    counters.install()
    from qvad.model.loading import load_model_and_processor
    from qvad.model.scoring import score_ab_logits

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    cfg = prepare_base({**params["model"], "preset": "tiny", "path": None}, 0, tmp_path / "base")
    model, processor = load_model_and_processor({**cfg, "quantization": "none", "dtype": "float32"}, "cpu",
                                                for_training=False)
    before = counters.read()
    torch.manual_seed(0)
    clips = [0.1 * torch.randn(16_000).numpy() for _ in range(3)]
    score_ab_logits(model, processor, clips, params["prompt"], 3)
    after = counters.read()
    layers = model.config.text_config.num_hidden_layers
    assert after["prefix_reads"] - before["prefix_reads"] == layers
    assert after["encoder_truncations"] > before["encoder_truncations"]
    assert after["answer_slot_layers"] > before["answer_slot_layers"]


@pytest.mark.slow
@pytest.mark.e2e
def test_cpu_dry_run_of_the_check(tmp_path: Path) -> None:
    """The whole check on the CPU (tiny preset) on a subset of a finished run's data, if there is one."""
    if not (ROOT / "data/splits/test.csv").is_file():
        pytest.skip("needs the data stages' outputs (dvc repro audit)")
    data = tmp_path / "subset"
    subprocess.run([sys.executable, "-m", "benchmarks.gpu_pipeline.subset", "--out", str(data), "--train-per-cell", "1",
                    "--dev-per-cell", "1", "--test-per-cell", "1", "--psy-bases", "2"], cwd=ROOT, check=True)
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_pipeline.check", "--device", "cpu", "--configs",
                          "tiny-cpu", "--out", str(tmp_path / "out"), "--data", str(data), "--workdir",
                          str(tmp_path / "work"), "--set", "train.epochs=1", "--set", "opro.search.iterations=2",
                          "--set", "evaluate.n_boot=50", "--set", "psychometric.n_boot=20"], cwd=ROOT, timeout=3600)
    report = json.loads((tmp_path / "out/pipeline_check.json").read_text())
    assert run.returncode == 0 and report["passed"], json.dumps(report["configurations"], indent=1)[:4000]


def test_final_train_loss_without_a_logged_step() -> None:
    """A run shorter than train.logging_steps logs no loss: the metric falls back to the run's mean
    (it raised IndexError, so a small data set failed the train stage after training)."""
    from qvad.model.train import final_train_loss

    assert final_train_loss([{"eval_loss": 1.0}], 0.7) == 0.7
    assert final_train_loss([{"loss": 2.0}, {"loss": 1.5}, {"eval_loss": 1.0}], 0.7) == 1.5


def test_missing_keys_ignores_the_values_a_metric_is_broken_down_by() -> None:
    reference = {"systems": {"model": {"by": {"orig_sr": {"96000": {"n": 1}, "16000": {"n": 2}}}}}}
    produced = {"systems": {"model": {"by": {"orig_sr": {"44100": {"n": 3}}}}}}
    assert missing_keys(reference, produced, False) == []
    assert missing_keys(reference, {"systems": {"model": {"by": {}}}}, False) == [
        "systems.model.by.orig_sr", "systems.model.by.orig_sr.*", "systems.model.by.orig_sr.*.n"]


def test_an_unfitted_glmm_is_not_a_missing_key() -> None:
    """A small subset can leave a class without errors: the GLMM then reports a status, not coefficients."""
    from benchmarks.gpu_pipeline.check import drop_unfitted

    fitted = {"status": "fitted", "coefficients": {"intercept": {"mean": 1.0}}}
    unfitted = {"status": "not fitted: needs both outcomes"}
    reference = {"glmm": {"systems": {"model": {"speech": fitted, "nonspeech": fitted}}}}
    produced = {"glmm": {"systems": {"model": {"speech": fitted, "nonspeech": unfitted}}}}
    assert missing_keys(drop_unfitted(reference, produced), produced, False) == []
    assert missing_keys(reference, produced, False)  # without it, the coefficients count as missing
    broken = {"glmm": {"systems": {"model": {"speech": {"status": "fitted"}, "nonspeech": unfitted}}}}
    assert missing_keys(drop_unfitted(reference, broken), broken, False) == [
        "glmm.systems.model.speech.coefficients", "glmm.systems.model.speech.coefficients.intercept",
        "glmm.systems.model.speech.coefficients.intercept.mean"]


def test_a_second_data_part_replaces_the_first_parts_files(tmp_path: Path) -> None:
    """check.py --data A --data B: B's test.csv and bases win, A's train stays, clips of both are there."""
    from benchmarks.gpu_pipeline.check import make_workdir, subset_summary

    first, second = tmp_path / "a", tmp_path / "b"
    for root, files in ((first, {"splits/train.csv": "a", "splits/test.csv": "a", "normalized/audio/x.flac": "a"}),
                        (second, {"splits/test.csv": "b", "normalized/audio/y.flac": "b"})):
        for rel, text in files.items():
            (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / "data" / rel).write_text(text)
    (first / "subset.json").write_text(json.dumps({"per_cell": {"train": 9, "test": 1}, "psychometric_bases_per_class": 8,
                                                   "train": {"clips": 540}, "test": {"clips": 60}}))
    (second / "subset.json").write_text(json.dumps({"per_cell": {"test": 1000}, "psychometric_bases_per_class": 40,
                                                    "test": {"clips": 570}}))
    work = make_workdir(tmp_path / "work", [first, second], {"seed": 7})
    read = {rel: (work / "data" / rel).read_text() for rel in
            ("splits/train.csv", "splits/test.csv", "normalized/audio/x.flac", "normalized/audio/y.flac")}
    assert read == {"splits/train.csv": "a", "splits/test.csv": "b", "normalized/audio/x.flac": "a",
                    "normalized/audio/y.flac": "b"}
    assert yaml.safe_load((work / "params.yaml").read_text())["seed"] == 7
    merged = subset_summary([first, second])
    assert merged["per_cell"] == {"train": 9, "test": 1000}
    assert (merged["train"]["clips"], merged["test"]["clips"], merged["psychometric_bases_per_class"]) == (540, 570, 40)


def test_check_refuses_a_job_count_below_one(tmp_path: Path) -> None:
    from benchmarks.gpu_pipeline.check import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--out", str(tmp_path), "--jobs", "0"])


def test_projection_scales_only_the_training_loop() -> None:
    from benchmarks.gpu_pipeline.projection import partial_splits, project

    report = {"data": {"train": {"clips": 500}, "dev": {"clips": 100}, "test": {"clips": 570}},
              "configurations": {"qwen-nf4": {
                  "train_timing": {"train_wall_s": 40.0},
                  "stages": {"train": {"exit_code": 0, "wall_s": 50.0, "process_wall_s": 60.0},
                             "optimize_prompt": {"exit_code": 0, "wall_s": 20.0, "process_wall_s": 30.0},
                             "evaluate": {"exit_code": 1, "wall_s": 5.0}}}}}
    out = project(report, train_clips=1000)["qwen-nf4"]
    assert out["stages"]["train"]["projected_s"] == 20.0 + 40.0 * 2
    assert out["stages"]["optimize_prompt"]["projected_s"] == 30.0
    assert out["stages"]["evaluate"]["measured_s"] is None and not out["complete"]
    assert partial_splits(report, {"train": 1344, "dev": 486, "test": 570}) == ["dev 100 of 486"]


def test_environment_names_the_dvclive_version() -> None:
    """dvclive has no __version__: the check reported it as unavailable although it had loaded."""
    from importlib.metadata import version

    from benchmarks.gpu_pipeline.check import environment

    assert environment("cpu")["dvclive"] == version("dvclive")


def test_peak_reports_the_cards_memory_outside_torchs_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """A small card must hold the CUDA context too: the card's used memory less the allocator's."""
    from benchmarks.gpu import common

    gib = common.GIB
    monkeypatch.setattr(common, "CUDA", True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int(70.5 * gib), 80 * gib))  # 9.5 GiB used
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: int(7.99 * gib))
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: int(8.32 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: 9 * gib)
    assert common.peak() == {"peak_alloc_gib": 7.99, "peak_reserved_gib": 8.32, "outside_torch_gib": 0.5}


def test_predict_comparison_keeps_what_a_miss_needs(tmp_path: Path) -> None:
    """A failed comparison names its worst clips and the calibration, so it can be diagnosed afterwards."""
    from benchmarks.gpu_pipeline.check import compare_predict

    (tmp_path / "data/eval").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    ids = [f"c{i:02d}" for i in range(60)]
    p_eval = [0.5] * 60
    p_pred = [0.5] * 59 + [0.55]
    (tmp_path / "data/eval/predictions.csv").write_text(
        "clip_id,p_speech,p_speech_calibrated\n" + "".join(f"{c},0.6,{p}\n" for c, p in zip(ids, p_eval)))
    (tmp_path / "predict.csv").write_text(
        "path,p_speech,error\n" + "".join(f"/x/{c}.flac,{p},\n" for c, p in zip(ids, p_pred)))
    (tmp_path / "models/detector.json").write_text(json.dumps({"temperature": 0.25, "threshold": 0.5}))
    out = compare_predict(tmp_path, "cuda")
    assert not out["ok"] and out["decision_flips"] == 0 and out["max_abs_diff"] == pytest.approx(0.05)
    assert out["temperature"] == 0.25 and out["threshold"] == 0.5
    assert out["worst"][0] == {"clip_id": "c59", "p_speech": 0.6, "p_speech_calibrated": 0.5, "p_predict": 0.55}
    assert len(out["worst"]) == 5
