"""InfoBatch's target mode: the run removes the nominal share of its presentations."""

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from benchmarks.errors import ConfigError
from benchmarks.pipeline import run
from benchmarks.train import TrainSettings, _DynamicPlan, budget_steps
from methods.infobatch import InfoBatchSampler, reachable

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64


def _drive(sampler, epochs, budget="epochs", batch=BATCH, seed=0):
    """The trainer's own plan of batches over the sampler, with losses that drift."""
    settings = TrainSettings(epochs=epochs, batch_size=batch, budget=budget)
    total = budget_steps(sampler.n, sampler.n, settings)
    gen = torch.Generator().manual_seed(seed)
    losses = torch.rand(sampler.n, generator=gen) * 3
    for _, idx, _, _ in _DynamicPlan(sampler, total, settings, 0, torch.device("cpu")):
        losses[idx] *= 0.5 + torch.rand(idx.numel(), generator=gen)
        sampler.observe(idx, losses[idx])
    return sampler


def _removed_vs_nominal(sampler, ratio):
    """Examples removed over the run's passes minus the nominal share of them."""
    passes = sampler.passes - sampler.unfinished
    removed = (1 - sampler.seen_fraction()) * passes * sampler.n
    return removed - ratio * passes * sampler.n


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("budget", ["epochs", "iterations"])
def test_target_mode_removes_the_nominal_share_within_one_batch(ratio, budget):
    n, epochs = 500, 15
    sampler = _drive(InfoBatchSampler(n, ratio, 0.875, True, budget), epochs, budget)
    assert abs(_removed_vs_nominal(sampler, ratio)) <= BATCH
    paper = _drive(InfoBatchSampler(n, ratio, 0.875, budget=budget), epochs, budget)
    assert _removed_vs_nominal(paper, ratio) < -BATCH  # the paper's ratio: well-learned only


def test_target_mode_raises_the_threshold_and_keeps_the_papers_rescaling():
    sampler = InfoBatchSampler(10, 0.5, 1.0, target=True)
    sampler.observe(torch.arange(10), torch.arange(10, dtype=torch.float))
    chosen = sampler.pass_indices(0, 2, torch.Generator().manual_seed(0))
    # pass 0 of 2 owes half of 0.5 * 2 * 10 = 5 removals; half of the 5 below-mean losses
    # (0..4) is too few: the threshold rises to the 5 / 0.5 = 10 lowest, half of them kept
    assert chosen.numel() == 5
    assert sampler.loss_weights(chosen).tolist() == [2.0] * 5  # 1 / (1 - 0.5), the paper's
    behind = InfoBatchSampler(10, 0.5, 1.0, target=True)
    behind.observe(torch.arange(10), torch.arange(10, dtype=torch.float))
    behind.passes, behind.presented = 1, 10  # a first pass that removed nothing
    chosen = behind.pass_indices(1, 3, torch.Generator().manual_seed(0))
    # 0.5 * 3 * 10 = 15 owed over passes 1 and 2: 8 now; 8 / 0.5 = 16 lowest is past the
    # data, so all 10 are candidates and the probability rises to 0.8: 2 kept, weighed 5
    assert chosen.numel() == 2
    assert behind.loss_weights(chosen).tolist() == [5.0, 5.0]


@pytest.mark.parametrize("budget", ["epochs", "iterations"])
def test_under_a_step_budget_the_mean_weight_of_a_pass_is_one(budget):
    sampler = InfoBatchSampler(100, 0.7, 0.875, True, budget)
    sampler.observe(torch.arange(100), torch.rand(100, generator=torch.Generator().manual_seed(0)))
    sampler.passes, sampler.presented = 1, 100
    sampler.plan_budget(steps_left=140, batch_size=10)
    sampler.total_steps = 150
    chosen = sampler.pass_indices(1, 15, torch.Generator().manual_seed(0))
    mean = sampler.loss_weights(chosen).mean().item()
    # the paper's scaling: candidates / kept; the steps of full data: times the pass's share
    assert mean == pytest.approx(1.0 if budget == "iterations" else 100 / chosen.numel())


def test_reach_is_ninety_percent_of_the_pruning_passes_after_the_first():
    # 8 epochs at delta 0.875: pass 0 has no losses yet, passes 7.. anneal; 1..6 prune
    assert reachable(0.9 * 6 / 8, 0.875, 8, "epochs")
    assert not reachable(0.9 * 6 / 8 + 0.01, 0.875, 8, "epochs")
    # iterations: 15 / 0.3 = 50 passes, 1.875 of them annealing: 0.7 * 50 <= 0.9 * 47.125
    assert reachable(0.7, 0.875, 15, "iterations")
    sampler = _drive(InfoBatchSampler(100, 0.9, 0.875, target=True), 8, batch=10)
    assert 8 * 100 - sampler.presented == 0.9 * 6 * 100  # asked for more: the most it may


def test_a_pass_cut_short_by_the_step_budget_counts_for_its_share():
    sampler = InfoBatchSampler(100, 0.5, 0.875)
    _drive(sampler, 3, "iterations", batch=30)  # 3 * 4 steps: the last pass is cut
    done = sampler.counts.sum().item()
    assert sampler.seen_fraction() == pytest.approx(
        done / ((sampler.passes - sampler.unfinished) * 100)
    )
    assert 0 < sampler.unfinished < 1 and math.isclose(done, sampler.presented)


def _digits(tmp_path, *overrides):
    places = [f"results.dir={tmp_path / 'results'}", f"cache.dir={tmp_path / 'cache'}"]
    base = ["method=infobatch", "model=mlp", f"train.batch_size={BATCH}", "run.checkpoint_steps=0"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return run(compose("config", overrides=[*base, *overrides, *places]), progress=False)


def test_an_unreachable_target_is_refused_before_training(tmp_path):
    with pytest.raises(ConfigError, match="out of method.mode=target's reach"):
        _digits(tmp_path, "method.mode=target", "prune.fraction=0.7", "train.epochs=8")
    assert not list((tmp_path / "results").glob("*.json"))


@pytest.mark.parametrize(("fraction", "budget"), [(0.7, "epochs"), (0.5, "iterations")])
def test_on_digits_target_mode_removes_the_fraction_within_one_batch(tmp_path, fraction, budget):
    record = _digits(
        tmp_path,
        "method.mode=target",
        f"prune.fraction={fraction}",
        "train.epochs=15",
        f"train.budget={budget}",
    )
    assert record["cell"]["budget"] == budget
    assert record["selection"]["method_options"]["mode"] == "target"
    dynamic = record["selection"]["dynamic"]
    passes = dynamic["passes"] - dynamic["unfinished"]
    examples = passes * record["selection"]["total"]
    assert abs(record["selection"]["fraction_removed"] - fraction) * examples <= BATCH
