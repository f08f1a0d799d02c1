"""faiss, imported where a method first searches, with its loader's log lines silenced.

faiss's loader logs at INFO every build it tries (AVX512-SPR, AVX512, AVX2, generic) and
why one failed to load. Under Hydra's logging these lines go to stdout: they opened every
run's output and every SLURM task's log, and came before a bad command line's one error
line. Importing faiss on first use also keeps a run that never searches from loading it.
"""

from __future__ import annotations

import logging
from types import ModuleType


def load_faiss() -> ModuleType:
    """The faiss module; its loader still reports a failure to load (an ERROR)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss
