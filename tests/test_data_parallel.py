"""Data parallelism on the CPU: the train stage and the scorer in two gloo processes started by torchrun.

Each run is a subprocess started as dvc.yaml starts the stage (``python -m qvad.parallel.launch
stages.train``, which hands the stage to torchrun when ``train.processes`` > 1), in a temporary
project holding a few synthetic clips and the tiny preset. LoRA dropout is 0 in these runs: with
dropout each process draws its own masks for its half of the batch, and the runs would then
differ by more than arithmetic.

Per-step loss tolerance. The one-process step averages the answer loss over B rows; the
two-process step averages two means of B/2 rows (rank losses averaged by the Trainer's gather)
and its gradient is the gloo all-reduce of two half-batch gradients, divided by 2. The same rows,
prompt prefix, weights and threads enter every row's forward, so the only differences are the
rounding of float32 arithmetic done in other groupings: half-batch matrix products and sums
(a few ulp of the loss, i.e. a relative few x 6e-8), and every gradient element's sum (relative
error about ``log2(B) * 2**-24`` < 1e-6). Adam divides each gradient by its running RMS, so a
relative gradient error becomes at most the same relative error of the update, ``lr`` times it:
after ``k`` steps every weight differs by at most ``~2 k lr 1e-6`` from the one-process weights
(as long as no gradient element is a rounding-level zero of unstable sign, which a non-degenerate
loss does not have), and the loss, a smooth function of the weights with O(1) gradient here, by
the same order: ``k = 3``, ``lr = 1e-3`` give < 1e-8 absolute, below one ulp of the loss (4.8e-7
at ~5). So the per-step losses must agree to a few ulp, relative ~1e-7 (measured: 9.7e-8 at
most); the tolerance is 1e-5 relative, two orders above that for the bound's constants, and
still catches a real mistake (a process stepping on its own half batch moved step 3 by 4 %).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from qvad.common.params import ParamsError
from qvad.parallel.group import check_world
from qvad.parallel.processes import check_devices, per_process_batch, process_count

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000
LOSS_RTOL = 1e-5
"""Per-step loss, two processes against one (module docstring)."""

TINY_RUN = {
    "cpu_threads": 1,
    "model": {"preset": "tiny", "truncate_encoder": True},
    "lora": {"dropout": 0.0, "audio_layers": 0},
    "train": {"epochs": 1, "batch_size": 4, "grad_accum": 1, "logging_steps": 1, "eval_steps": 2,
              "warmup_steps": 1, "learning_rate": 0.001, "cache_frozen_encoder": True},
}

WRITE_LOG = textwrap.dedent('''\
    """Test helper: log every path this process opens for writing, renames onto or creates, per rank."""
    import os
    import sys

    _fd = os.open(os.path.join(os.environ["QVAD_WRITE_LOG"], "writes-%s.txt" % os.environ.get("RANK", "alone")),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    _events = {"open", "os.rename", "os.replace", "os.mkdir", "os.remove", "shutil.rmtree"}


    def _hook(event, args):
        if event not in _events:
            return
        if event == "open" and not (isinstance(args[1], str) and any(c in args[1] for c in "wax+")
                                    or isinstance(args[2], int) and args[2] & (os.O_WRONLY | os.O_RDWR)):
            return
        path = args[1] if event in ("os.rename", "os.replace") else args[0]
        if isinstance(path, (str, bytes, os.PathLike)):
            os.write(_fd, (os.path.abspath(os.fsdecode(path)) + "\\n").encode())  # os.write: no audit event


    sys.addaudithook(_hook)
    ''')



def merge(base: dict, over: dict) -> dict:
    """Recursive dict update (params overrides)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_clips(folder: Path, n: int, seed: int) -> list[dict]:
    """``n`` short clips, alternately voiced-like (speech) and noise (nonspeech), of a few lengths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        seconds = (0.3, 0.5, 0.4)[i % 3]
        t = np.arange(int(seconds * SR)) / SR
        speech = i % 2 == 0
        audio = (0.3 * np.sin(2 * np.pi * (120 + 10 * i) * t) * (1 + np.sin(2 * np.pi * 4 * t)) if speech
                 else 0.1 * rng.standard_normal(t.size))
        path = folder / f"clip{i:03d}.wav"
        sf.write(path, audio.astype(np.float32), SR, subtype="FLOAT")
        rows.append({"clip_id": f"{folder.name}-{i}", "path": str(path), "label": "speech" if speech else "nonspeech"})
    return rows


def make_project(root: Path, processes: int, n_train: int = 12, n_dev: int = 6, **over: dict) -> Path:
    """A project folder with params.yaml (the repo's, tiny run) and train / dev splits."""
    root.mkdir(parents=True)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                   merge(TINY_RUN, {"train": {"processes": processes}, **over}))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for split, n, seed in (("train", n_train, 1), ("dev", n_dev, 2)):
        rows = write_clips(root / "audio" / split, n, seed)
        (root / "data/splits").mkdir(parents=True, exist_ok=True)
        with open(root / f"data/splits/{split}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


def stage_env(project: Path) -> dict[str, str]:
    """The environment a stage runs in: this checkout importable, write logging on, no progress bars."""
    hooks = project / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(WRITE_LOG)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]), "QVAD_WRITE_LOG": str(project),
            "TQDM_DISABLE": "1"}


def launch(project: Path, module: str, check: bool = True, **popen: object) -> subprocess.CompletedProcess:
    """``python -m qvad.parallel.launch MODULE`` in ``project``, as dvc.yaml runs a stage."""
    res = subprocess.run([sys.executable, "-m", "qvad.parallel.launch", module], cwd=project,
                         env=stage_env(project), capture_output=True, text=True, timeout=600, **popen)
    if check and res.returncode != 0:
        raise AssertionError(f"{module} failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res


def losses(project: Path) -> list[tuple[int, float]]:
    rows = (project / "dvclive/plots/metrics/loss.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[1])) for r in rows]


def written(project: Path, rank: str) -> set[str]:
    """Project-relative paths a process wrote, under models/, metrics/ or dvclive/."""
    log = project / f"writes-{rank}.txt"
    paths = log.read_text().splitlines() if log.exists() else []
    rel = {os.path.relpath(p, project) for p in paths if p.startswith(str(project) + os.sep)}
    return {p for p in rel if p.split(os.sep)[0] in ("models", "metrics", "dvclive")}


# --- a bad process count, a group of the wrong size --------------------------------------------


@pytest.mark.parametrize("value", [0, -2, "two", 1.5, True, None])
def test_process_count_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(ParamsError, match=r"train\.processes: must be a positive integer"):
        process_count({"train": {"processes": value}})


def test_more_processes_than_gpus_is_refused_naming_the_key() -> None:
    with pytest.raises(ParamsError, match=r"train\.processes: 3 processes but this machine has 2 visible GPUs"):
        check_devices(3, gpus=2)
    check_devices(3, gpus=0)  # a CPU machine: gloo, any count


def test_batch_that_does_not_split_names_both_numbers() -> None:
    with pytest.raises(ParamsError, match=r"train\.batch_size 16 does not split evenly over 3 processes"):
        per_process_batch(16, 3)
    assert per_process_batch(16, 4) == 4


def test_group_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(RuntimeError, match="gloo backend with cpu=True"):
        check_world(1, 2, started=2)  # torchrun started 2, each process alone: use_cpu was missing
    with pytest.raises(RuntimeError, match=r"train\.processes: is 2 but torchrun started 4"):
        check_world(4, 2, started=4)
    check_world(2, 2, started=2)


def test_launcher_refuses_a_bad_count_before_starting_anything(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", processes=0)
    res = launch(project, "stages.train", check=False)
    assert res.returncode != 0
    assert "train.processes: must be a positive integer (processes to start), got 0" in res.stderr
    assert not (project / "models").exists()


# --- two gloo processes started by torchrun --------------------------------------------------


@pytest.mark.slow
def test_two_processes_train_as_one_and_only_rank_0_writes(tmp_path: Path) -> None:
    one, two = make_project(tmp_path / "one", 1), make_project(tmp_path / "two", 2)
    launch(one, "stages.train")
    launch(two, "stages.train")
    steps_one, steps_two = losses(one), losses(two)
    assert [s for s, _ in steps_two] == [s for s, _ in steps_one] == [1, 2, 3]  # global batch 4: 12 clips, 3 steps
    np.testing.assert_allclose([v for _, v in steps_two], [v for _, v in steps_one], rtol=LOSS_RTOL, atol=0)
    assert json.loads((two / "metrics/train.json").read_text())["steps"] == 3
    assert (two / "models/adapter/adapter_model.safetensors").is_file()
    assert not (two / "models/checkpoints").exists()
    rank0, rank1 = written(two, "0"), written(two, "1")
    assert {"models/adapter/adapter_config.json", "metrics/train.json", "dvclive/plots/metrics/loss.tsv"} <= rank0
    # The Trainer saves each process's RNG state into the checkpoint it resumes from; nothing else.
    assert rank1 and all(p.startswith(os.path.join("models", "checkpoints", "checkpoint-")) for p in rank1)


@pytest.mark.slow
def test_two_process_scoring_gives_the_one_process_scores_in_order(tmp_path: Path) -> None:
    from qvad.model.presets.tiny import build_tiny_checkpoint

    for n in (1, 2):
        project = make_project(tmp_path / f"p{n}", n, n_train=1, n_dev=1)
        build_tiny_checkpoint(project / "models/base", seed=3)
        launch(project, "tests.data_parallel_probe")
    alone = np.load(tmp_path / "p1/scores-0-of-1.npz")
    assert alone["logits"].shape == (11, 2) and np.isfinite(alone["logits"]).all()
    for rank in (0, 1):
        shared = np.load(tmp_path / f"p2/scores-{rank}-of-2.npz")
        assert shared["logits"].tobytes() == alone["logits"].tobytes()
        assert shared["p_speech"].tobytes() == alone["p_speech"].tobytes()


@pytest.mark.slow
def test_two_process_training_resumes_after_an_interruption(tmp_path: Path) -> None:
    """Also with gradient checkpointing: under DDP it must be non-reentrant (reentrant checkpointing
    fails with "Expected to mark a variable ready only once")."""
    project = make_project(tmp_path / "p", 2, n_train=24,  # 6 steps, a checkpoint every 2
                           model={"preset": "tiny", "gradient_checkpointing": True})
    proc = subprocess.Popen([sys.executable, "-m", "qvad.parallel.launch", "stages.train"], cwd=project,
                            env=stage_env(project), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list((project / "models/checkpoints").glob("checkpoint-*/trainer_state.json")):
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    # As Ctrl-C or a scheduler stops it: torchrun passes the signal on to its processes (each in a
    # session of its own, so a SIGKILL of torchrun alone would leave them running) and waits for them.
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) != 0
    launch(project, "stages.train")
    train = json.loads((project / "metrics/train.json").read_text())
    assert train["resumed"] is True and train["steps"] == 6
    assert [s for s, _ in losses(project)] == [1, 2, 3, 4, 5, 6]  # rows after the checkpoint dropped, not doubled
