"""python -m analysis bundle: a round trip gives the same tables; a bundle is checked on read."""

import io
import json
import tarfile

import pytest
import wandb
from test_wandb_logger import offline_runs, read_offline_run
from tiny_cell import run_tiny_cell

from analysis.__main__ import main
from analysis.bundle import log_artifact
from benchmarks.errors import ConfigError


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Real records of a tiny grid, and its bundle."""
    folder = tmp_path_factory.mktemp("study")
    for method in ("random", "el2n"):
        for fraction in (0.3, 0.5):
            run_tiny_cell(folder, f"method={method}", f"prune.fraction={fraction}")
    run_tiny_cell(folder, "method=full")
    bundle = folder / "study.tar.gz"
    assert main(["bundle", str(folder / "results"), "--out", str(bundle)]) == 0
    return folder, bundle


def _out(capsys, *argv):
    assert main([*map(str, argv)]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["md", "csv", "latex"])
def test_the_bundle_gives_the_same_tables_as_the_results(study, capsys, fmt):
    folder, bundle = study
    direct = _out(capsys, "leaderboard", folder / "results", "--format", fmt)
    assert _out(capsys, "leaderboard", bundle, "--format", fmt) == direct


def test_the_manifest_lists_every_member_and_what_made_it(study):
    folder, bundle = study
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert set(manifest["members"]) == names - {"manifest.json"}
    records = sorted((folder / "results").glob("*.json"))
    assert {f"records/{p.name}" for p in records} <= names
    assert {f"records/{p.name}" for p in (folder / "results").glob("*.kept.npz")} <= names
    (el2n_scores,) = [
        n for n in names if n.startswith("scores/") and "el2n" in n and n.endswith(".csv")
    ]
    assert el2n_scores + ".json" in names
    assert manifest["records"] == len(records) == 5
    fingerprint = json.loads(records[0].read_text())["data"]["fingerprint"]
    assert manifest["data"] == {"digits": [fingerprint]}
    assert {"torch", "numpy", "scipy"} <= set(manifest["packages"])
    assert manifest["leaderboard"] == _leaderboard(folder)
    assert any("method=el2n" in c for c in manifest["commands"])


def _leaderboard(folder):
    from analysis.collect import collect
    from analysis.leaderboard import build_tables
    from analysis.render import render

    return render(build_tables(collect(str(folder / "results")).runs), "md")


def test_precomputed_and_subset_read_straight_from_the_bundle(study, tmp_path):
    folder, bundle = study
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
    (scores,) = [n for n in names if n.startswith("scores/") and n.endswith(".csv")]
    source = json.loads((next((folder / "results").glob("*_el2n_f0.3_*.json"))).read_text())
    sidecar = f"records/{source['selection']['subset']['file']}"
    again = run_tiny_cell(
        tmp_path, "method=precomputed", f"method.path={bundle}:{scores}", "prune.fraction=0.3"
    )
    assert again["selection"]["kept_indices_sha256"] == source["selection"]["kept_indices_sha256"]
    same = run_tiny_cell(tmp_path, "method=subset", f"method.path={bundle}:{sidecar}")
    assert same["selection"]["kept_indices_sha256"] == source["selection"]["kept_indices_sha256"]
    assert same["metrics"]["test_acc"] == source["metrics"]["test_acc"]


def _rewrite(bundle, out, change):
    """A copy of the bundle with `change(name, data) -> (name, data)` applied to each member."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w:gz") as dst:
        for info in src:
            name, data = change(info.name, src.extractfile(info).read())
            new = tarfile.TarInfo(name)
            new.size = len(data)
            dst.addfile(new, io.BytesIO(data))
    return out


def _refused(capsys, bundle, message):
    assert main(["leaderboard", str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_a_tampered_member_is_refused_in_one_line(study, tmp_path, capsys):
    _, bundle = study

    def tamper(name, data):
        if name.startswith("records/") and name.endswith(".json"):
            record = json.loads(data)
            record["metrics"]["test_acc"] = 1.0
            return name, json.dumps(record).encode()
        return name, data

    _refused(capsys, _rewrite(bundle, tmp_path / "t.tar.gz", tamper), "does not match its sha256")
    with pytest.raises(ConfigError, match="does not match its sha256"):
        run_tiny_cell(
            tmp_path, "method=subset", f"method.path={tmp_path / 't.tar.gz'}:records/x.kept.npz"
        )


@pytest.mark.parametrize("evil", ["../outside.json", "/etc/outside.json", "records/../../x.json"])
def test_a_member_leaving_the_folder_is_refused(study, tmp_path, capsys, evil):
    _, bundle = study

    def escape(name, data):
        return (evil if name.endswith(".kept.npz") else name), data

    _refused(capsys, _rewrite(bundle, tmp_path / "e.tar.gz", escape), "leaves the bundle's folder")
    assert not (tmp_path.parent / "outside.json").exists()


def test_an_unlisted_member_is_refused(study, tmp_path, capsys):
    _, bundle = study
    out = _rewrite(
        bundle, tmp_path / "u.tar.gz", lambda n, d: (n + ".extra" if n.endswith(".csv") else n, d)
    )
    _refused(capsys, out, "is not in the manifest")


def test_the_bundle_is_logged_as_a_wandb_artifact(study, tmp_path, monkeypatch):
    _, bundle = study
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    manifest = {"format": "f", "prunebench": "v", "records": 5, "data": {}}
    log_artifact(bundle, "me/prunebench", manifest)
    wandb.teardown()
    (run_dir,) = offline_runs(tmp_path)
    assert read_offline_run(run_dir)["artifacts"] == ["study"]
