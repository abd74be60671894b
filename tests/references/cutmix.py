"""CutMix box reference.

Yun, Han, Oh, Chun, Choe, Yoo (2019), "CutMix: Regularization Strategy to Train
Strong Classifiers with Localizable Features", arXiv:1905.04899, section 3.1:
lambda ~ Beta(alpha, alpha); on each of the d spatial axes of length L the box
has side r_L = floor(L * (1 - lambda) ** (1 / d)) (the paper's W sqrt(1 - lambda)
for d = 2), its centre is uniform on the axis, and the box is clipped to it;
lambda is then replaced by the fraction of the input left outside the box.
The box here starts at centre - side // 2 and has side elements before clipping
(the paper's code, centre +- side // 2, makes odd sides one shorter).
"""

import numpy as np


def pasted_fractions(spatial_shape, alpha, count, rng):
    """``count`` draws of the fraction of the spatial elements the box covers, float64."""
    lam = rng.beta(alpha, alpha, size=count)
    side_fraction = (1.0 - lam) ** (1.0 / len(spatial_shape))
    covered = np.ones(count)
    for length in spatial_shape:
        side = np.floor(side_fraction * length).astype(np.int64)
        centre = rng.integers(0, length, size=count)
        start = np.clip(centre - side // 2, 0, length)
        stop = np.clip(centre - side // 2 + side, 0, length)
        covered *= (stop - start) / length
    return covered
