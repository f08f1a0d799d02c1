"""D2 pruning (Maharana et al., ICLR 2024): message passing over a k-NN graph of the data."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import faiss
import numpy as np

from benchmarks.errors import ConfigError
from methods.base import ScoreContext
from methods.dynamics import at_epoch, dynamics
from methods.features import FeatureMethod, order_scores
from methods.forgetting import forgetting_score
from methods.registry import register

DIFFICULTIES = ("el2n", "forgetting")


@dataclass(frozen=True)
class Graph:
    """Undirected k-NN graph in CSR form: i's neighbours: neighbors[indptr[i]:indptr[i+1]]."""

    indptr: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray

    @property
    def sources(self) -> np.ndarray:
        return np.repeat(np.arange(self.indptr.size - 1), np.diff(self.indptr))

    def around(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        span = slice(self.indptr[i], self.indptr[i + 1])
        return self.neighbors[span], self.distances[span]


KNN_INDEXES = ("exact", "ivf")


def knn_graph(features: np.ndarray, k: int, index: str = "exact") -> Graph:
    """Edges i-j where j is among i's k nearest (Euclidean) or i among j's, as the official code.

    `exact`: exhaustive search (faiss's flat L2 index, float32, blocked: memory O(N k)
    beyond the features), the graph the method is defined on. `ivf`: approximate, an
    explicit option for ImageNet-size N: faiss's inverted file over 4 sqrt(N) k-means
    cells, searching the 32 nearest cells of each point. Each point's own entry is dropped
    from its k + 1 nearest (or, among more than k + 1 duplicates, the last one).
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    n = x.shape[0]
    squared, found = _search(x, k + 1, index)
    own = found == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    others = np.ones_like(own)
    others[np.arange(n), drop] = False
    src = np.repeat(np.arange(n, dtype=np.int64), k)
    dst = found[others].astype(np.int64)
    dist = np.sqrt(np.maximum(squared[others], 0.0)).astype(np.float64)
    pairs = np.concatenate([src * n + dst, dst * n + src])
    unique, first = np.unique(pairs, return_index=True)
    both = np.concatenate([dist, dist])[first]
    indptr = np.searchsorted(unique // n, np.arange(n + 1))
    return Graph(indptr=indptr, neighbors=unique % n, distances=both)


def _search(x: np.ndarray, k: int, index: str) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of x to each row (squared distances, indices)."""
    flat = faiss.IndexFlatL2(x.shape[1])
    flat.add(x)
    if index == "exact":
        return flat.search(x, k)
    cells = max(1, min(x.shape[0] // 39, round(4 * np.sqrt(x.shape[0]))))
    ivf = faiss.IndexIVFFlat(flat, x.shape[1], cells)
    ivf.train(x)
    ivf.add(x)
    ivf.nprobe = min(cells, 32)
    squared, found = ivf.search(x, k)
    short = np.flatnonzero((found < 0).any(axis=1))  # the cells searched held under k points
    if short.size:
        squared[short], found[short] = flat.search(x[short], k)
    return squared, found


def forward_pass(scores: np.ndarray, graph: Graph, gamma: float) -> np.ndarray:
    """s_i' = s_i + sum_{j in N(i)} exp(-gamma_f d(i, j)) s_j."""
    messages = np.exp(-gamma * graph.distances) * scores[graph.neighbors]
    return scores + np.bincount(graph.sources, weights=messages, minlength=scores.size)


def reverse_order(scores: np.ndarray, graph: Graph, gamma: float) -> np.ndarray:
    """D2's selection order by reverse message passing.

    Pick the highest score i (ties to the lowest index), lower each unpicked neighbour
    s_j <- s_j - exp(-gamma_r d(i, j)) s_i, and repeat until every node is picked.
    """
    current = scores.astype(np.float64).copy()
    picked = np.zeros(current.size, dtype=bool)
    heap = [(-value, i) for i, value in enumerate(current)]
    heapq.heapify(heap)
    order = []
    while heap:
        negative, i = heapq.heappop(heap)
        if picked[i] or -negative != current[i]:
            continue
        picked[i] = True
        order.append(i)
        neighbors, distances = graph.around(i)
        free = ~picked[neighbors]
        neighbors = neighbors[free]
        current[neighbors] -= np.exp(-gamma * distances[free]) * current[i]
        for j in neighbors:
            heapq.heappush(heap, (-current[j], int(j)))
    return np.asarray(order)


@register
@dataclass
class D2Pruning(FeatureMethod):
    """D2 on a k-NN graph of the proxy's features, node difficulty from the same proxy run.

    `difficulty`: el2n (at `difficulty_epoch`) or forgetting (whole training). The graph
    is symmetrised as the official code; the selection order is expressed as a score.
    """

    name = "d2"
    summary = (
        "(n - rank) / n in D2's order: difficulty + exp(-gamma_f d)-weighted neighbour "
        "difficulty, then greedy picks that lower neighbours by exp(-gamma_r d) * own score"
    )
    paper = (
        "Maharana, Yadav, Bansal. D2 Pruning: Message Passing for Balancing Diversity and "
        "Difficulty in Data Pruning. ICLR 2024"
    )
    direction = "high = picked earlier = kept first (keep=hard = the D2 selection)"

    difficulty: str = "el2n"
    difficulty_epoch: int = 20
    neighbors: int = 10
    gamma_forward: float = 1.0
    gamma_reverse: float = 1.0
    knn: str = "exact"

    epoch_options = ("epoch", "difficulty_epoch")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.difficulty not in DIFFICULTIES:
            raise ConfigError(
                f"method.difficulty={self.difficulty!r} is not one of {', '.join(DIFFICULTIES)}"
            )
        if self.neighbors < 1:
            raise ConfigError(f"method.neighbors={self.neighbors} must be >= 1")
        if self.knn not in KNN_INDEXES:
            raise ConfigError(f"method.knn={self.knn!r} is not one of {', '.join(KNN_INDEXES)}")

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        if self.neighbors >= ctx.n:
            raise ConfigError(f"method.neighbors={self.neighbors} needs more than {ctx.n} examples")
        graph = knn_graph(self.features(ctx, run), self.neighbors, self.knn)
        scores = forward_pass(self.difficulty_of(ctx, run), graph, self.gamma_forward)
        return order_scores(reverse_order(scores, graph, self.gamma_reverse))

    def difficulty_of(self, ctx: ScoreContext, run: int) -> np.ndarray:
        proxy = self.proxy_spec
        if self.difficulty == "el2n":
            d = dynamics(ctx, proxy, run, self.difficulty_epoch)
            return at_epoch(d, "el2n", self.difficulty_epoch)
        d = dynamics(ctx, proxy, run, ctx.proxy_settings(proxy.epochs).epochs)
        return forgetting_score(d["forgetting"], d["presentations"], d["ever_correct"])
