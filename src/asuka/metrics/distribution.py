"""Distribution metrics on Inception features: FID and U-IDS / P-IDS.

Inputs are feature matrices ``(N, D)`` (rows = images; ``real[i]`` and ``fake[i]`` come from the
same ground-truth image for the paired score). Everything is computed in float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from asuka.errors import InputError


def _as_features(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"{name}: expected features of shape (N, D), got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{name}: features contain NaN or inf")
    return x


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` (divisor N - 1) of ``(N, D)`` features, float64."""
    f = _as_features("features", features)
    if f.shape[0] < 2:
        raise InputError(f"FID needs at least 2 images, got {f.shape[0]}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, *, eps: float = 1e-6) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))``, in float64. As in the
    reference implementations: if the matrix square root is not finite (near-singular product),
    ``eps`` is added to both diagonals and it is retried; a complex result whose diagonal has
    imaginary parts up to 1e-3 is taken as real (numerical noise), a larger one is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise InputError(f"frechet_distance: mismatched statistics: means {mu1.shape} and {mu2.shape}, "
                         f"covariances {sigma1.shape} and {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        warnings.warn(f"FID: singular covariance product, adding {eps} to the diagonals", RuntimeWarning)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: matrix square root has a large imaginary part "
                             f"({np.abs(covmean.imag).max():.3g}); too few images for the feature size?")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(real, fake) -> float:
    """FID between ``(N, D)`` real and ``(M, D)`` fake features."""
    real, fake = _as_features("real", real), _as_features("fake", fake)
    if real.shape[1] != fake.shape[1]:
        raise InputError(f"FID: feature sizes differ: real {real.shape[1]}, fake {fake.shape[1]}")
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


def inception_discriminative_scores(real, fake, *, pca_dim: int | None = None,
                                    seed: int = 0) -> tuple[float, float]:
    """U-IDS and P-IDS (Co-Mod-GAN) from paired ``(N, D)`` real and fake features.

    A ``sklearn.svm.LinearSVC(dual=False)`` (defaults otherwise) is fit on the 2N features with
    labels real = 1, fake = 0. U-IDS is its misclassification rate on those same features
    (1 - training accuracy); P-IDS is the fraction of pairs with ``f(fake_i) > f(real_i)``,
    ``f`` the decision function. Both are 0.5 at best (indistinguishable), 0 at worst.

    pca_dim: the ASUKA release's variant -- project the 2N features to ``pca_dim`` dimensions
        with PCA (fit on them, ``random_state=seed``) before the SVM. ``None``: plain Co-Mod-GAN.
    """
    from sklearn.decomposition import PCA
    from sklearn.svm import LinearSVC

    real, fake = _as_features("real", real), _as_features("fake", fake)
    if real.shape != fake.shape:
        raise InputError(f"IDS needs paired features of equal shape, got real {real.shape} and fake {fake.shape}")
    n = real.shape[0]
    if n < 1:
        raise InputError("IDS needs at least 1 image pair, got 0")
    inputs = np.concatenate([real, fake])
    if pca_dim is not None:
        if not 1 <= pca_dim <= min(inputs.shape):
            raise InputError(f"IDS PCA dimension must be between 1 and min(2N, D) = {min(inputs.shape)} "
                             f"(N = {n} pairs, D = {real.shape[1]}), got {pca_dim}")
        inputs = PCA(n_components=pca_dim, random_state=seed).fit_transform(inputs)
    targets = np.concatenate([np.ones(n, dtype=np.int64), np.zeros(n, dtype=np.int64)])
    svm = LinearSVC(dual=False)
    svm.fit(inputs, targets)
    u_ids = 1.0 - svm.score(inputs, targets)
    scores = svm.decision_function(inputs)
    p_ids = float(np.mean(scores[n:] > scores[:n]))
    return float(u_ids), p_ids
