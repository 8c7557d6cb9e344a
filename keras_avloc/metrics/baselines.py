"""No-learning baselines that every results table reports next to a model.

* `center_prior`: an isotropic Gaussian at the image centre (σ = `sigma` × side). Photographers centre
  subjects, so this prior is a strong floor on VGG-SS.
* `random_maps`: i.i.d. uniform noise (seeded) — the chance level.

`ground_truth_oracle` is not a baseline but the other end of the scale: the ground truth itself, ranked so
that the median binarisation of cIoU keeps the object and then its nearest pixels. No map scores a higher
cIoU; on objects smaller than half the image that is 2 x their area (the median keeps half the image).

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


def ground_truth_oracle(gt_maps):
    """The best possible maps for median-binarised cIoU: the object, then the pixels nearest to it.

    Object pixels share one value (with `>=` at the median, an object larger than half the image is then
    kept whole); the others get distinct values that fall with their distance to the object (ties broken
    in raster order), so that for a smaller object the median keeps it and exactly its nearest pixels.

    Args:
        gt_maps: [N, H, W] ground-truth maps (values > 0 are the object).

    Returns:
        float32 [N, H, W]: 1 on the object, values in (0, 0.5] decreasing with the distance outside it.

    Example:
    >>> gt = np.zeros((1, 8, 8)); gt[0, 2:4, 2:4] = 1
    >>> oracle = ground_truth_oracle(gt)
    >>> bool(oracle[0, 2, 2] > oracle[0, 4, 4] > oracle[0, 7, 7])
    True
    """
    from scipy.ndimage import distance_transform_edt

    gt_maps = np.asarray(gt_maps)
    out = np.zeros(gt_maps.shape, np.float32)
    for index, gt in enumerate(gt_maps):
        inside = gt > 0
        if not inside.any():
            continue
        distance = distance_transform_edt(~inside).ravel()
        order = np.lexsort((np.arange(distance.size), distance))  # nearest first, then raster order
        rank = np.empty(distance.size, np.float64)
        rank[order] = np.arange(distance.size)
        values = 0.5 * (1.0 - rank / distance.size)
        out[index] = np.where(inside, 1.0, values.reshape(gt.shape))
    return out
