"""The config schema: every shipped config composes, every unknown key or wrong type is
one line and exit 2 before any work, and the schema adds no key the yaml files lack."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from patience import HUNG_AFTER_S

from benchmarks.config_schema import describe, validate
from benchmarks.errors import ConfigError
from benchmarks.models import check_model
from benchmarks.pipeline import method_from_config

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def _compose(overrides, name="config"):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=overrides)


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [
        f"{group}={option}"
        for group in ("data", "model", "method", "train", "logger", "experiment")
        for option in _options(group)
    ],
)
def test_every_shipped_config_composes_and_validates(override):
    validate(_compose([override]))


def test_score_config_adds_its_output_file():
    cfg = _compose(["method=el2n", "out=el2n.npy"], name="score")
    validate(cfg)
    assert cfg.out == "el2n.npy"
    with pytest.raises(HydraException):
        _compose(["out=x.csv"])  # run.py's config has no `out`


def test_the_schema_adds_no_key_the_yaml_files_do_not_set():
    """So a run's key (a hash of its config) is the same as before the schema existed."""
    top = yaml.safe_load((CONF / "config.yaml").read_text())
    for option in _options("data"):
        own = yaml.safe_load((CONF / "data" / f"{option}.yaml").read_text())
        cfg = _compose([f"data={option}"])
        assert set(cfg.data) == set(top["data"]) | set(own), option
    cfg = _compose([])
    assert set(cfg.train) == set(yaml.safe_load((CONF / "train" / "default.yaml").read_text()))
    assert set(cfg.prune) == set(yaml.safe_load((CONF / "prune" / "default.yaml").read_text()))
    assert set(cfg) == {k for k in top if k not in ("defaults", "hydra")} | {
        "data",
        "model",
        "method",
        "prune",
        "train",
        "logger",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method=el2n", "method.runs=abc"], "method.runs='abc' must be an integer"),
        (
            ["method=el2n", "method.proxy.epochs=2.5"],
            "method.proxy.epochs=2.5 must be an integer or null",
        ),
        (["method=tdds", "method.decay=abc"], "method.decay='abc' must be a number"),
    ],
)
def test_method_options_are_type_checked(overrides, message):
    with pytest.raises(ConfigError) as err:
        method_from_config(_compose(overrides).method)
    assert str(err.value) == message


def test_model_options_are_type_checked():
    with pytest.raises(ConfigError, match=r"model\.width='abc' must be an integer"):
        check_model("cnn", {"width": "abc"})
    check_model("cnn", {"width": 8})


def test_a_compose_error_reads_as_one_line():
    with pytest.raises(HydraException) as err:
        _compose(["method=foo"])
    line = describe(err.value)
    assert "\n" not in line and "Could not find 'method/foo'" in line and "random" in line
    assert "search path" not in line


BAD_INPUTS = [
    # unknown keys, with `+` or not: (override, what the line names)
    ("+train.epoch=5", "unknown key 'train.epoch'; train takes:"),
    ("+prune.fractoin=0.9", "unknown key 'prune.fractoin'; prune takes:"),
    ("+data.max_trian=100", "unknown key 'data.max_trian'; data takes:"),
    ("+data.valid=val", "unknown key 'data.valid'"),  # a key of cinic10 only
    ("+sede=3", "unknown key 'sede'; the top level takes:"),
    ("+foo=1", "unknown key 'foo'"),
    ("train.epoch=5", "unknown key 'train.epoch'"),
    # the open sections list the method's and the model's own options
    (
        "method.epcoh=3",
        "unknown key 'method.epcoh'; method 'el2n' takes: ccs_epochs, epoch, epoch_fraction, "
        "label, proxy, runs, variant",
    ),
    ("model.widht=3", "unknown key 'model.widht'; model 'cnn' takes: width"),
    # wrong types
    ("seed=abc", "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    ("train.epochs=abc", "train.epochs: Value 'abc'"),
    (
        "train.epochs=2.5",
        "train.epochs: Value '2.5' of type 'float' could not be converted to Integer",
    ),
    ("train.lr=abc", "train.lr: Value 'abc' of type 'str' could not be converted to Float"),
    ("prune.fraction=abc", "prune.fraction: Value 'abc'"),
    ("prune.offset=abc", "prune.offset: Value 'abc'"),
    ("data.label_noise=abc", "data.label_noise: Value 'abc'"),
    ("method.runs=abc", "method.runs='abc' must be an integer"),
    ("score.proxy_parallel=model", "score.proxy_parallel='model' is not one of runs, data"),
]


@pytest.mark.parametrize(("override", "message"), BAD_INPUTS)
def test_bad_key_or_type_is_one_line_exit_2_and_no_record(tmp_path, override, message):
    env = {
        **os.environ,
        "PRUNEBENCH_RESULTS": str(tmp_path / "results"),
        "PRUNEBENCH_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("HYDRA_FULL_ERROR", None)
    method = ["method=el2n"] if override.startswith("method.") else []
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *method, override, f"hydra.run.dir={tmp_path}/out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("prunebench: error: ") and message in line
    assert "HYDRA_FULL_ERROR" not in proc.stderr
    assert not (tmp_path / "results").exists()
