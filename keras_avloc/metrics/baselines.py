"""No-learning baselines that every results table reports next to a model.

* `center_prior`: an isotropic Gaussian at the image centre (σ = `sigma` × side). Photographers centre
  subjects, so this prior is a strong floor on VGG-SS.
* `random_maps`: i.i.d. uniform noise (seeded) — the chance level.

The third baseline, objectness (EZ-VSL's object-guided prior without audio, `mean_c |F[h, w, c]|` of an
image encoder's feature map), needs a model and is computed by `keras_avloc.evaluation` with
`keras_avloc.models.objectness_map`.
"""

import numpy as np

BASELINE_NAMES = ("center", "random", "objectness")
"""Names of the baselines in every results table, in order."""


def center_prior(count, size=224, sigma=0.25):
    """Gaussian centre-prior maps.

    Args:
        count: number of maps N.
        size: side of each map.
        sigma: standard deviation as a fraction of the side.

    Returns:
        float32 array [N, size, size] peaking at 1 in the centre.

    Example:
    >>> center_prior(2, size=8).shape
    (2, 8, 8)
    """
    coords = (np.arange(size) + 0.5) / size - 0.5
    squared = coords[:, None] ** 2 + coords[None, :] ** 2
    single = np.exp(-squared / (2 * sigma**2)).astype(np.float32)
    return np.broadcast_to(single, (count, size, size)).copy()


def random_maps(count, size=224, seed=0, start=0):
    """Uniform random maps in [0, 1); map i comes from `numpy.random.default_rng([seed, start + i])`.

    Seeding per sample makes the baseline independent of batching: sample k always gets the same map.
    """
    return np.stack(
        [np.random.default_rng([seed, start + i]).random((size, size), dtype=np.float32) for i in range(count)]
    ) if count else np.zeros((0, size, size), np.float32)
