"""Proxy trainings, and the one recorded proxy run that feeds every training-dynamics score.

A proxy run trains the proxy model on the whole training set with the run's
trainer and records, per example:
- after every epoch (and at initialisation, epoch 0), eval-mode summaries of the
  softmax on un-augmented images: EL2N, true-class probability, entropy, top-2
  margin, least confidence, correctness, and how far the softmax moved since the
  previous epoch (`prob_shift`, TDDS's per-epoch contribution; 0 at epoch 0);
- at every mini-batch presentation (train mode, augmented, before the update):
  forgetting events (correct -> incorrect), whether it was ever classified
  correctly, and the sum of logit margins (AUM).
EL2N@t for any t, forgetting, AUM and the uncertainty scores of one (data, proxy,
seed) therefore come from one training, cached as one artifact.
"""

from __future__ import annotations

import time
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.errors import ConfigError
from benchmarks.models import Classifier
from benchmarks.options import check_option_types
from benchmarks.seeding import derive_seed
from benchmarks.train import BatchHook, EpochHook, budget_steps, predict_logits, train
from methods.base import ScoreContext

EVAL_SUMMARIES = ("el2n", "p_true", "entropy", "margin", "least_confidence", "correct")
SHIFT_SUMMARIES = ("prob_shift",)
RECORDED_SUMMARIES = EVAL_SUMMARIES + SHIFT_SUMMARIES


@dataclass(frozen=True)
class Proxy:
    """Which proxy trainings a score averages over.

    `model`: architecture (None = the run's); `epochs`: length of the proxy's schedule
    (None = the run's `train.epochs`); `seed`: the score seed, independent of the cell's
    seed so that every retraining seed and fraction reuses the same scores; run k of
    `runs` uses its own init and data-order streams derived from (seed, k).
    """

    model: str | None = None
    epochs: int | None = None
    seed: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> Proxy:
        options = dict(options or {})
        unknown = sorted(set(options) - {"model", "epochs", "seed"})
        if unknown:
            raise ConfigError(
                f"method.proxy has no option {', '.join(unknown)}; its options: epochs, model, seed"
            )
        check_option_types("method.proxy", options, typing.get_type_hints(cls))
        return cls(**options)

    def run_seed(self, run: int) -> int:
        return derive_seed(self.seed, "proxy-run", run)


def eval_summaries(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-example summaries of eval-mode logits [N, K] against labels [N]."""
    probs = logits.double().softmax(dim=1)
    onehot = F.one_hot(y, probs.shape[1]).double()
    top2 = probs.topk(min(2, probs.shape[1]), dim=1).values
    second = top2[:, 1] if top2.shape[1] > 1 else torch.zeros_like(top2[:, 0])
    return {
        "el2n": (probs - onehot).norm(dim=1),
        "p_true": probs.gather(1, y[:, None])[:, 0],
        "entropy": -(probs * probs.clamp_min(1e-300).log()).sum(dim=1),
        "margin": top2[:, 0] - second,
        "least_confidence": 1.0 - top2[:, 0],
        "correct": (probs.argmax(dim=1) == y).double(),
    }


def prob_shift(previous: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """sum_k p_t,k |log p_t,k - log p_t-1,k| between two epochs' logits [N, K].

    TDDS's per-epoch contribution as its official code computes it: the terms of
    KL(p_t || p_t-1) taken in absolute value, so it is >= that KL and 0 only when
    the softmax did not move.
    """
    log_now = logits.double().log_softmax(dim=1)
    log_before = previous.double().log_softmax(dim=1)
    return (log_now.exp() * (log_now - log_before).abs()).sum(dim=1)


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: the margin AUM averages (Pleiss et al. 2020)."""
    true = logits.gather(1, y[:, None])[:, 0]
    others = logits.scatter(1, y[:, None], float("-inf"))
    return true - others.max(dim=1).values


class DynamicsRecorder:
    """Collects per-example statistics during one proxy training."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, eval_batch_size: int, amp: bool) -> None:
        n, device = y.shape[0], y.device
        self.x, self.y = x, y
        self.eval_batch_size, self.amp = eval_batch_size, amp
        self.forgetting = torch.zeros(n, dtype=torch.long, device=device)
        self.presentations = torch.zeros(n, dtype=torch.long, device=device)
        self.ever_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.last_correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.margin_sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.epochs: dict[int, dict[str, torch.Tensor]] = {}
        self.previous_logits: torch.Tensor | None = None

    def on_batch(self, step: int, idx: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        correct = logits.argmax(dim=1) == y
        self.forgetting[idx] += (self.last_correct[idx] & ~correct).long()
        self.last_correct[idx] = correct
        self.ever_correct[idx] |= correct
        self.presentations[idx] += 1
        self.margin_sum[idx] += logit_margin(logits, y).double()

    def on_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        logits = predict_logits(model, self.x, self.eval_batch_size, self.amp)
        summaries = eval_summaries(logits, self.y)
        before = logits if self.previous_logits is None else self.previous_logits
        summaries["prob_shift"] = prob_shift(before, logits)
        self.epochs[epoch] = summaries
        self.previous_logits = logits

    def arrays(self) -> dict[str, np.ndarray]:
        epochs = sorted(self.epochs)
        out = {"epochs": np.array(epochs)}
        for name in RECORDED_SUMMARIES:
            out[name] = torch.stack([self.epochs[e][name] for e in epochs]).float().cpu().numpy()
        out["forgetting"] = self.forgetting.cpu().numpy()
        out["presentations"] = self.presentations.cpu().numpy()
        out["ever_correct"] = self.ever_correct.cpu().numpy()
        out["margin_sum"] = self.margin_sum.cpu().numpy()
        return out


def train_proxy(
    ctx: ScoreContext,
    proxy: Proxy,
    run: int,
    stop_epoch: int,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
) -> Classifier:
    """Run k of the proxy training up to `stop_epoch` of its schedule; return the model.

    Epoch 0 means the freshly initialised network. The same (proxy, run) always gives
    the same network at the same epoch on CPU, whichever score asks for it.
    """
    settings = ctx.proxy_settings(proxy.epochs)
    if not 0 <= stop_epoch <= settings.epochs:
        raise ConfigError(
            f"score epoch {stop_epoch} is outside the proxy training's 0..{settings.epochs} epochs"
        )
    seed = proxy.run_seed(run)
    model = ctx.build_model(proxy.model, derive_seed(seed, "init"))
    if on_epoch is not None:
        on_epoch(0, model)
    if stop_epoch > 0:
        total = budget_steps(ctx.n, ctx.n, settings)
        train(
            model,
            ctx.train_x,
            ctx.train_y,
            settings,
            total,
            ctx.augment,
            order_seed=derive_seed(seed, "order"),
            on_batch=on_batch,
            on_epoch=on_epoch,
            stop_step=round(total * stop_epoch / settings.epochs),
        )
    model.eval()
    return model


def proxy_material(ctx: ScoreContext, proxy: Proxy, run: int) -> dict[str, Any]:
    """What determines a proxy run's outcome: the cache key of everything derived from it."""
    settings = ctx.proxy_settings(proxy.epochs)
    return {
        "data": ctx.data_fingerprint,
        "labels": ctx.labels_hash,
        "proxy_model": proxy.model or ctx.model_name,
        "proxy_model_options": ctx.model_options if proxy.model in (None, ctx.model_name) else {},
        "settings": settings,
        "augment": ctx.augment.describe(),
        "seed": proxy.seed,
        "run": run,
    }


def dynamics(ctx: ScoreContext, proxy: Proxy, run: int, stop_epoch: int) -> dict[str, np.ndarray]:
    """Proxy run `run` recorded at least up to `stop_epoch`, from the cache when possible."""

    def compute() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        start = time.perf_counter()
        recorder = DynamicsRecorder(ctx.train_x, ctx.train_y, 1024, amp=True)
        train_proxy(ctx, proxy, run, stop_epoch, recorder.on_batch, recorder.on_epoch)
        ctx.cost.trainings_run += 1
        meta = {
            "stop_epoch": stop_epoch,
            "proxy_epochs": float(stop_epoch),
            "proxy_trainings": 1,
            "seconds": time.perf_counter() - start,
            "summaries": list(RECORDED_SUMMARIES),
        }
        return recorder.arrays(), meta

    def sufficient(meta: dict[str, Any]) -> bool:
        """Recorded far enough, and by a recorder that kept every summary asked of it now."""
        recorded = set(meta.get("summaries", EVAL_SUMMARIES))
        return meta["stop_epoch"] >= stop_epoch and recorded >= set(RECORDED_SUMMARIES)

    material = proxy_material(ctx, proxy, run)
    if ctx.cache is None:
        arrays, meta = compute()
    else:
        arrays, meta = ctx.cache.load_or_compute("dynamics", material, compute, sufficient)
    ctx.cost.add_artifact(meta)
    return arrays


def at_epoch(arrays: Mapping[str, np.ndarray], name: str, epoch: int) -> np.ndarray:
    """One eval summary at one recorded epoch."""
    (where,) = np.flatnonzero(arrays["epochs"] == epoch)
    return arrays[name][where].astype(np.float64)
