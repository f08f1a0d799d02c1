"""k nearest neighbours of every row among all rows: the searches D2's graph needs.

faiss searches query by query, so each pair of rows is compared twice. The matrix of
squared distances is symmetric: `exact_knn` computes it block by block on and above the
diagonal only, each block serving its rows and its columns: half the products.
`ivf_knn` is the approximate option: an inverted file whose cells search as blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from methods.core.faiss_lib import load_faiss

# rows per block: a block of squared distances is 4,096 x 4,096 float32 (64 MiB)
BLOCK = 4096


def exact_knn(x: np.ndarray, k: int, block: int = BLOCK) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, indices) [n, k] of the k nearest rows of x to each row, in
    ascending distance, each row itself included (float32, exhaustive).

    A block of squared distances ||a||^2 + ||b||^2 - 2 <a, b> is one float32 matrix
    product of the augmented rows [a, ||a||^2, 1] and [-2 b, 1, ||b||^2] (the arithmetic
    of faiss's flat index). The blocks on the diagonal give each row its k nearest within
    its own block; then each block above the diagonal offers each of its rows, and each of
    its columns, the entries closer than that row's current k-th nearest (few, as the k
    nearest settle). Memory beyond x: O(n k + block D + block^2).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n)
    norms = np.einsum("ij,ij->i", x, x)
    best = np.full((n, k), np.inf, dtype=np.float32)
    found = np.full((n, k), -1, dtype=np.int64)
    spans = [(start, min(start + block, n)) for start in range(0, n, block)]
    buffer = np.empty(min(block, n) ** 2, dtype=np.float32)

    def distances(a: tuple[int, int], b: tuple[int, int]) -> np.ndarray:
        rows = _augmented(x[a[0] : a[1]], norms[a[0] : a[1]], query=True)
        columns = _augmented(x[b[0] : b[1]], norms[b[0] : b[1]], query=False)
        out = buffer[: rows.shape[0] * columns.shape[0]].reshape(rows.shape[0], -1)
        return np.matmul(rows, columns.T, out=out)

    for start, stop in spans:
        squared = torch.from_numpy(distances((start, stop), (start, stop)))
        values, pick = torch.topk(squared, min(k, stop - start), dim=1, largest=False)
        best[start:stop, : values.shape[1]] = values.numpy()
        found[start:stop, : values.shape[1]] = pick.numpy() + start
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            squared = distances(a, b)
            width = squared.shape[1]
            closer = np.flatnonzero(squared < best[a[0] : a[1], -1:])
            rows, columns = np.divmod(closer, width)
            _fold(best, found, rows + a[0], columns + b[0], squared.ravel()[closer])
            closer = np.flatnonzero(squared < best[b[0] : b[1], -1])
            rows, columns = np.divmod(closer, width)
            _fold(best, found, columns + b[0], rows + a[0], squared.ravel()[closer])
    return best, found


# the approximate search's cells: 4 sqrt(n) k-means cells trained on a sample of this many
# points per cell (faiss's least without a warning), for this many Lloyd iterations
IVF_TRAIN_POINTS_PER_CELL = 39
IVF_ITERATIONS = 10
# mean cells of rows each cell searches (recall against time: `python -m benchmarks.speed knn`)
IVF_PROBES = 96


def ivf_knn(x: np.ndarray, k: int, probes: int = IVF_PROBES) -> tuple[np.ndarray, np.ndarray]:
    """(squared distances, indices) [n, k] of approximately the k nearest rows of x to each
    row, in ascending distance, each row itself included (float32).

    An inverted file: faiss's k-means cuts the rows into 4 sqrt(n) cells (at most n / 39),
    and each cell's rows search, by one matrix product, the rows of the cells whose
    centroids lie nearest their own centroid, nearest first, until those hold `probes`
    mean cells of rows (probing by cell, not by row, needs more cells than faiss's per-row
    probing for the same recall: 48 of 76 cells find 0.96 of the exact neighbours of 3,000
    Gaussian points in 16 dimensions, 32 only 0.87). A budget of rows rather than of cells
    bounds the work by n x `probes` x the mean cell whatever the cells' sizes: k-means
    cells can be very uneven (on random Gaussian features in 512 dimensions the largest of
    894 cells held 576 rows against a mean of 56, and searching 48 whole cells computed
    6.3 x the distances). A neighbour in a cell not probed is missed.
    Rows whose probed cells hold fewer than k rows are searched exhaustively.
    """
    faiss = load_faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    k = min(k, n)
    cells = ivf_cells(n)
    kmeans = faiss.Kmeans(
        dim,
        cells,
        niter=IVF_ITERATIONS,
        max_points_per_centroid=IVF_TRAIN_POINTS_PER_CELL,
        min_points_per_centroid=1,
    )
    kmeans.train(x)
    _, cell_of = kmeans.index.search(x, 1)
    members = np.argsort(cell_of[:, 0], kind="stable")
    bounds = np.searchsorted(cell_of[members, 0], np.arange(cells + 1))
    probed = _probed_cells(kmeans.centroids, np.diff(bounds), probes * n / cells)
    norms = np.einsum("ij,ij->i", x, x)
    columns = np.empty((n, dim + 2), dtype=np.float32)  # the rows in cell order
    for start in range(0, n, BLOCK):  # block by block: no second copy of the features
        rows = members[start : start + BLOCK]
        columns[start : start + BLOCK] = _augmented(x[rows], norms[rows], query=False)
    columns = torch.from_numpy(columns)
    best = np.full((n, k), np.inf, dtype=np.float32)
    found = np.full((n, k), -1, dtype=np.int64)
    for cell in range(cells):
        rows = members[bounds[cell] : bounds[cell + 1]]
        if rows.size == 0:
            continue
        spans = [np.arange(bounds[c], bounds[c + 1]) for c in probed[cell]]
        near = torch.from_numpy(np.concatenate(spans))
        squared = torch.from_numpy(_augmented(x[rows], norms[rows], query=True)) @ columns[near].T
        values, pick = torch.topk(squared, min(k, near.numel()), dim=1, largest=False)
        best[rows, : values.shape[1]] = values.numpy()
        found[rows, : values.shape[1]] = members[near[pick].numpy()]
    short = np.flatnonzero((found < 0).any(axis=1))
    if short.size:
        flat = faiss.IndexFlatL2(dim)
        flat.add(x)
        best[short], found[short] = flat.search(x[short], k)
    return best, found


def ivf_cells(n: int) -> int:
    """The approximate search's number of cells for n rows: 4 sqrt(n), at most n / 39."""
    return max(1, min(n // IVF_TRAIN_POINTS_PER_CELL, round(4 * np.sqrt(n))))


def _probed_cells(centroids: np.ndarray, sizes: np.ndarray, rows: float) -> list[np.ndarray]:
    """For each cell, the cells nearest its centroid (itself first), nearest first, until they
    hold at least `rows` rows (or all cells)."""
    faiss = load_faiss()
    cells = centroids.shape[0]
    reach = min(cells, 64)
    while True:
        _, near = faiss.knn(centroids, centroids, reach)
        held = np.cumsum(sizes[near], axis=1)
        enough = held[:, -1] >= rows
        if enough.all() or reach == cells:
            break
        reach = min(cells, 4 * reach)
    count = np.minimum(reach, 1 + np.sum(held < rows, axis=1))
    return [near[c, : count[c]] for c in range(cells)]


def _augmented(x: np.ndarray, norms: np.ndarray, query: bool) -> np.ndarray:
    """[x, ||x||^2, 1] (query rows) or [-2 x, 1, ||x||^2]: their products are squared distances."""
    out = np.empty((x.shape[0], x.shape[1] + 2), dtype=np.float32)
    out[:, :-2] = x
    if not query:
        out[:, :-2] *= -2.0
    out[:, -2] = norms if query else 1.0
    out[:, -1] = 1.0 if query else norms
    return out


def _fold(
    best: np.ndarray, found: np.ndarray, rows: np.ndarray, ids: np.ndarray, values: np.ndarray
) -> None:
    """Merge candidates (row, id, squared distance) into each row's k nearest, kept sorted
    (ties to the entry held first)."""
    if rows.size == 0:
        return
    k = best.shape[1]
    touched = np.unique(rows)
    every_row = np.concatenate([np.repeat(touched, k), rows])
    every_value = np.concatenate([best[touched].ravel(), values])
    every_id = np.concatenate([found[touched].ravel(), ids])
    order = np.lexsort((every_value, every_row))
    starts = np.searchsorted(every_row[order], touched)
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.append(starts, order.size)))
    kept = order[rank < k]
    best[touched] = every_value[kept].reshape(-1, k)
    found[touched] = every_id[kept].reshape(-1, k)
