"""Independent random streams derived from one run seed.

Model initialisation, data order, augmentation and scoring each get their own
stream, so that changing one (say the data order) leaves the others untouched.
"""

from __future__ import annotations

import hashlib

# the score seed (method.proxy.seed, score.proxy_seed) that follows the cell's own seed
CELL_SEED = "cell"


def derive_seed(seed: int, purpose: str, *index: int) -> int:
    """A 63-bit seed that depends only on (seed, purpose, index...)."""
    text = ":".join([str(int(seed)), purpose, *(str(int(i)) for i in index)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
