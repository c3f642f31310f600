"""End to end: `dvc repro` on tiny params in a temporary copy of the repo.

The real workspace is never touched: tracked files are copied to a temp dir, DVC runs
there without git (core.no_scm) with its caches under the temp dir, and the builtin
corpus is cut to a few packages and files per package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]

TINY = {
    "data": {"packages": ["klettres-data", "sound-theme-freedesktop", "frozen-bubble-data", "lincity-ng-data"],
             "max_files_per_package": 45, "max_seconds_per_file": 8},
    "mix": {"durations_ms": [200, 1000], "snrs_db": [0, 20], "clips_per_cell": 10, "max_group_share": 0.5},
    "audit": {"min_per_cell": 1, "max_class_imbalance": 0.25},
}


def merge(base: dict, over: dict) -> dict:
    """Recursive dict update (params overrides)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    # dvc.yaml says `python`: make it the interpreter running the tests (the venv's).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(cwd), "PATH": path}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


def make_copy(tmp: Path, overrides: dict) -> Path:
    """Copy the tracked files into ``tmp/repo`` and set up a git-less DVC project there."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    repo = tmp / "repo"
    for rel in filter(None, files.decode().split("\0")):
        src, dst = ROOT / rel, repo / rel
        if src.is_file() and not rel.startswith(("data/", "models/", "metrics/", "plots/")) and rel != "dvc.lock":
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for d in ("data", "models", "metrics", "plots"):
        (repo / d).mkdir(exist_ok=True)
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([*DVC, "config", "--local", "core.no_scm", "true"], repo)
    run([*DVC, "config", "--local", "core.site_cache_dir", str(tmp / "site_cache")], repo)
    run([*DVC, "config", "--local", "cache.dir", str(tmp / "cache")], repo)
    return repo


def out_hashes(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])}


@pytest.fixture(scope="module")
def data_repo(tmp_path_factory) -> Path:
    repo = make_copy(tmp_path_factory.mktemp("e2e_data"), TINY)
    run([*DVC, "repro", "audit"], repo)
    return repo


def test_data_stages_produce_manifests_and_pass_audit(data_repo):
    manifest = (data_repo / "data/raw/manifest.csv").read_text().splitlines()
    assert manifest[0].startswith("id,path,label,group,package,version,licence")
    download = json.loads((data_repo / "metrics/download.json").read_text())
    assert set(download["per_class"]) == {"speech", "nonspeech"}
    assert download["per_package"]["klettres-data"]["files"] == 45
    hygiene = json.loads((data_repo / "metrics/hygiene.json").read_text())
    assert hygiene["per_class"]["speech"]["minutes_kept"] > 0
    audit = json.loads((data_repo / "metrics/audit.json").read_text())
    assert audit["passed"] and set(audit["overlaps"].values()) == {0}
    assert sum(audit["clips_per_split"].values()) == 2 * 2 * 2 * 10


def test_same_params_give_same_bytes(data_repo):
    before = out_hashes(data_repo)
    run([*DVC, "repro", "--force", "audit"], data_repo)
    assert out_hashes(data_repo) == before


def test_bad_params_value_is_named(data_repo, tmp_path):
    params = yaml.safe_load((data_repo / "params.yaml").read_text())
    params["normalize"]["method"] = "loudness"
    (data_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        res = run([*DVC, "repro", "normalize"], data_repo, check=False)
        assert res.returncode != 0 and "normalize.method" in res.stderr + res.stdout
    finally:
        params["normalize"]["method"] = "peak"
        (data_repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_planted_leak_stops_the_pipeline(data_repo):
    """A test clip relabelled into a train group makes `dvc repro audit` fail, naming the leak."""
    import pandas as pd

    split_dir = data_repo / "data/splits"
    train, test = (pd.read_csv(split_dir / f"{s}.csv", keep_default_na=False) for s in ("train", "test"))
    test.loc[0, "group"] = train.loc[0, "group"]
    os.chmod(split_dir / "test.csv", 0o644)
    test.to_csv(split_dir / "test.csv", index=False)
    res = run([sys.executable, "-m", "stages.audit"], data_repo, check=False)
    assert res.returncode == 1 and "source_group: 1 shared across splits" in res.stderr
