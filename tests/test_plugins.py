"""Plugins from outside the repository run exactly like built-ins.

The external package tests/plugin_pkg (installed with pip, as CI does) registers the
method `brightness`, the model `tiny` and the data set `stripes` through entry points
naming modules, and the method `spread` and the model `wide` through entry points naming
the class and the factory; a single file registers `darkness` through `plugins=[...]`.
Their kept subsets are checked against a brute-force ranking of the images' pixels.
"""

import hashlib
import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest
from test_run import ROOT, run_cli

from benchmarks.data import load_dataset
from benchmarks.errors import ConfigError
from benchmarks.plugins import _load, entry_point_origin, load_entry_point, plugins_in_overrides

PACKAGE = "prunebench-plugin-example"
SEARCHPATH = "hydra.searchpath=[pkg://prunebench_plugin_example.conf]"
DARKNESS = """
from dataclasses import dataclass

from methods.core.base import PruningMethod
from methods.core.registry import register


@register
@dataclass
class Darkness(PruningMethod):
    name = "darkness"
    summary = "minus alpha times the mean pixel value"
    paper = "none"
    direction = "high = dark = kept first"
    alpha: float = 1.0

    def score_runs(self, ctx):
        return -self.alpha * ctx.train_x.double().mean(dim=(1, 2, 3)).cpu().numpy()[None]
"""

pytestmark = pytest.mark.skipif(
    not any(d.metadata["Name"] == PACKAGE for d in importlib.metadata.distributions()),
    reason=f"the test plugin is not installed: pip install {ROOT}/tests/plugin_pkg",
)


def brute_force_kept_hash(
    brightest_first: bool, fraction: float = 0.5, statistic: str = "mean"
) -> str:
    """Top (1 - fraction) of digits by each image's pixel mean (or standard deviation),
    ties by index, as sorted indices."""
    pixels = load_dataset({"name": "digits"}).train_x.double().flatten(1).numpy()
    x = pixels.std(axis=1, ddof=1) if statistic == "std" else pixels.mean(axis=1)
    n = x.size
    keep = n - int(np.floor(fraction * n + 0.5))
    ranked = sorted(range(n), key=lambda i: (-x[i] if brightest_first else x[i], i))
    kept = np.sort(np.array(ranked[:keep], dtype=np.int64))
    return hashlib.sha256(kept.tobytes()).hexdigest()


def records(results):
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def test_package_sweeps_with_built_ins_into_one_leaderboard(tmp_path):
    proc = run_cli(
        tmp_path,
        "-m",
        "method=brightness,random",
        "model=tiny,cnn",
        "data=digits,stripes",
        "train.epochs=1",
        SEARCHPATH,
    )
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path / "results")
    cells = sorted((r["cell"]["method"], r["cell"]["model"], r["cell"]["data"]) for r in recs)
    assert cells == sorted(
        (m, model, d)
        for m in ("brightness", "random")
        for model in ("tiny", "cnn")
        for d in ("digits", "stripes")
    )
    for r in recs:
        if r["cell"]["method"] == "brightness" and r["cell"]["data"] == "digits":
            assert r["selection"]["method_options"] == {"power": 1.0}  # from the package's yaml
            assert r["selection"]["kept_indices_sha256"] == brute_force_kept_hash(True)
        if r["cell"]["data"] == "stripes":
            assert r["data"]["n_train"] == 300 and r["selection"]["kept"] == 150
    board = subprocess.run(
        [sys.executable, "-m", "analysis", "leaderboard", str(tmp_path / "results")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    for data, model in (("digits", "tiny"), ("digits", "cnn"), ("stripes", "tiny")):
        assert f"### {data} / {model}" in board
    assert board.count("| brightness |") >= 4 and board.count("| random |") >= 4


def test_file_module_without_yaml_composes_from_its_defaults(tmp_path):
    (tmp_path / "my_methods.py").write_text(DARKNESS)
    proc = run_cli(
        tmp_path,
        "-m",
        "plugins=[my_methods]",
        "method=darkness",
        "method.alpha=0.3,2",
        "train.epochs=1",
    )
    assert proc.returncode == 0, proc.stderr
    recs = records(tmp_path / "results")
    assert sorted(r["selection"]["method_options"]["alpha"] for r in recs) == [0.3, 2.0]
    for r in recs:
        assert r["config"]["method"]["label"] is None  # the defaults, not a yaml
        assert r["selection"]["kept_indices_sha256"] == brute_force_kept_hash(False)
    listing = subprocess.run(
        [sys.executable, "-m", "methods", "my_methods"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout
    assert f"from      plugin my_methods ({tmp_path / 'my_methods.py'})" in listing
    assert f"from      {PACKAGE} 0.1.0 (entry point prunebench.methods: brightness)" in listing


def test_entry_points_naming_a_class_and_a_factory_register_them_under_their_names(tmp_path):
    proc = run_cli(tmp_path, "method=spread", "model=wide", "model.width=8", "train.epochs=1")
    assert proc.returncode == 0, proc.stderr
    (rec,) = records(tmp_path / "results")
    assert (rec["cell"]["method"], rec["cell"]["method_name"], rec["cell"]["model"]) == (
        "spread",
        "spread",
        "wide",
    )
    assert rec["selection"]["kept_indices_sha256"] == brute_force_kept_hash(True, statistic="std")
    listing = subprocess.run(
        [sys.executable, "-m", "methods"], capture_output=True, text=True, cwd=ROOT, check=True
    ).stdout
    block = listing[listing.index("\nspread\n") :]
    assert "standard deviation of the image's pixel values" in block
    assert f"from      {PACKAGE} 0.1.0 (entry point prunebench.methods: spread)" in block


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (  # the package's folder of yaml files: a module, registering nothing
            "prunebench_plugin_example.conf",
            "names module prunebench_plugin_example.conf, which registers no method; register "
            "one in it, or name the PruningMethod subclass itself "
            "(prunebench_plugin_example.conf:Name)",
        ),
        ("json:dumps", "names json:dumps, not a module nor a PruningMethod subclass"),
    ],
)
def test_an_entry_point_that_registers_nothing_is_an_error_naming_it(value, message):
    point = importlib.metadata.EntryPoint(name="nothing", value=value, group="prunebench.methods")
    with pytest.raises(ConfigError) as err:
        load_entry_point(point)
    assert str(err.value) == f"{value} (entry point prunebench.methods: nothing) {message}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import not_a_module_xyz\n", "failed to import: ModuleNotFoundError: No module named"),
        (
            "from methods.el2n import EL2N\nfrom methods.core.registry import register\n"
            "register(EL2N)\n",
            "registers method 'el2n', which prunebench already registers; choose another name",
        ),
    ],
)
def test_bad_plugin_is_one_line_naming_it(tmp_path, source, message):
    (tmp_path / "bad_plugin.py").write_text(source)
    proc = run_cli(tmp_path, "plugins=[bad_plugin]")
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("prunebench: error: plugin bad_plugin") and message in line
    assert not (tmp_path / "results").exists()


def test_broken_entry_point_names_its_package():
    point = importlib.metadata.EntryPoint(
        name="gone", value="no_such_plugin_module", group="prunebench.methods"
    )
    with pytest.raises(ConfigError, match="no_such_plugin_module .*failed to import"):
        _load("test:gone", entry_point_origin(point), point.load)


def test_plugins_are_read_from_the_command_line_before_composition():
    assert plugins_in_overrides(["method=x", "plugins=[a,b.c]", "seed=1"]) == ["a", "b.c"]
    assert plugins_in_overrides(["+plugins=[./m.py]"]) == ["./m.py"]
    assert plugins_in_overrides(["seed=1"]) == []
