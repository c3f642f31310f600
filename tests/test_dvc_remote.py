"""Sharing data and experiments: push to a DVC remote, clone afresh, pull, and nothing recomputes.

The project is committed to a throw-away git repo whose `origin` is a local bare repo, with a
local-folder DVC remote (the same `dvc remote add` docs/reproducibility.md documents for a folder or S3).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import DVC, TINY, make_copy, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GIT_ID = ["-c", "user.name=qvad-test", "-c", "user.email=test@qvad.invalid"]


def git(repo: Path, *args: str) -> str:
    return run(["git", *GIT_ID, *args], repo).stdout


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A project with its data stages run, pushed to a DVC remote and a bare git origin."""
    tmp = tmp_path_factory.mktemp("remote")
    repo = make_copy(tmp, TINY)
    (repo / ".dvc" / "config.local").unlink()  # a real git project, not core.no_scm
    git(repo, "init", "-q", "-b", "main")
    run([*DVC, "config", "--local", "cache.dir", str(tmp / "cache_a")], repo)
    remote, origin = tmp / "dvc_remote", tmp / "origin.git"
    run([*DVC, "remote", "add", "-d", "shared", str(remote)], repo)
    run([*DVC, "repro", "audit"], repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data stages")
    run([*DVC, "push"], repo)
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp)
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    return {"tmp": tmp, "repo": repo, "remote": remote, "origin": origin}


def fresh_clone(shared: dict[str, Path], name: str) -> Path:
    clone = shared["tmp"] / name
    run(["git", "clone", "-q", "-b", "main", str(shared["origin"]), str(clone)], shared["tmp"])
    run([*DVC, "config", "--local", "cache.dir", str(shared["tmp"] / f"cache_{name}")], clone)
    return clone


def test_pull_into_a_fresh_clone_needs_no_recompute(shared):
    clone = fresh_clone(shared, "clone")
    assert not (clone / "data" / "splits").exists()
    run([*DVC, "pull", "--with-deps", "audit"], clone)  # only the data stages ran here
    status = run([*DVC, "status", "--json", "audit"], clone)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    dry = run([*DVC, "repro", "--dry", "audit"], clone).stdout
    assert "Running stage" not in dry, dry
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert (clone / lock["stages"]["group_split"]["outs"][0]["path"]).exists()


def test_experiment_push_and_pull_through_git_remote(shared):
    repo = shared["repo"]
    run([*DVC, "exp", "run", "-n", "stricter-audit", "-S", "audit.max_class_imbalance=0.3", "audit"], repo)
    run([*DVC, "exp", "push", "origin", "stricter-audit"], repo)
    clone = fresh_clone(shared, "clone_exp")
    run([*DVC, "exp", "pull", "origin", "stricter-audit"], clone)
    shown = json.loads(run([*DVC, "exp", "show", "--json"], clone).stdout)
    pulled = {rev.get("name"): rev for commit in shown for exp in (commit.get("experiments") or [])
              for rev in exp.get("revs", [])}
    assert "stricter-audit" in pulled, list(pulled)
    params = pulled["stricter-audit"]["data"]["params"]["params.yaml"]["data"]
    assert params["audit"]["max_class_imbalance"] == 0.3
    audit = pulled["stricter-audit"]["data"]["metrics"]["metrics/audit.json"]["data"]
    assert audit["passed"] is True  # the experiment's metrics travelled with it
