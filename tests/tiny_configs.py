"""The tiny configuration of every registered method (its `tiny_config`) and a random batch of its inputs."""

from keras_avloc.models import get_method_class, method_names

TINY_BACKBONE = {"backbone_kwargs": {"width": 8}}
TINY_OPTIONS = {name: get_method_class(name).tiny_config for name in method_names()}
"""Each method's `tiny_config` (declared by the method itself), by registered name; None for a method without one."""


def tiny_batch(method_class, rng, batch=8):
    """(x, y) of one random batch in the inputs `method_class` trains on: frames (64 x 64 images, 1 s of its
    front-end's spectrogram, two classes per clip among 3) or 360° viewpoints (4 frames of 32 x 32, ambiX
    log-mels)."""
    import numpy as np
    import tensorflow as tf

    from keras_avloc.data.audio import FRONTEND_SAMPLE_RATES, get_frontend

    if method_class.data_kind == "sphere":
        views = method_class.viewpoints_per_clip
        x = {"image": rng.normal(size=(batch, views, 4, 32, 32, 3)).astype(np.float32),
             "audio": 10 * rng.normal(size=(batch, views, 101, 128, 4)).astype(np.float32)}
        return x, {"index": np.arange(batch)}
    wave = 0.3 * rng.normal(size=(batch, int(FRONTEND_SAMPLE_RATES[method_class.frontend])))
    audio = np.asarray(get_frontend(method_class.frontend)(tf.constant(wave, tf.float32)))
    x = {"image": rng.normal(size=(batch, 64, 64, 3)).astype(np.float32), "audio": audio}
    labels = rng.integers(0, 3, size=(batch, 2)).astype(np.int32)
    labels[:, 1] = (labels[:, 0] + 1) % 3
    return x, {"index": np.arange(batch), "label": labels[:, 0], "labels": labels}
