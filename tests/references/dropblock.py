"""DropBlock (Ghiasi, Lin & Le, 2018, https://arxiv.org/abs/1810.12890), Algorithm 1 in NumPy.

Layout: ``(batch, *spatial, channels)`` (channels last). A block centred at
``c`` spans ``[c - k // 2, c + (k - 1) // 2]`` per dimension, with ``k`` the
block size clipped to the dimension's size.
"""

from __future__ import annotations

import itertools

import numpy as np


def clipped_block_sizes(spatial_shape, block_size):
    return [min(block_size, n) for n in spatial_shape]


def gamma(spatial_shape, block_size, rate):
    """Equation 1: rate / prod(k_i) * prod(n_i) / prod(n_i - k_i + 1)."""
    value = float(rate)
    for n, k in zip(spatial_shape, clipped_block_sizes(spatial_shape, block_size)):
        value *= n / (k * (n - k + 1))
    return value


def valid_centres(spatial_shape, block_size):
    """Boolean map of the centres whose whole block lies inside the map."""
    valid = np.ones(spatial_shape, bool)
    for axis, (n, k) in enumerate(zip(spatial_shape, clipped_block_sizes(spatial_shape, block_size))):
        position = np.arange(n)
        inside = (position >= k // 2) & (position <= n - 1 - (k - 1) // 2)
        shape = [1] * len(spatial_shape)
        shape[axis] = n
        valid &= inside.reshape(shape)
    return valid


def block_slices(centre, spatial_shape, block_size):
    ks = clipped_block_sizes(spatial_shape, block_size)
    return tuple(slice(c - k // 2, c + (k - 1) // 2 + 1) for c, k in zip(centre, ks))


def covering_counts(spatial_shape, block_size):
    """For each position, the number of valid centres whose block covers it."""
    counts = np.zeros(spatial_shape, np.int64)
    for centre in np.argwhere(valid_centres(spatial_shape, block_size)):
        counts[block_slices(centre, spatial_shape, block_size)] += 1
    return counts


def drop_probability(spatial_shape, block_size, rate):
    """P(position dropped) = 1 - (1 - gamma) ** (number of valid centres covering it)."""
    g = gamma(spatial_shape, block_size, rate)
    return 1.0 - (1.0 - g) ** covering_counts(spatial_shape, block_size)


def dropblock(x, draws, rate, block_size):
    """Algorithm 1 on channels-last ``x`` given the uniform ``draws`` of the mask's shape.

    ``draws`` has shape ``(batch, *spatial, channels)`` (one mask per channel)
    or ``(batch, *spatial, 1)`` (one mask shared by the channels). A centre
    is where ``draws < gamma`` inside the valid region.
    """
    x = np.asarray(x, np.float64)
    spatial = x.shape[1:-1]
    centres = (np.asarray(draws) < gamma(spatial, block_size, rate)) & valid_centres(spatial, block_size)[
        None, ..., None
    ]
    mask = np.ones(draws.shape, np.float64)
    for index in np.argwhere(centres):
        batch, centre, channel = index[0], index[1:-1], index[-1]
        mask[(batch, *block_slices(centre, spatial, block_size), channel)] = 0.0
    return x * mask * mask.size / mask.sum()


def zeros_form_whole_blocks(zero_map, block_size):
    """True when every zero of a spatial map lies in an all-zero block inside the map."""
    zero_map = np.asarray(zero_map, bool)
    ks = clipped_block_sizes(zero_map.shape, block_size)
    covered = np.zeros(zero_map.shape, bool)
    starts = [range(n - k + 1) for n, k in zip(zero_map.shape, ks)]
    for start in itertools.product(*starts):
        window = tuple(slice(s, s + k) for s, k in zip(start, ks))
        if zero_map[window].all():
            covered[window] = True
    return bool(np.array_equal(covered, zero_map))
