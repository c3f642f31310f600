"""End to end: `dvc repro` on tiny params in a temporary copy of the repo.

The real workspace is never touched: tracked files are copied to a temp dir, DVC runs
there without git (core.no_scm) with its caches under the temp dir, and the builtin
corpus is cut to a few packages and files per package.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import DVC, TINY, make_copy, out_hashes, run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


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
