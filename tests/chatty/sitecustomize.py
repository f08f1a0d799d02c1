"""faiss made chatty in every Python process started with this folder on PYTHONPATH.

Its loader's INFO lines (each build it tries, and why one failed) go to stdout, as on a
machine whose logging is set up at INFO before faiss loads. .ci/run reruns the tests of
one-line errors and clean output this way: they must not depend on what a library prints
when it loads.
"""

import logging
import sys

_loader = logging.getLogger("faiss.loader")
_loader.addHandler(logging.StreamHandler(sys.stdout))
_loader.setLevel(logging.INFO)
