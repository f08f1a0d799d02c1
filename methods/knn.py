"""k nearest neighbours of every row among all rows: the exhaustive search D2's graph needs.

faiss searches query by query, so each pair of rows is compared twice. The matrix of
squared distances is symmetric: `exact_knn` computes it block by block on and above the
diagonal only, each block serving its rows and its columns: half the products.
"""

from __future__ import annotations

import numpy as np
import torch

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


def _augmented(x: np.ndarray, norms: np.ndarray, query: bool) -> np.ndarray:
    """[x, ||x||^2, 1] (query rows) or [-2 x, 1, ||x||^2]: their products are squared distances."""
    out = np.empty((x.shape[0], x.shape[1] + 2), dtype=np.float32)
    out[:, :-2] = x if query else -2.0 * x
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
