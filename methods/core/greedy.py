"""Greedy maximisation of set functions over one class: whole sequences, not one budget.

A score must rank every example a selection reads, so each greedy here runs until
every example is picked, or for `steps` picks where the run's selection reads no
further (`methods.core.features.picks_needed`); top-k of the order is the greedy selection
for every k it covers.
Ties go to the lowest index, as a plain argmax loop. Inputs are one class's n x n
similarity (float64: 8 n^2 bytes), never the whole training set's.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# candidates whose gains are recomputed at once: memory n x CHUNK similarities
CHUNK = 256


def lazy_greedy(
    initial: np.ndarray,
    gains_of: Callable[[np.ndarray], np.ndarray],
    commit: Callable[[int], None],
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The greedy sequence of a submodular function and each pick's marginal gain.

    Minoux's lazy evaluation: stale gains are upper bounds (submodularity), so an
    element whose freshly computed gain tops every bound is the greedy pick. Stale
    candidates are refreshed in growing batches of the highest bounds; the picks are
    exactly those of the plain greedy loop (ties to the lowest index). `steps` stops after
    that many picks (where the selection reads no further).
    """
    n = initial.size if steps is None else min(steps, initial.size)
    bound = np.asarray(initial, dtype=np.float64).copy()
    fresh = np.ones(bound.size, dtype=bool)
    order = np.empty(n, dtype=np.int64)
    gains = np.empty(n, dtype=np.float64)
    for t in range(n):
        batch = 4
        while True:
            pick = int(np.argmax(bound))
            if fresh[pick]:
                break
            stale = np.flatnonzero(~fresh & np.isfinite(bound))
            if stale.size > batch:
                stale = stale[np.argpartition(-bound[stale], batch - 1)[:batch]]
            bound[stale] = gains_of(stale)
            fresh[stale] = True
            batch = min(2 * batch, CHUNK)
        order[t], gains[t] = pick, bound[pick]
        bound[pick] = -np.inf
        commit(pick)
        fresh[:] = False
    return order, gains


def facility_location_order(
    similarity: np.ndarray, steps: int | None = None, after: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy sequence of F(S) = sum_i max_{s in S} sim(i, s) (sim >= 0), with its gains.

    The gain of e is sum_i max(0, sim(i, e) - cover_i), cover_i = max_{s in S} sim(i, s).
    `after`: the greedy's picks so far (in order); the sequence then continues from them
    (the same picks as one uninterrupted run: the cover is their exact maximum) and only
    the new picks are returned.
    """
    n = similarity.shape[0]
    done = np.zeros(0, dtype=np.int64) if after is None else np.asarray(after, dtype=np.int64)
    cover = similarity[:, done].max(axis=1) if done.size else np.zeros(n, dtype=np.float64)

    def gains_of(candidates: np.ndarray) -> np.ndarray:
        out = np.empty(candidates.size, dtype=np.float64)
        for start in range(0, candidates.size, CHUNK):
            part = candidates[start : start + CHUNK]
            out[start : start + CHUNK] = np.maximum(similarity[:, part] - cover[:, None], 0.0).sum(
                axis=0
            )
        return out

    def commit(pick: int) -> None:
        np.maximum(cover, similarity[:, pick], out=cover)

    initial = gains_of(np.arange(n))
    initial[done] = -np.inf
    remaining = n - done.size
    steps = remaining if steps is None else min(steps, remaining)
    return lazy_greedy(initial, gains_of, commit, steps)


def graph_cut_order(similarity: np.ndarray, lam: float, steps: int | None = None) -> np.ndarray:
    """Greedy sequence of F(S) = lam sum_{i in V, s in S} sim(i, s) - sum_{s, s' in S} sim(s, s').

    The exact gain lam colsum_e - 2 sum_{s in S} sim(s, e) - sim(e, e) is updated in O(n)
    per pick (DeepCore's omits the constant-diagonal term, which ranks the same).
    """
    n = similarity.shape[0]
    gain = lam * similarity.sum(axis=0) - similarity.diagonal()
    order = np.empty(n if steps is None else min(steps, n), dtype=np.int64)
    for t in range(order.size):
        pick = int(np.argmax(gain))
        order[t] = pick
        gain -= 2.0 * similarity[pick]
        gain[pick] = -np.inf
    return order


def log_determinant_order(
    kernel: np.ndarray, floor: float = 1e-10, steps: int | None = None
) -> np.ndarray:
    """Greedy sequence of F(S) = log det K_SS, by incremental Cholesky (Chen et al. 2018).

    The gain of e is log d_e^2, d_e^2 = K_ee - ||c_e||^2 its residual after projecting on
    the picked set; a pick updates every residual in O(n |S|). Once every residual is
    below `floor` (the kernel's rank is used up: all further gains are -inf), the rest
    follow in index order. Memory: |S| x n floats beside the kernel.
    """
    n = kernel.shape[0]
    residual = kernel.diagonal().astype(np.float64).copy()
    picked = np.zeros(n, dtype=bool)
    rows = np.empty((min(n, 64), n), dtype=np.float64)
    order = []
    wanted = n if steps is None else min(steps, n)
    while len(order) < wanted:
        candidates = np.where(picked, -np.inf, residual)
        pick = int(np.argmax(candidates))
        if candidates[pick] <= floor:
            break
        t = len(order)
        if t == rows.shape[0]:
            rows = np.concatenate([rows, np.empty_like(rows)])[: min(n, 2 * t)]
        rows[t] = (kernel[pick] - rows[:t, pick] @ rows[:t]) / np.sqrt(residual[pick])
        residual -= rows[t] ** 2
        picked[pick] = True
        order.append(pick)
    rest = np.flatnonzero(~picked)[: wanted - len(order)]
    return np.concatenate([np.array(order, dtype=np.int64), rest])
