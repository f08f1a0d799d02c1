"""A cell is what the config says plus what it does not: the plugins' code and the content of
the files a method reads. An edited plugin or an overwritten score file is a new cell (and
the run names the record it would have reused); `1` and `1.0` are one cell; records written
before these rules are still found."""

import hashlib
import json
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from test_plugins import brute_force_kept_hash
from test_run import ROOT, records, run_cli

from benchmarks.pipeline import run
from benchmarks.results import legacy_run_key, record_path, write_json_atomic

DIGITS = 1437
MLP = ["model=mlp", "model.width=16", "train.epochs=1", "run.progress=false"]


def run_cell(tmp_path: Path, *overrides: str) -> dict:
    """One cell in this process, as run.py runs it, its results and caches under tmp_path."""
    where = [f"results.dir={tmp_path}/results", f"cache.dir={tmp_path}/cache"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run(compose("config", overrides=[*MLP, *overrides, *where]), progress=False)


def kept_hash(scores: np.ndarray) -> str:
    """The half of digits with the highest scores (all distinct), as sorted indices."""
    keep = DIGITS - int(np.floor(0.5 * DIGITS + 0.5))
    kept = np.sort(np.array(sorted(range(DIGITS), key=lambda i: -scores[i])[:keep]))
    return hashlib.sha256(kept.astype(np.int64).tobytes()).hexdigest()


def test_an_overwritten_score_file_is_a_new_cell_and_the_run_names_the_old_record(tmp_path, capsys):
    scores = tmp_path / "scores.npy"
    first, second = (np.random.default_rng(s).permutation(DIGITS).astype(float) for s in (0, 1))
    np.save(scores, first)
    cell = ["method=precomputed", f"method.path={scores}"]
    old = run_cell(tmp_path, *cell)
    assert old["status"] == "finished"
    assert old["selection"]["kept_indices_sha256"] == kept_hash(first)
    assert old["identity"] == {
        "inputs": {"method.path": hashlib.sha256(scores.read_bytes()).hexdigest()}
    }
    capsys.readouterr()

    np.save(scores, second)  # the same name, other scores
    new = run_cell(tmp_path, *cell)
    assert not new.get("skipped") and new["run_key"] != old["run_key"]
    assert new["selection"]["kept_indices_sha256"] == kept_hash(second)
    line = capsys.readouterr().out.splitlines()[0]
    assert f"method.path content changed since {old['record_path']}" in line, line

    again = run_cell(tmp_path, *cell)  # nothing changed since: the new record is reused
    assert again["skipped"] and again["record_path"] == new["record_path"]


def test_an_edited_plugin_is_a_new_cell_and_the_run_names_the_old_record(tmp_path):
    plugin = tmp_path / "my_methods.py"
    source = """
from dataclasses import dataclass

from methods import PruningMethod, register


@register
@dataclass
class Shade(PruningMethod):
    name = "shade"
    summary = paper = direction = ""

    def score_runs(self, ctx):
        return SIGN * ctx.train_x.double().mean(dim=(1, 2, 3)).cpu().numpy()[None]
"""
    plugin.write_text("SIGN = -1\n" + source)
    cell = ["plugins=[my_methods]", "method=shade", *MLP]
    assert run_cli(tmp_path, *cell).returncode == 0
    (old,) = records(tmp_path)
    assert old["selection"]["kept_indices_sha256"] == brute_force_kept_hash(False)
    code = old["identity"]["code"]["method"]
    assert code == {
        "package": None,
        "module": "my_methods",
        "sha256": hashlib.sha256(plugin.read_bytes()).hexdigest(),
    }

    plugin.write_text("SIGN = 1\n" + source)  # a fix: the brightest kept, not the darkest
    proc = run_cli(tmp_path, *cell)
    assert proc.returncode == 0, proc.stderr
    assert f"method code changed since {old['record_path']}" in proc.stdout, proc.stdout
    new = next(r for r in records(tmp_path) if r["run_key"] != old["run_key"])
    assert new["selection"]["kept_indices_sha256"] == brute_force_kept_hash(True)


def test_delta_1_and_1_0_are_one_cell_and_a_record_of_the_old_key_is_found(tmp_path):
    cell = ["method=infobatch", "data.max_train=300", "data.max_test=100"]
    first = run_cell(tmp_path, *cell, "method.delta=1")
    assert first["status"] == "finished"
    assert run_cell(tmp_path, *cell, "method.delta=1.0")["record_path"] == first["record_path"]

    # a record written before the rule, of `delta=1.0`: its key hashed the float
    old = json.loads(Path(first["record_path"]).read_text())
    Path(first["record_path"]).unlink()
    old["config"]["method"]["delta"] = 1.0
    old["run_key"] = legacy_run_key(old["config"])
    old.pop("identity")
    old["record_path"] = str(record_path(tmp_path / "results", old))
    write_json_atomic(Path(old["record_path"]), old)
    again = run_cell(tmp_path, *cell, "method.delta=1.0")
    assert again["skipped"] and again["record_path"] == old["record_path"]


def test_any_method_option_naming_a_file_puts_its_content_in_the_cell(tmp_path):
    import methods  # noqa: F401  (registers the built-ins)
    from benchmarks.identity import cell_identity

    kept = tmp_path / "kept.npy"
    np.save(kept, np.arange(10))
    cfg = {
        "data": {"name": "digits"},
        "model": {"name": "cnn"},
        "method": {"name": "subset", "path": str(kept), "proxy": {"score_file": str(kept)}},
    }
    digest = hashlib.sha256(kept.read_bytes()).hexdigest()
    assert cell_identity(cfg) == {
        "inputs": {"method.path": digest, "method.proxy.score_file": digest}
    }


def test_a_bundle_member_is_identified_by_its_bundles_content(tmp_path):
    import methods  # noqa: F401  (registers the built-ins)
    from benchmarks.identity import cell_identity

    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(b"first release")
    cfg = {
        "data": {"name": "digits"},
        "model": {"name": "cnn"},
        "method": {"name": "subset", "path": f"{bundle}:subsets/run.kept.npz"},
    }
    first = cell_identity(cfg)
    assert first == {"inputs": {"method.path": hashlib.sha256(b"first release").hexdigest()}}
    bundle.write_bytes(b"second release")
    assert cell_identity(cfg) != first
