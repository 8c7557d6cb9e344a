"""No-learning baselines that every results table reports next to a model.

* `center_prior`: an isotropic Gaussian at the image centre (σ = `sigma` × side). Photographers centre
  subjects, so this prior is a strong floor on VGG-SS.
* `random_maps`: i.i.d. uniform noise (seeded) — the chance level.
* `objectness_maps`: EZ-VSL's object-guided localisation (OGL) prior without audio: the mean absolute
  activation over channels of an image encoder's last feature map, `mean_c |F[h, w, c]|`, upsampled.
"""

import numpy as np

BASELINE_NAMES = ("center", "random", "objectness")


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


def objectness_maps(images, image_encoder, size=224, batch_size=32):
    """Mean absolute feature activation of `image_encoder` (EZ-VSL's OGL without the audio term).

    Args:
        images: float32 [N, H, W, 3], preprocessed the way the encoder expects (ImageNet-normalised).
        image_encoder: a Keras model mapping [B, H, W, 3] to a feature map [B, h, w, C].
        size: output side (maps are bilinearly upsampled, align_corners semantics).
        batch_size: encoder batch size.

    Returns:
        float32 array [N, size, size].
    """
    from keras_avloc.metrics.localization import resize_maps

    images = np.asarray(images, dtype=np.float32)
    maps = []
    for start in range(0, len(images), batch_size):
        features = np.asarray(image_encoder(images[start : start + batch_size], training=False))
        if features.ndim != 4:
            raise ValueError(
                f"objectness_maps needs an encoder returning [B, h, w, C] feature maps, got shape {features.shape}."
            )
        maps.append(np.abs(features).mean(axis=-1))
    if not maps:
        return np.zeros((0, size, size), dtype=np.float32)
    return resize_maps(np.concatenate(maps), size).astype(np.float32)


def baseline_maps(name, count, size=224, seed=0, images=None, image_encoder=None):
    """Dispatches to the baseline called `name` ("center", "random" or "objectness")."""
    if name == "center":
        return center_prior(count, size)
    if name == "random":
        return random_maps(count, size, seed)
    if name == "objectness":
        if images is None or image_encoder is None:
            raise ValueError("the objectness baseline needs images and an image encoder.")
        return objectness_maps(images, image_encoder, size)
    raise ValueError(f"unknown baseline {name!r}; choose from {BASELINE_NAMES}.")
