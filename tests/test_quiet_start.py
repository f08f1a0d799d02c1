"""A run's start-up prints nothing of its libraries' own, and bad input is answered before
the heavy optional libraries (faiss, scipy, timm) load: they load in the methods that use them."""

import os
import subprocess
import sys
from pathlib import Path

from patience import HUNG_AFTER_S

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("faiss", "scipy", "timm")


def python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HUNG_AFTER_S,
    )


def test_the_run_path_and_every_method_load_no_heavy_optional_library():
    # run.py's module, the pipeline its main imports, and every method (what a pre-flight
    # check runs after); plugins load through the same registries
    proc = python(
        "import sys, run, benchmarks.pipeline, methods\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_faiss_loads_without_its_loader_lines_under_logging_at_info():
    at_info = "import logging, sys\nlogging.basicConfig(stream=sys.stdout, level=logging.INFO)\n"
    bare = python(at_info + "import faiss")
    # the reference: faiss's loader is chatty at INFO on every CPU (it names the build it loads)
    assert bare.returncode == 0 and "faiss" in bare.stdout.lower(), bare.stdout
    quiet = python(
        at_info + "from methods.core.faiss_lib import load_faiss\n"
        "assert load_faiss().IndexFlatL2(2).d == 2"
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""


def test_every_analysis_module_loads_no_heavy_optional_library():
    # `python -m analysis` answers a bad folder or option before scipy loads: the tables
    # that need it (intervals, ranks, score correlations) import it themselves
    proc = python(
        "import importlib, pkgutil, sys, analysis\n"
        "for m in pkgutil.iter_modules(analysis.__path__):\n"
        "    if m.name != '__main__':\n"
        "        importlib.import_module('analysis.' + m.name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
