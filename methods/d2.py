"""D2 pruning (Maharana et al., ICLR 2024): message passing over a k-NN graph of the data."""

from __future__ import annotations

import dataclasses
import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.errors import ConfigError
from methods.core.base import PruningMethod, ScoreContext, make_method
from methods.core.ccs import ccs_cut_scores
from methods.core.features import FeatureMethod, order_scores, picks_needed
from methods.core.knn import IVF_PROBES, exact_knn, ivf_knn
from methods.core.proxy_method import ProxyMethod
from methods.core.registry import METHODS, register
from methods.core.select import PruneSpec, kept_count


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


def knn_graph(
    features: np.ndarray, k: int, index: str = "exact", probes: int = IVF_PROBES
) -> Graph:
    """Edges i-j where j is among i's k nearest (Euclidean) or i among j's, as the official code.

    `exact`: exhaustive search (`exact_knn`: float32, each pair of rows compared once,
    blocked: memory O(N k) beyond the features), the graph the method is defined on.
    `ivf`: approximate, an explicit option for ImageNet-size N (`ivf_knn`: an inverted
    file over 4 sqrt(N) k-means cells, each searching the cells nearest its own until they
    hold `probes` mean cells of rows). Each
    point's own entry is dropped from its k + 1 nearest (or, among more than k + 1
    duplicates, the last).
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    return graph_from_search(*_search(x, k + 1, index, probes))


def graph_from_search(squared: np.ndarray, found: np.ndarray) -> Graph:
    """The symmetrised graph of a search's k + 1 nearest per row (squared distances,
    indices [n, k + 1], each row itself among them), the row's own entry dropped."""
    n, k = found.shape[0], found.shape[1] - 1
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


def _search(x: np.ndarray, k: int, index: str, probes: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of x to each row (squared distances, indices)."""
    return exact_knn(x, k) if index == "exact" else ivf_knn(x, k, probes)


# the official GraphDensitySampler floors every neighbour's score at this before weighting
SCORE_FLOOR = 1e-7


def forward_pass(scores: np.ndarray, graph: Graph, gamma: float) -> np.ndarray:
    """s_i' = s_i + sum_{j in N(i)} exp(-gamma_f d(i, j)) max(s_j, 1e-7), as the official
    GraphDensitySampler (graph_mode=sum; its forward weight is exp(-d), gamma_f = 1)."""
    messages = np.exp(-gamma * graph.distances) * np.maximum(scores[graph.neighbors], SCORE_FLOOR)
    return scores + np.bincount(graph.sources, weights=messages, minlength=scores.size)


def reverse_order(
    scores: np.ndarray, graph: Graph, gamma: float, picks: int | None = None
) -> np.ndarray:
    """D2's selection order by reverse message passing (the first `picks`; None = all).

    Pick the highest score i (ties to the lowest index), lower each unpicked neighbour
    s_j <- s_j - exp(-gamma_r d(i, j)) s_i, and repeat until every node is picked. A
    max-heap of (score, index) replaces the argmax over all nodes: each unpicked node
    keeps an entry at or above its score (a lowered score leaves its entry as a bound; a
    raised one, after a negative pick, gets a new entry), and a bound that reaches the
    top above its node's score goes back with the score, so each pick costs O(degree)
    plus O(log n) per heap operation.
    """
    current = scores.astype(np.float64).copy()
    weights = np.exp(-gamma * graph.distances)
    indptr, neighbors = graph.indptr.tolist(), graph.neighbors
    picked = np.zeros(current.size, dtype=bool)
    heap = list(zip((-current).tolist(), range(current.size), strict=True))
    heapq.heapify(heap)
    total = current.size if picks is None else min(picks, current.size)
    order = []
    while len(order) < total:
        negative, i = heap[0]
        value = float(current[i])
        if picked[i] or -negative < value:  # picked, or a spare entry below the node's own
            heapq.heappop(heap)
            continue
        if -negative > value:  # a stale bound: back with the node's score
            heapq.heapreplace(heap, (-value, i))
            continue
        heapq.heappop(heap)
        picked[i] = True
        order.append(i)
        span = slice(indptr[i], indptr[i + 1])
        free = ~picked[neighbors[span]]
        lowered = neighbors[span][free]
        current[lowered] -= weights[span][free] * value
        if value < 0.0:  # the neighbours rose: their entries are no longer bounds
            for entry in zip((-current[lowered]).tolist(), lowered.tolist(), strict=True):
                heapq.heappush(heap, entry)
    return np.asarray(order, dtype=np.int64)


def d2_budgets(total: int, sizes: np.ndarray) -> np.ndarray:
    """The official `bin_allocate` (core/data/Coreset.py, budget_mode=uniform) restated.

    Visit the non-empty bins from the smallest up, each taking min(its size, budget left //
    non-empty bins left); then, while budget is left, give one more to each bin that has
    room, from the largest bin down (one pass).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    sorted_sizes = sizes[order]
    budgets = np.zeros(sizes.size, dtype=np.int64)
    left = int(total)
    for i, size in enumerate(sorted_sizes):
        if size == 0:
            continue
        budgets[i] = min(int(size), left // int(np.count_nonzero(sorted_sizes[i:])))
        left -= budgets[i]
    missing = int(total) - int(budgets.sum())
    for i in range(sizes.size - 1, -1, -1):
        if missing <= 0:
            break
        if budgets[i] < sorted_sizes[i]:
            budgets[i] += 1
            missing -= 1
    out = np.zeros(sizes.size, dtype=np.int64)
    out[order] = budgets
    return out


def equal_width_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each value among `bins` equal-width bins from the minimum to 1.0001 x the maximum
    (the official stratified_sampling's edges; for a maximum <= 0, maximum + 1e-4 |maximum|)."""
    low, high = values.min(), values.max()
    upper = high * 1.0001 if high > 0 else high + 1e-4 * (abs(high) or 1.0)
    return np.minimum(np.floor((values - low) / ((upper - low) / bins)).astype(int), bins - 1)


MODES = ("global", "class", "stratified")


@register
@dataclass
class D2Pruning(FeatureMethod):
    """D2 on k-NN graphs of the proxy's features, node difficulty from any registered score.

    `difficulty` names a static method (forgetting on CIFAR, AUM on ImageNet in the
    official runs), scored with `difficulty_options` on D2's proxy (runs=1 unless set);
    with forgetting, never-learned examples count 0 as in the official score
    (`never_learned=zero`), so that they do not dominate the message passing.
    `mis_ratio`: the official hard cut, the floor(mis_ratio n) hardest by CCS's AUM
    (summed softmax margin) removed first. `mode`:
    - global: one graph over all (uncut) examples; the selection order is the score
      (the official coreset-mode graph);
    - class: one graph per class, class budgets by the official uniform allocation,
      then random fill (the official README's CIFAR pipeline, coreset-mode class);
    - stratified: per class an equal budget int(kept / classes), spread over `strata`
      equal-width difficulty strata by the same allocation, a graph per stratum (the
      official coreset-mode stratified with label_balanced), then random fill.
    class and stratified depend on the kept count, so they select themselves
    (`select_subset`); their exported score is the per-class order.
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
    difficulty_options: dict[str, Any] = field(default_factory=dict)
    # the official README's CIFAR command (adymaharana/d2pruning Readme.MD at bf1ea46,
    # lines 30-38; conf/method/d2.yaml cites each line)
    mode: str = "class"
    mis_ratio: float = 0.4
    strata: int = 25
    neighbors: int = 5
    gamma_forward: float = 1.0
    gamma_reverse: float = 0.1
    knn: str = "exact"
    knn_probes: int = IVF_PROBES

    def __post_init__(self) -> None:
        super().__post_init__()
        cls = METHODS.get(self.difficulty)
        if cls.dynamic or not cls.prunes or cls is D2Pruning:
            raise ConfigError(
                f"method.difficulty={self.difficulty!r} has no static score to pass as D2's "
                "difficulty (any registered static score: el2n, forgetting, aum, ...)"
            )
        if self.mode not in MODES:
            raise ConfigError(f"method.mode={self.mode!r} is not one of {', '.join(MODES)}")
        if not 0.0 <= self.mis_ratio < 1.0:
            raise ConfigError(f"method.mis_ratio={self.mis_ratio} is outside [0, 1)")
        if self.neighbors < 1:
            raise ConfigError(f"method.neighbors={self.neighbors} must be >= 1")
        if self.knn not in KNN_INDEXES:
            raise ConfigError(f"method.knn={self.knn!r} is not one of {', '.join(KNN_INDEXES)}")
        if self.strata < 1:
            raise ConfigError(f"method.strata={self.strata} must be >= 1")
        if self.knn_probes < 1:
            raise ConfigError(f"method.knn_probes={self.knn_probes} must be >= 1")
        if self.mode != "global" and self.runs != 1:
            raise ConfigError(f"method.mode={self.mode} selects from one proxy run: set runs=1")
        self.difficulty_method()

    def difficulty_method(self) -> PruningMethod:
        cls = METHODS.get(self.difficulty)
        options = dict(self.difficulty_options)
        if issubclass(cls, ProxyMethod):
            options = {"runs": 1, "proxy": self.proxy, **options}
        if self.difficulty == "forgetting":
            options.setdefault("never_learned", "zero")
        return make_method(cls, options)

    def resolve(self, ctx: ScoreContext) -> D2Pruning:
        """The feature epoch and the difficulty's options (its epoch included) made concrete."""
        resolved = self.difficulty_method().resolve(ctx).options()
        resolved.pop("proxy", None)
        return dataclasses.replace(
            self,
            proxy=self.resolved_proxy(ctx),
            **self.resolved_epochs(ctx),
            difficulty_options=resolved,
        )

    def difficulty_scores(self, ctx: ScoreContext) -> np.ndarray:
        method = self.difficulty_method()
        return method.resolve(ctx).score(ctx)

    def pool(self, ctx: ScoreContext, kept: int | None) -> np.ndarray:
        """Indices left after the hard cut, in index order.

        The cut removes at most what pruning removes (n - `kept`; None: not known, as for
        a score export): the official code cuts
        floor(mis_ratio n) whatever the coreset ratio and then keeps fewer examples than
        asked when the rest is smaller (its README pairs the 0.4 cut with 90% removed);
        here the least hard of the cut stay in the pool, so that every fraction keeps
        its nominal count.
        """
        cut_count = int(self.mis_ratio * ctx.n)
        if kept is not None:
            cut_count = min(cut_count, ctx.n - kept)
        if cut_count == 0:
            return np.arange(ctx.n)
        hardness = ccs_cut_scores(self, ctx)
        cut = np.lexsort((np.arange(ctx.n), -hardness))[:cut_count]
        return np.setdiff1d(np.arange(ctx.n), cut)

    def greedy(
        self, features: np.ndarray, scores: np.ndarray, picks: int | None = None
    ) -> np.ndarray:
        """D2's pick order of one group (positions into `scores`; the first `picks`)."""
        if scores.size <= self.neighbors:
            raise ConfigError(
                f"method.neighbors={self.neighbors} needs more than {scores.size} examples"
            )
        graph = knn_graph(features, self.neighbors, self.knn, self.knn_probes)
        return reverse_order(
            forward_pass(scores, graph, self.gamma_forward), graph, self.gamma_reverse, picks
        )

    def score_run(self, ctx: ScoreContext, run: int) -> np.ndarray:
        features, difficulty, pool = (
            self.features(ctx, run),
            self.difficulty_scores(ctx),
            self.pool(ctx, None if ctx.prune is None else kept_count(ctx.n, ctx.prune.fraction)),
        )
        scores = np.zeros(ctx.n)
        groups = (
            [pool]
            if self.mode == "global"
            else [pool[ctx.labels[pool] == c] for c in np.unique(ctx.labels[pool])]
        )
        # the global order is the selection's score: top-k reads no further than its picks
        picks = picks_needed(ctx, ctx.n, per_class=False) if self.mode == "global" else None
        for members in groups:
            order = self.greedy(features[members], difficulty[members], picks)
            scores[members] = order_scores(order, members.size)
        return scores

    def select_subset(
        self,
        ctx: ScoreContext,
        scores: np.ndarray,
        spec: PruneSpec,
        seed: int,
        cut_scores: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.mode == "global":
            return super().select_subset(ctx, scores, spec, seed, cut_scores)
        if spec.keep != "hard" or spec.strategy != "topk" or spec.offset:
            raise ConfigError(
                f"method.mode={self.mode} is D2's own class-balanced selection: use "
                "prune.keep=hard, prune.strategy=topk, prune.offset=0"
            )
        rng = np.random.default_rng(seed)
        total = kept_count(ctx.n, spec.fraction)
        features, difficulty, pool = (
            self.features(ctx, 0),
            self.difficulty_scores(ctx),
            self.pool(ctx, total),
        )
        labels = ctx.labels
        classes = np.unique(labels)
        members_of = [pool[labels[pool] == c] for c in classes]
        if self.mode == "class":
            budgets = d2_budgets(total, np.array([m.size for m in members_of]))
        else:
            budgets = np.full(classes.size, total // classes.size)
        chosen = []
        for members, budget in zip(members_of, budgets, strict=True):
            if self.mode == "class":
                chosen.append(self.take(features, difficulty, members, int(budget), rng))
                continue
            stratum = equal_width_bins(difficulty[members], self.strata)
            inner = d2_budgets(int(budget), np.bincount(stratum, minlength=self.strata))
            for s in range(self.strata):
                chosen.append(
                    self.take(features, difficulty, members[stratum == s], int(inner[s]), rng)
                )
        kept = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.int64)
        missing = total - kept.size
        if missing > 0:
            rest = np.setdiff1d(pool, kept)
            kept = np.concatenate([kept, rng.choice(rest, min(missing, rest.size), replace=False)])
        return np.sort(kept)

    def take(
        self, features: np.ndarray, difficulty: np.ndarray, members: np.ndarray, budget: int, rng
    ) -> np.ndarray:
        """`budget` of `members` by D2's greedy order (all of them if they do not exceed it;
        a random `budget` when they are too few for a k-NN graph, as the official code)."""
        if budget <= 0:
            return np.empty(0, dtype=np.int64)
        if budget >= members.size:
            return members
        if members.size <= self.neighbors:
            return rng.choice(members, budget, replace=False)
        return members[self.greedy(features[members], difficulty[members], budget)]
