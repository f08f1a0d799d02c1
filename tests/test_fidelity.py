"""Each method as its paper ran it: defaults that follow the schedule, official pipelines.

The references are restatements of the official code (named per test), written here in
numpy, or hand-computed cases.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from synthetic import synthetic_ctx

from benchmarks.data.source import TensorSource
from benchmarks.errors import ConfigError
from benchmarks.train import LossWeights, weighted_batch_loss
from methods.core.ccs import ccs_cut_scores
from methods.core.dynamics import DynamicsRecorder, Proxy, at_epoch, dynamics
from methods.core.proxy_method import epoch_at
from methods.core.registry import get_method
from methods.core.select import PruneSpec, ccs_beta_for, kept_count, select
from methods.d2 import d2_budgets
from methods.infobatch import InfoBatchSampler

CONF = Path(__file__).resolve().parent.parent / "conf"


def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.mark.parametrize(
    ("schedule", "expected"), [(200, 20), (30, 3), (5, 1), (4, 1), (15, 2), (2, 1)]
)
def test_early_epoch_is_a_tenth_of_the_proxy_schedule_rounded_half_up(schedule, expected):
    ctx = synthetic_ctx(epochs=schedule)
    for name in ("el2n", "grand"):
        assert get_method(name).resolve(ctx).epoch == expected
    assert get_method("d2").resolve(ctx).difficulty_options["epoch"] == expected


def test_explicit_epochs_win_and_a_separate_proxy_schedule_is_followed():
    ctx = synthetic_ctx(epochs=30)
    assert get_method("el2n", {"epoch": 7}).resolve(ctx).epoch == 7
    assert get_method("el2n", {"proxy": {"epochs": 200}}).resolve(ctx).epoch == 20
    assert get_method("grand", {"epoch": 0}).resolve(ctx).epoch == 0
    assert get_method("herding").resolve(ctx).epoch == 30  # features: the proxy's end
    with pytest.raises(ConfigError, match="epoch_fraction=1.5 is outside"):
        get_method("el2n", {"epoch_fraction": 1.5})


@pytest.mark.parametrize(
    ("schedule", "horizon", "window"), [(200, 30, 10), (30, 5, 3), (100, 15, 5), (60, 9, 3)]
)
def test_tdds_horizon_and_window_follow_the_official_30_and_10_of_200(schedule, horizon, window):
    resolved = get_method("tdds").resolve(synthetic_ctx(epochs=schedule))
    assert (resolved.horizon, resolved.window) == (horizon, window)
    assert epoch_at(0.15, schedule, minimum=3) == horizon


def test_score_epoch_composes_to_null_and_paper_presets_pin_it():
    cfg = _compose(["method=el2n"])
    assert cfg.method.epoch is None and cfg.method.epoch_fraction == 0.1
    assert _compose(["experiment=datadiet_cifar10", "method=el2n"]).method.epoch == 20


@pytest.mark.parametrize(
    ("method", "train", "budget"),
    [
        ("rs2", "default", "epochs"),
        ("infobatch", "default", "epochs"),
        ("tdds", "default", "epochs"),
        ("dyn_unc", "default", "epochs"),
        ("el2n", "default", "iterations"),
        ("random", "default", "iterations"),
        ("rs2", "datadiet", "iterations"),
    ],
)
def test_methods_that_train_fixed_epochs_default_to_the_epochs_budget(method, train, budget):
    cfg = _compose([f"method={method}", f"train={train}"])
    assert cfg.train.budget == budget
    assert _compose([f"method={method}", "train.budget=iterations"]).train.budget == "iterations"


def _official_infobatch_passes(n_passes, delta):
    """IBSampler of NUS-HPC-AI-Lab/InfoBatch restated: reset() runs once in __init__ and once
    per epoch in __iter__, with `iterations` counting resets; it prunes while
    iterations <= num_epochs * delta. Returns, per epoch, whether it was pruned."""
    iterations, stop_prune, pruned = 0, n_passes * delta, []
    iterations += 1  # __init__'s reset (before any epoch)
    for _ in range(n_passes):
        pruned.append(iterations <= stop_prune)
        iterations += 1
    return pruned


def _official_infobatch_prune(scores, keep_ratio, rng):
    """InfoBatch.prune() restated: well learned = score < mean; keep int(keep * count) of them."""
    well = np.flatnonzero(scores < scores.mean())
    rest = np.flatnonzero(~(scores < scores.mean()))
    selected = rng.choice(well, int(keep_ratio * len(well)), replace=False)
    weights = np.ones(scores.size)
    weights[selected] = 1 / keep_ratio
    return np.concatenate([rest, selected]), weights


@pytest.mark.parametrize(("passes", "delta"), [(30, 0.875), (8, 0.875), (10, 0.5), (7, 0.3)])
def test_infobatch_anneals_from_the_same_pass_as_the_official_sampler(passes, delta):
    sampler = InfoBatchSampler(20, ratio=0.5, delta=delta)
    gen = torch.Generator().manual_seed(0)
    ours = []
    for p in range(passes):
        chosen = sampler.pass_indices(p, passes, gen)
        sampler.observe(torch.arange(20), torch.arange(20, dtype=torch.float))
        ours.append(chosen.numel() < 20)
    official = _official_infobatch_passes(passes, delta)
    official[0] = False  # the first pass has no losses yet: official scores are all 3, no pruning
    assert ours == official


@pytest.mark.parametrize(("ratio", "keep"), [(0.3, 0.7), (0.5, 0.5), (0.95, 0.1), (0.99, 0.1)])
def test_infobatch_keeps_an_exact_count_of_the_well_learned_with_the_ratio_floored(ratio, keep):
    n = 1001
    losses = torch.from_numpy(np.random.default_rng(3).exponential(size=n))
    sampler = InfoBatchSampler(n, ratio=ratio, delta=1.0)
    gen = torch.Generator().manual_seed(0)
    sampler.pass_indices(0, 10, gen)
    sampler.observe(torch.arange(n), losses)
    chosen = set(sampler.pass_indices(1, 10, gen).tolist())
    kept, weights = _official_infobatch_prune(losses.numpy(), keep, np.random.default_rng(0))
    well = losses < losses.mean()
    assert len(chosen) == kept.size  # the same count as the official prune()
    assert set(torch.nonzero(~well).flatten().tolist()) <= chosen  # never drops the hard ones
    ours = sampler.loss_weights(torch.arange(n)).numpy()
    assert sorted(ours) == pytest.approx(sorted(weights))
    kept_easy = sorted(chosen & set(torch.nonzero(well).flatten().tolist()))
    assert ours[kept_easy] == pytest.approx(1 / keep)


def _official_ccs_budgets(rank, aum, coreset_num, beta, stratas):
    """CCS's train.py (coreset-mode stratified) and Coreset.py restated in numpy.

    mislabel_mask: drop the int(beta * n) lowest accumulated_margin; stratified_sampling:
    `stratas` bins of width (max * 1.0001 - min) / stratas over the rest, budgets by
    bin_allocate (visit bins by size, each min(size, rest // bins left)). Returns the
    dropped indices, the pool, each pool member's bin and each bin's budget.
    """
    n = rank.size
    order = np.argsort(aum, kind="stable")
    dropped, pool = order[: int(beta * n)], order[int(beta * n) :]
    score = rank[pool]
    low, high = score.min(), score.max() * 1.0001
    step = (high - low) / stratas
    bins = np.full(pool.size, -1)
    sizes = []
    for k in range(stratas):
        inside = (score >= low + k * step) & (score < low + (k + 1) * step)
        bins[inside] = k
        sizes.append(int(inside.sum()))
    sizes = np.array(sizes)
    budgets = np.zeros(stratas, dtype=int)
    rest = coreset_num
    by_size = np.argsort(sizes, kind="stable")
    for i, b in enumerate(by_size):
        budgets[b] = min(sizes[b], rest // (stratas - i))
        rest -= budgets[b]
    return dropped, pool, bins, budgets


@pytest.mark.parametrize(
    ("fraction", "beta", "bins"), [(0.9, 0.3, 50), (0.7, 0.1, 50), (0.5, 0.2, 7)]
)
def test_ccs_cuts_by_its_aum_and_fills_strata_as_the_official_code(fraction, beta, bins):
    rng = np.random.default_rng(1)
    n = 2000
    rank = rng.gamma(2.0, size=n)  # a ranking score (high = hard)
    aum = rng.normal(size=n) - 0.3 * rank  # CCS's accumulated margin, low = hard
    spec = PruneSpec(fraction=fraction, strategy="ccs", ccs_beta=beta, ccs_bins=bins)
    kept = select(rank, np.zeros(n, int), spec, seed=0, cut_scores=-aum)
    dropped, pool, member_bin, budgets = _official_ccs_budgets(
        rank, aum, kept_count(n, fraction), beta, bins
    )
    assert not set(dropped.tolist()) & set(kept.tolist())
    bin_of = dict(zip(pool.tolist(), member_bin.tolist(), strict=True))
    ours = np.bincount([bin_of[i] for i in kept.tolist()], minlength=bins)
    assert ours.tolist() == budgets.tolist()


def test_ccs_cut_by_score_cuts_the_top_of_the_ranking_instead():
    rng = np.random.default_rng(2)
    rank, aum = rng.random(500), rng.random(500)
    spec = PruneSpec(fraction=0.5, strategy="ccs", ccs_beta=0.2, ccs_cut_by="score", ccs_bins=5)
    kept = select(rank, np.zeros(500, int), spec, seed=0, cut_scores=-aum)
    assert not set(np.argsort(-rank)[:100].tolist()) & set(kept.tolist())
    with pytest.raises(ValueError, match="needs CCS's AUM"):
        select(rank, np.zeros(500, int), PruneSpec(**{**vars(spec), "ccs_cut_by": "aum"}), 0)


def test_ccs_with_keep_easy_is_an_error_and_beta_follows_a_per_fraction_table():
    with pytest.raises(ConfigError, match="keep=easy with prune.strategy=ccs"):
        PruneSpec(fraction=0.5, keep="easy", strategy="ccs")
    table = {"0.3": 0.0, "0.9": 0.3}
    assert ccs_beta_for(table, 0.9) == 0.3 and ccs_beta_for(0.1, 0.5) == 0.1
    with pytest.raises(ConfigError, match="no entry for prune.fraction=0.5"):
        ccs_beta_for(table, 0.5)


def test_recorder_sums_ccs_aum_and_train_mode_el2n_by_hand():
    x = torch.zeros(3, 1, 1, 1)
    y = torch.tensor([0, 1, 1])
    rec = DynamicsRecorder(TensorSource(x, y), 8)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    rec.on_batch(0, torch.arange(3), logits, y)
    rec.on_batch(1, torch.tensor([0]), logits[:1], y[:1])
    p = logits.softmax(dim=1)
    margin = (p[torch.arange(3), y] - p[torch.arange(3), 1 - y]).tolist()
    assert rec.prob_margin_sum.tolist() == pytest.approx([2 * margin[0], margin[1], margin[2]])
    onehot = torch.nn.functional.one_hot(y, 2).float()
    el2n = (p - onehot).norm(dim=1).tolist()
    assert rec.train_el2n_sum.tolist() == pytest.approx([2 * el2n[0], el2n[1], el2n[2]])


def test_ccs_el2n_is_the_running_train_mode_sum_and_the_cut_is_ccs_aum(tmp_path):
    ctx = synthetic_ctx(tmp_path, epochs=4)
    d = dynamics(ctx, Proxy(), 0, 4)
    el2n = get_method("el2n", {"variant": "ccs", "ccs_epochs": 3, "runs": 1}).score(ctx)
    assert el2n == pytest.approx(at_epoch(d, "train_el2n_cum", 3))
    assert np.all(at_epoch(d, "train_el2n_cum", 3) <= at_epoch(d, "train_el2n_cum", 4))
    cut = ccs_cut_scores(get_method("forgetting"), ctx)
    assert cut == pytest.approx(-d["prob_margin_sum"])
    assert ctx.cost.trainings_run == 1  # one proxy training feeds all three


def _official_graph_density_order(x, s, k, gamma, budget):
    """GraphDensitySampler (d2pruning core/data/sampling.py; graph_mode=sum,
    graph_sampling_mode=weighted) restated: sklearn's kneighbors_graph (self excluded), each
    edge i-j weighted exp(-d) max(s, 1e-7) both ways; density = row sum + s; then pick the
    argmax, lower every neighbour by exp(-gamma d) x the pick's density, and sink the picked
    below the minimum."""
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    far = d + np.diag(np.full(len(x), np.inf))
    connect = np.zeros_like(d)
    for i in range(len(x)):
        for j in np.argsort(far[i], kind="stable")[:k]:
            connect[i, j] = np.exp(-d[i, j]) * max(s[j], 1e-7)
            connect[j, i] = np.exp(-d[i, j]) * max(s[i], 1e-7)
    density = connect.sum(axis=1) + s
    batch = []
    while len(batch) < budget:
        pick = int(np.argmax(density))
        near = np.flatnonzero(connect[pick] > 0)
        density[near] -= np.exp(-d[pick, near] * gamma) * density[pick]
        batch.append(pick)
        density[batch] = density.min() - 1
    return batch


def _official_bin_allocate(num, sizes):
    """bin_allocate (d2pruning core/data/Coreset.py, mode=uniform) restated."""
    order = np.argsort(sizes, kind="stable")
    sort_bins = sizes[order]
    budgets, rest = [], num
    for i in range(len(sizes)):
        if sort_bins[i] == 0:
            budgets.append(0)
            continue
        cur = min(sort_bins[i], rest // np.count_nonzero(sort_bins[i:]))
        rest -= cur
        budgets.append(cur)
    budgets = np.array(budgets)
    delta, i = num - budgets.sum(), 1
    while delta and i <= len(sizes):
        if budgets[-i] < sort_bins[-i]:
            budgets[-i] += 1
            delta -= 1
        i += 1
    out = np.zeros(len(sizes), dtype=int)
    out[order] = budgets
    return out


def _d2_case(n=150, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), n // classes)
    x = rng.normal(size=(n, 4)) + labels[:, None]
    difficulty = rng.gamma(2.0, size=n)
    aum = rng.normal(size=n)
    return labels, x, difficulty, aum


def _d2_with(options, labels, x, difficulty, aum, monkeypatch):
    ctx = synthetic_ctx(n=labels.size)
    ctx.train_y = torch.from_numpy(labels)
    method = get_method("d2", {"difficulty": "forgetting", **options})
    monkeypatch.setattr(method, "features", lambda ctx, run: x.astype(np.float32))
    monkeypatch.setattr(method, "difficulty_scores", lambda ctx: difficulty)
    monkeypatch.setattr("methods.d2.ccs_cut_scores", lambda m, ctx: -aum)
    return method, ctx


def test_d2_budgets_are_the_official_bin_allocate():
    rng = np.random.default_rng(4)
    for _ in range(50):
        sizes = rng.integers(0, 30, size=rng.integers(1, 12))
        total = int(rng.integers(0, sizes.sum() + 1))
        assert d2_budgets(total, sizes).tolist() == _official_bin_allocate(total, sizes).tolist()


@pytest.mark.parametrize(("fraction", "mis_ratio"), [(0.7, 0.25), (0.5, 0.0), (0.8, 0.4)])
def test_d2_class_mode_selects_as_the_official_readme_pipeline(fraction, mis_ratio, monkeypatch):
    labels, x, difficulty, aum = _d2_case()
    options = {"mode": "class", "mis_ratio": mis_ratio, "neighbors": 3, "gamma_reverse": 0.1}
    method, ctx = _d2_with(options, labels, x, difficulty, aum, monkeypatch)
    kept = method.select_subset(ctx, np.zeros(150), PruneSpec(fraction=fraction), seed=0)
    # official selection_mp.py, coreset-mode class: mislabel_mask by ascending AUM, then
    # density_sampling with the class as the bin, graph sampling within each class
    pool = np.argsort(aum, kind="stable")[int(mis_ratio * 150) :]
    targets = labels[pool]
    total = kept_count(150, fraction)
    budgets = _official_bin_allocate(total, np.bincount(targets))
    official = []
    for c, budget in enumerate(budgets):
        members = pool[targets == c]
        order = _official_graph_density_order(x[members], difficulty[members], 3, 0.1, budget)
        official += members[order].tolist()
    assert kept.tolist() == sorted(official)


def test_d2_defaults_are_the_official_readme_cifar_command(monkeypatch):
    labels, x, difficulty, aum = _d2_case()
    method, ctx = _d2_with({}, labels, x, difficulty, aum, monkeypatch)
    kept = method.select_subset(ctx, np.zeros(150), PruneSpec(fraction=0.9), seed=0)
    # Readme.MD (bf1ea46) lines 30-38: N_NEIGHBOR=5, GAMMA=0.1, CORESET_RATIO=0.1,
    # --coreset-mode class --budget-mode uniform --mis-ratio 0.4 --graph-mode sum
    # --graph-sampling-mode weighted; restated as selection_mp.py's class branch
    pool = np.argsort(aum, kind="stable")[int(0.4 * 150) :]
    targets = labels[pool]
    budgets = _official_bin_allocate(kept_count(150, 0.9), np.bincount(targets))
    official = []
    for c, budget in enumerate(budgets):
        members = pool[targets == c]
        order = _official_graph_density_order(x[members], difficulty[members], 5, 0.1, budget)
        official += members[order].tolist()
    assert kept.tolist() == sorted(official)


@pytest.mark.parametrize("fraction", [0.3, 0.5])
def test_d2_hard_cut_never_removes_more_than_the_pruning(fraction, monkeypatch):
    labels, x, difficulty, aum = _d2_case()
    method, ctx = _d2_with({}, labels, x, difficulty, aum, monkeypatch)
    kept = method.select_subset(ctx, np.zeros(150), PruneSpec(fraction=fraction), seed=0)
    assert kept.size == kept_count(150, fraction)
    removed = np.setdiff1d(np.arange(150), kept)
    # 0.4 x 150 = 60 cut at most, and never more than the 150 - kept removed
    cut = np.argsort(aum, kind="stable")[: min(60, 150 - kept.size)]
    assert np.isin(cut, removed).all()
    if fraction == 0.3:  # the cut is all the pruning removes
        assert removed.tolist() == sorted(cut.tolist())


def test_d2_stratified_mode_fills_each_stratum_as_the_official_code(monkeypatch):
    labels, x, difficulty, aum = _d2_case(n=300, seed=1)
    options = {"mode": "stratified", "mis_ratio": 0.2, "neighbors": 2, "strata": 3}
    options["gamma_reverse"] = 1.0
    method, ctx = _d2_with(options, labels, x, difficulty, aum, monkeypatch)
    kept = set(method.select_subset(ctx, np.zeros(300), PruneSpec(fraction=0.6), 0).tolist())
    pool = np.argsort(aum, kind="stable")[60:]
    per_class = kept_count(300, 0.6) // 3  # official: int(coreset_num / classes) each
    official = []
    for c in range(3):
        members = np.sort(pool[labels[pool] == c])
        score = difficulty[members]
        low, step = score.min(), (score.max() * 1.0001 - score.min()) / 3
        strata = [
            members[(score >= low + k * step) & (score < low + (k + 1) * step)] for k in range(3)
        ]
        budgets = _official_bin_allocate(per_class, np.array([s.size for s in strata]))
        for stratum, budget in zip(strata, budgets, strict=True):
            assert stratum.size > 2 or budget >= stratum.size  # no random branch in this case
            if budget >= stratum.size:
                official += stratum.tolist()
            elif budget:
                order = _official_graph_density_order(
                    x[stratum], difficulty[stratum], 2, 1.0, budget
                )
                official += stratum[order].tolist()
    assert set(official) <= kept and len(official) == 3 * per_class
    assert len(kept) == kept_count(300, 0.6)  # the rest is random fill from the uncut pool
    assert not kept & set(np.argsort(aum, kind="stable")[:60].tolist())


@pytest.mark.parametrize(
    "spec",
    [PruneSpec(fraction=0.3), PruneSpec(fraction=0.6, offset=9), PruneSpec(0.5, keep="easy")],
    ids=str,
)
def test_d2_global_order_stopped_where_the_selection_reads_keeps_the_same_examples(
    spec, monkeypatch
):
    labels, x, difficulty, aum = _d2_case()
    method, ctx = _d2_with(
        {"mode": "global", "mis_ratio": 0.2, "neighbors": 4},
        labels,
        x,
        difficulty,
        aum,
        monkeypatch,
    )
    full = method.score_run(ctx, 0)
    ctx.prune = spec
    short = method.score_run(ctx, 0)
    assert select(short, labels, spec, 0).tolist() == select(full, labels, spec, 0).tolist()
    assert (np.count_nonzero(short) < np.count_nonzero(full)) == (spec.keep == "hard")


def test_d2_takes_any_registered_score_and_forgetting_never_learned_counts_zero(tmp_path):
    ctx = synthetic_ctx(tmp_path, epochs=3)
    d2 = get_method("d2", {"difficulty": "forgetting"})
    assert d2.difficulty_method().never_learned == "zero"
    d = dynamics(ctx, Proxy(), 0, 3)
    expected = d["forgetting"].astype(float)
    assert d2.difficulty_scores(ctx) == pytest.approx(expected)
    assert get_method("d2", {"difficulty": "aum"}).difficulty_scores(ctx) == pytest.approx(
        get_method("aum").score(ctx)
    )
    assert d2.resolve(ctx).difficulty_options["never_learned"] == "zero"
    for bad in ("rs2", "d2"):
        with pytest.raises(ConfigError, match="no static score"):
            get_method("d2", {"difficulty": bad})
    with pytest.raises(ConfigError, match="mode=class is D2's own"):
        d2c = get_method("d2", {"mode": "class"})
        d2c.select_subset(ctx, np.zeros(ctx.n), PruneSpec(fraction=0.5, keep="easy"), 0)


def test_tdds_official_subset_loss_is_the_batch_mean_loss_times_the_batch_mean_score():
    losses = torch.tensor([0.5, 2.0, 1.0, 4.0], dtype=torch.float64)
    s = torch.tensor([0.0, 1.0, 0.25, 0.75], dtype=torch.float64)
    # train_subset.py: loss = criterion(output, target) * sum(s) / n, criterion a mean CE
    official = losses.mean() * s.sum() / 4
    assert weighted_batch_loss(losses, s, batch_mean_scale=True) == pytest.approx(float(official))
    with pytest.raises(ValueError, match="two different losses"):
        LossWeights(s, batch_normalise=True, batch_mean_scale=True)


def test_tdds_weighted_subset_weights_are_the_min_max_normalised_scores(tmp_path):
    ctx = synthetic_ctx(tmp_path, epochs=4)
    method = get_method("tdds", {"horizon": 4, "window": 3, "weighted": True})
    scores = method.score(ctx)
    kept = np.array([3, 10, 20, 40])
    weights = method.subset_weights(ctx, kept)
    # data_subset.py: score = (sorted_score - min) / (max - min) over the whole training set
    expected = (scores - scores.min()) / (scores.max() - scores.min())
    assert weights.batch_mean_scale and not weights.batch_normalise
    assert weights.values.numpy() == pytest.approx(expected[kept], abs=1e-6)
    assert get_method("tdds", {"horizon": 4, "window": 3}).subset_weights(ctx, kept) is None


@pytest.mark.parametrize(("offset", "fraction"), [(0, 0.5), (3, 0.6), (7, 0.8)])
def test_data_diet_offset_from_the_easiest_end_is_keep_easy_with_that_offset(offset, fraction):
    scores = np.random.default_rng(offset).random(20)
    k = kept_count(20, fraction)
    # Data Diet's sliding window: examples sorted from easiest up, keep ranks [offset, offset + k)
    data_diet = np.sort(np.argsort(scores, kind="stable")[offset : offset + k])
    spec = PruneSpec(fraction=fraction, keep="easy", offset=offset)
    assert select(scores, np.zeros(20, int), spec, seed=0).tolist() == data_diet.tolist()
    # ours under keep=hard counts from the hardest end instead
    hard = np.sort(np.argsort(-scores, kind="stable")[offset : offset + k])
    spec = PruneSpec(fraction=fraction, offset=offset)
    assert select(scores, np.zeros(20, int), spec, seed=0).tolist() == hard.tolist()
