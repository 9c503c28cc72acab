"""Confidence intervals for evaluation numbers.

Built-in probe sets are small (tens to a few hundred items), so a bare accuracy or refusal rate
hides how much it would move on a different sample. Every reported number therefore carries an
interval: Wilson for proportions (well behaved near 0 and 1, unlike the normal approximation)
and a percentile bootstrap for means of per-item scores (ROUGE, cosine, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np
from scipy.stats import binomtest, bootstrap, norm

Z_95 = float(norm.ppf(0.975))  # two-sided 95% normal quantile, 1.959964

# Resamples are drawn in batches so memory stays bounded for long score lists.
_BOOTSTRAP_BATCH_ELEMENTS = 4_000_000


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion `successes / n`.

    With no observations nothing is known, so n=0 gives the whole range (0.0, 1.0).
    """
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0  # binomtest refuses n=0
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def _check_bootstrap_args(n_resamples: int, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")


def _percentile_bootstrap(samples: tuple, statistic, n_resamples: int, confidence: float,
                          seed: int) -> tuple[float, float]:
    """scipy's percentile bootstrap; with two samples each is resampled on its own draw."""
    n = len(samples[0])
    result = bootstrap(samples, statistic, n_resamples=n_resamples,
                       confidence_level=confidence, method="percentile",
                       batch=max(1, _BOOTSTRAP_BATCH_ELEMENTS // n), rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_mean_interval(
    values: Iterable[float],
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for the mean of `values`; the same seed gives the same interval."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_mean_interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_mean_interval got a NaN or infinite value")
    _check_bootstrap_args(n_resamples, confidence)
    if x.size == 1 or np.all(x == x[0]):
        v = float(x[0])  # every resample has this mean (and scipy refuses a single value)
        return v, v
    return _percentile_bootstrap((x,), np.mean, n_resamples, confidence, seed)


def _mean_difference(x, y, axis=-1):
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def bootstrap_difference_interval(
    a,
    b,
    paired: bool = True,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval for mean(a) - mean(b), where a and b are (seeds, items) arrays of
    per-item scores of two models evaluated on the same items (column j is item j for both).

    Items are resampled; each resample's statistic is the mean over seeds of the per-item difference.
    Paired (the default), one set of items is drawn for both models, so what makes an item easy or hard
    for both cancels out; unpaired draws the two models' items independently (wider when scores are
    correlated across models, as they are for the same prompts).
    """
    x, y = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"need two non-empty score arrays of the same shape, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("bootstrap_difference_interval got a NaN or infinite value")
    if paired:
        # Mean over seeds then over resampled items equals the mean over seeds of each resample's mean.
        return bootstrap_mean_interval((x - y).mean(axis=0), n_resamples, confidence, seed)
    _check_bootstrap_args(n_resamples, confidence)
    xs, ys = x.mean(axis=0), y.mean(axis=0)
    if xs.size == 1:
        d = float(xs[0] - ys[0])  # one item: every resample is that item
        return d, d
    return _percentile_bootstrap((xs, ys), _mean_difference, n_resamples, confidence, seed)


@dataclass
class Metric:
    """One reported number with its sample size and confidence interval."""

    name: str
    value: float
    n: int
    low: float
    high: float

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.name}: {self.value:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n})"


def proportion_metric(name: str, successes: int, n: int) -> Metric:
    """A rate (refusal rate, accuracy, pass@1) with a 95% Wilson interval; n=0 reports value 0.0."""
    low, high = wilson_interval(successes, n)
    value = successes / n if n else 0.0
    return Metric(name=name, value=value, n=n, low=low, high=high)


def mean_metric(name: str, values: Iterable[float]) -> Metric:
    """The mean of per-item scores with a 95% percentile-bootstrap interval (seed 0)."""
    x = [float(v) for v in values]
    if not x:
        raise ValueError(f"mean_metric({name!r}) needs at least one value")
    low, high = bootstrap_mean_interval(x)
    return Metric(name=name, value=float(np.mean(x)), n=len(x), low=low, high=high)
