"""A loopback HTTP server standing in for the internet, and tiny archives in real layouts.

The server serves a folder as a mirror does (`<mirror>/<host>/<path>` of each official
URL) on 127.0.0.1 only, counts the downloads per path and stops when the test ends.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"


class Mirror:
    def __init__(self, folder: Path, url: str, hits: collections.Counter) -> None:
        self.folder = folder
        self.url = url
        self.hits = hits

    def path_of(self, official_url: str) -> Path:
        """Where a file published at `official_url` must be put to be served."""
        parts = urllib.parse.urlsplit(official_url)
        return self.folder / parts.netloc / parts.path.lstrip("/")

    def gets(self, official_url: str) -> int:
        parts = urllib.parse.urlsplit(official_url)
        return self.hits[f"GET /{parts.netloc}{parts.path}"]


@contextmanager
def serve(folder: Path) -> Iterator[Mirror]:
    hits: collections.Counter = collections.Counter()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            # torchvision first probes for redirects with a GET marked "Method: HEAD" and
            # reads only the headers; the download proper is the other GET.
            probe = self.headers.get("Method") == "HEAD"
            hits[f"{'PROBE' if probe else 'GET'} {self.path}"] += 1
            with suppress(BrokenPipeError, ConnectionResetError):
                super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    folder.mkdir(parents=True, exist_ok=True)
    handler = functools.partial(Handler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Mirror(folder, f"http://127.0.0.1:{server.server_address[1]}", hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cifar_pickle(n: int, label_key: str, classes: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return pickle.dumps({"data": data, label_key: [(seed + i) % classes for i in range(n)]})


def cifar10_tarball(path: Path, per_batch: int = 20) -> Path:
    """The python-pickle tarball's layout: cifar-10-batches-py/{data_batch_1..5,...}."""
    top = "cifar-10-batches-py"
    members = {
        f"{top}/data_batch_{i}": cifar_pickle(per_batch, "labels", 10, i) for i in range(1, 6)
    }
    members[f"{top}/test_batch"] = cifar_pickle(per_batch, "labels", 10, 99)
    names = ["airplane", "automobile", "bird", "cat", "deer"]
    names += ["dog", "frog", "horse", "ship", "truck"]
    members[f"{top}/batches.meta"] = pickle.dumps({"label_names": names})
    return write_tar(path, members)


def cifar100_tarball(path: Path, n: int = 200) -> Path:
    """The python-pickle tarball's layout: cifar-100-python/{train,test,meta}."""
    top = "cifar-100-python"
    meta = {"fine_label_names": [f"class{i:03d}" for i in range(100)]}
    return write_tar(
        path,
        {
            f"{top}/train": cifar_pickle(n, "fine_labels", 100, 0),
            f"{top}/test": cifar_pickle(n // 2, "fine_labels", 100, 1),
            f"{top}/meta": pickle.dumps(meta),
        },
    )


def md5_patch(module_dir: Path, md5s: dict[str, str]) -> Path:
    """A sitecustomize that gives torchvision's CIFAR classes the tiny archives' MD5s.

    Only the test's subprocesses see it (through PYTHONPATH): they then verify the tiny
    archives exactly as they verify the official ones.
    """
    module_dir.mkdir(parents=True, exist_ok=True)
    lines = ["import torchvision.datasets"]
    lines += [f"torchvision.datasets.{name}.tgz_md5 = {value!r}" for name, value in md5s.items()]
    (module_dir / "sitecustomize.py").write_text("\n".join(lines) + "\n")
    return module_dir
