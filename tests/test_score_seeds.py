"""The scores' own randomness in a grid: `score.proxy_seed=cell` draws each seed's scores
with its training (one set of proxy trainings per seed), an integer shares one draw of the
scores across every seed and fraction; records and leaderboard captions say which."""

import dataclasses
from pathlib import Path

import pytest
from synthetic import synthetic_ctx

from analysis.collect import collect
from analysis.leaderboard import build_tables
from analysis.render import caption
from benchmarks.errors import ConfigError
from methods import get_method
from methods.core.dynamics import Proxy

ROOT = Path(__file__).resolve().parent.parent
TINY = [
    "data.max_train=120",
    "model=mlp",
    "train.epochs=2",
    "score.epoch=1",
    "score.runs=1",
    "run.checkpoint_steps=0",
]
# seed 0 at two fractions (one draw of its scores), seed 1 at one (a draw of its own)
CELLS = [(0.3, 0), (0.5, 0), (0.3, 1)]


def _grid(tmp_path: Path, proxy_seed: str) -> list[dict]:
    from hydra import compose, initialize_config_dir

    from benchmarks.pipeline import run

    places = [f"results.dir={tmp_path / 'results'}", f"cache.dir={tmp_path / 'cache'}"]
    records = []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for fraction, seed in CELLS:
            overrides = ["method=el2n", f"prune.fraction={fraction}", f"seed={seed}"]
            overrides += [f"score.proxy_seed={proxy_seed}", *TINY, *places]
            records.append(run(compose("config", overrides=overrides), progress=False))
    return records


def _trainings(records: list[dict]) -> int:
    return sum(r["selection"]["score_cost"]["trainings_run"] for r in records)


def test_cell_seeds_draw_one_set_of_scores_per_seed_and_say_so(tmp_path):
    records = _grid(tmp_path, "cell")
    assert _trainings(records) == 2  # two seeds: two draws; seed 0 twice: one
    for record, (_, seed) in zip(records, CELLS, strict=True):
        assert record["config"]["method"]["proxy"]["seed"] == "cell"
        assert record["selection"]["method_options"]["proxy"]["seed"] == seed
    (table,) = build_tables(collect(str(tmp_path / "results")).runs)
    (row,) = table.rows  # the seeds' runs stay one row, not one row per proxy seed
    assert row.scores_drawn == "per seed" and row.values[0.3].keys() == {0, 1}
    assert "scores drawn per seed" in caption(table, 2)


def test_a_fixed_proxy_seed_shares_one_draw_of_the_scores_across_seeds(tmp_path):
    records = _grid(tmp_path, "0")
    assert _trainings(records) == 1
    assert {r["selection"]["method_options"]["proxy"]["seed"] for r in records} == {0}
    (table,) = build_tables(collect(str(tmp_path / "results")).runs)
    assert table.rows[0].scores_drawn == "shared"
    assert "cover the retraining only" in caption(table, 2)


@pytest.mark.parametrize("name", ["el2n", "forgetting", "d2", "kcenter"])
def test_resolve_makes_the_cell_seed_the_proxy_seed(name):
    ctx = dataclasses.replace(synthetic_ctx(n=16), seed=7)
    method = get_method(name, {"proxy": {"seed": "cell"}}).resolve(ctx)
    assert method.proxy["seed"] == 7 and method.proxy_spec.seed == 7


def test_an_unresolved_cell_seed_is_never_used_as_a_seed():
    with pytest.raises(RuntimeError, match="method.resolve"):
        Proxy(seed="cell").run_seed(0)


def test_a_proxy_seed_other_than_an_integer_or_cell_is_named():
    with pytest.raises(ConfigError, match=r"method.proxy.seed='cel' must be an integer .* cell"):
        get_method("el2n", {"proxy": {"seed": "cel"}})
