"""Statistics for comparing classifiers on one test set: paired bootstrap CIs, exact McNemar, calibration (ECE)."""
from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 4000
ECE_BINS = 15


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact McNemar p (two-sided): under H0 the images that exactly one model gets right split 50/50 between
    the models, so the count `a right, b wrong` among them is Binomial(discordant, 1/2) (scipy.stats.binomtest)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap_ci(a_correct: np.ndarray, b_correct: np.ndarray, resamples: int = RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:
    """95% percentile CI of acc(a) - acc(b), resampling test images with their pair of outcomes
    (scipy.stats.bootstrap, paired). Returns fractions, not points."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a_correct, float), np.asarray(b_correct, float)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError(f"paired outcomes need the same, non-zero number of images; got {len(a)} and {len(b)}")
    if np.all(a == b):  # every image agrees: the difference is exactly 0 in every resample
        return 0.0, 0.0
    res = bootstrap((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                    n_resamples=resamples, confidence_level=CONFIDENCE, method="percentile", batch=200,
                    random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def seeds_and_images_ci(a_correct: np.ndarray, b_correct: np.ndarray, resamples: int = RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:
    """95% CI of mean-over-seeds acc(a) - acc(b) from a two-level bootstrap: each resample draws the seeds of each
    side with replacement, and the test images once for both sides (the images are shared, so the pairing is
    kept). `a_correct` is (seeds_a, images), `b_correct` (seeds_b, images). With one seed on a side, only the
    images vary there: the seed spread is then unknown and the CI is too narrow for a claim about the unit."""
    a, b = np.atleast_2d(np.asarray(a_correct, float)), np.atleast_2d(np.asarray(b_correct, float))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"both sides need the same test images; got {a.shape[1]} and {b.shape[1]}")
    if (a.shape[0], a.sum()) > (b.shape[0], b.sum()):  # one order of the sides, so A vs B mirrors B vs A exactly
        lo, hi = seeds_and_images_ci(b, a, resamples, seed)
        return -hi, -lo
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(resamples)
    for r in range(resamples):
        per_image = a[rng.integers(len(a), size=len(a))].mean(0) - b[rng.integers(len(b), size=len(b))].mean(0)
        diffs[r] = per_image[rng.integers(n, size=n)].mean()
    lo, hi = np.quantile(diffs, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(lo), float(hi)


def verdict(ci: tuple[float, float]) -> str:
    """'a better' or 'b better' where the CI of a - b excludes 0, else 'not distinguishable'."""
    if ci[0] > 0:
        return "a better"
    if ci[1] < 0:
        return "b better"
    return "not distinguishable"


def sentence(name_a: str, name_b: str, diff: float, ci: tuple[float, float], n_a: int, n_b: int,
             images: int) -> str:
    """The verdict as one plain sentence, with the difference and CI in accuracy points."""
    v = verdict(ci)
    seeds = f"{n_a} seed{'s' if n_a != 1 else ''}" + ("" if n_a == n_b else f" vs {n_b}")
    seeds += " each" if n_a == n_b and n_a > 1 else ""
    if v == "not distinguishable":
        text = (f"{name_a} and {name_b} are not distinguishable with {seeds} and {images:,} test images "
                f"(difference {100 * diff:+.2f} points, 95% CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f})")
    else:
        win, lose = (name_a, name_b) if v == "a better" else (name_b, name_a)
        lo, hi = sorted((abs(100 * ci[0]), abs(100 * ci[1])))
        text = (f"{win} is better than {lose} by {abs(100 * diff):.2f} points (95% CI {lo:.2f} to {hi:.2f}; "
                f"{seeds})")
    if min(n_a, n_b) < 2:
        text += "; with one seed on a side the seed-to-seed spread is unknown, so this covers the test images only"
    return text + "."


def calibration(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Expected calibration error over `bins` equal-width confidence bins on [0, 1] (Guo et al. 2017):
    ECE = sum over bins of (images in bin / all images) * |accuracy in bin - mean confidence in bin|.
    A confidence of exactly 1 falls in the top bin. Also each bin's count, accuracy and mean confidence."""
    conf, ok = np.asarray(confidence, float), np.asarray(correct, float)
    if len(conf) == 0:
        raise ValueError("calibration needs at least one prediction")
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    count = np.bincount(idx, minlength=bins)
    acc_sum = np.bincount(idx, weights=ok, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    safe = np.maximum(count, 1)
    ece = float(np.abs(acc_sum - conf_sum).sum() / len(conf))
    return {"ece": ece, "bins": bins, "count": count.tolist(),
            "accuracy": [float(v) if c else None for v, c in zip(acc_sum / safe, count)],
            "confidence": [float(v) if c else None for v, c in zip(conf_sum / safe, count)]}
