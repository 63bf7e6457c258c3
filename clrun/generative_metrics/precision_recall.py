"""Precision and recall of distributions (PRD, Sajjadi et al. 2018), as the Multiband VAE paper
reports them.

Real and generated features are clustered together (mini-batch k-means, `clusters` clusters,
10 initialisations); the two histograms over the clusters give the PRD curve
α(λ) = Σ min(λ·p_real, p_gen), β(λ) = α(λ)/λ for λ = tan of `angles` angles in (0, π/2); the
curve is averaged over `runs` clusterings. The summary is the pair of maximal F-scores
F_8 (recall) and F_1/8 (precision), in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass(frozen=True)
class PRDSettings:
    clusters: int = 20
    angles: int = 1001
    runs: int = 10
    beta: float = 8.0


def prd_curve(real: np.ndarray, generated: np.ndarray, settings: PRDSettings, seed: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall along the PRD curve, averaged over `settings.runs` clusterings."""
    from sklearn.cluster import MiniBatchKMeans

    data = np.concatenate([real, generated])
    slopes = np.tan(np.linspace(1e-10, np.pi / 2 - 1e-10, settings.angles))
    precisions, recalls = [], []
    for run in range(settings.runs):
        labels = MiniBatchKMeans(n_clusters=settings.clusters, n_init=10,
                                 random_state=seed + run).fit(data).labels_
        p_real = np.bincount(labels[:len(real)], minlength=settings.clusters) / len(real)
        p_gen = np.bincount(labels[len(real):], minlength=settings.clusters) / len(generated)
        precision = np.minimum(p_real[None, :] * slopes[:, None], p_gen[None, :]).sum(axis=1)
        precisions.append(np.clip(precision, 0, 1))
        recalls.append(np.clip(precision / slopes, 0, 1))
    return np.mean(precisions, axis=0), np.mean(recalls, axis=0)


def max_f_beta(precision: np.ndarray, recall: np.ndarray, beta: float) -> float:
    denominator = beta ** 2 * precision + recall
    scores = np.where(denominator > 0, (1 + beta ** 2) * precision * recall
                      / np.where(denominator > 0, denominator, 1), 0)
    return float(scores.max())


def precision_recall(real: Tensor, generated: Tensor, settings: PRDSettings, seed: int = 0
                     ) -> tuple[float, float]:
    """(precision, recall) = (F_1/8, F_8) of the PRD curve of two feature sets."""
    precision, recall = prd_curve(real.double().cpu().numpy(),
                                  generated.double().cpu().numpy(), settings, seed)
    return max_f_beta(precision, recall, 1 / settings.beta), max_f_beta(precision, recall,
                                                                        settings.beta)
