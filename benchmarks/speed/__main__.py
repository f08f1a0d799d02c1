"""`python -m benchmarks.speed [geometry|knn|selection|grand_memory|stream|stream_feed|busy|
data_parallel] ...`: every measurement.

Without a part name, the training and scoring speed against the usual way
(benchmarks/speed/training.py); with one, that part's own options (`--help` after it).
"""

from __future__ import annotations

import sys

from benchmarks.speed import (
    busy,
    data_parallel,
    geometry,
    grand_memory,
    knn,
    selection,
    stream,
    stream_feed,
    training,
)

PARTS = {
    "geometry": geometry.main,
    "knn": knn.main,
    "selection": selection.main,
    "grand_memory": grand_memory.main,
    "stream": stream.main,
    "stream_feed": stream_feed.main,
    "busy": busy.main,
    "data_parallel": data_parallel.main,
}


def main() -> None:
    if sys.argv[1:2] and sys.argv[1] in PARTS:
        PARTS[sys.argv[1]](sys.argv[2:])
    else:
        training.main(sys.argv[1:])


if __name__ == "__main__":
    main()
