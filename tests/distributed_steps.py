"""Run as a script (a fresh process, so that TensorFlow can split the CPU into two logical devices): one SGD
training step of every registered method on one global batch, on one device and under a two-replica
MirroredStrategy; prints one JSON line per method with the loss of each run and the largest weight difference.

    python tests/distributed_steps.py [METHOD ...]

"lvs-without-gather" is LVS with `global_batch` switched off (each replica's loss sees only its own clips): the
harness must tell it apart.

The test in test_distribute.py reads the lines. A method whose loss does not see the global batch (a
`compute_batch_terms` that skips `self.global_batch`) gives a different loss and different weights here.
"""

import json
import sys

import numpy as np
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from keras_avloc.models import build_model, get_method_class, method_names  # noqa: E402
from gc_settings import fewer_collections  # noqa: E402
from tiny_configs import TINY_BACKBONE, TINY_OPTIONS, tiny_batch  # noqa: E402

BATCH = 8  # global batch: 4 clips per replica
EAGER = True  # one step: tracing would cost more than it saves
LEARNING_RATE = 1e-4  # the papers' rate
SMALL, OPTIONS = TINY_BACKBONE, TINY_OPTIONS
fewer_collections()  # as in the test processes (tests/gc_settings.py)


UNGATHERED = "lvs-without-gather"


def batch_for(method, rng):
    return tiny_batch(get_method_class("lvs" if method == UNGATHERED else method), rng, BATCH)


def one_step(method, strategy, x, y):
    keras.utils.set_random_seed(3)
    with strategy.scope() if strategy is not None else tf.distribute.get_strategy().scope():
        if method == UNGATHERED:
            model = build_model("lvs", **SMALL)
            object.__setattr__(model, "global_batch", lambda tree: tree)
        else:
            model = build_model(method, **OPTIONS.get(method, SMALL))
        model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE), run_eagerly=EAGER)
        model({key: value[:2] for key, value in x.items()})
        before = [v.numpy() for v in model.trainable_weights]
        history = model.fit(tf.data.Dataset.from_tensors((x, y)), epochs=1, verbose=0)
    return float(history.history["loss"][0]), before, model


def main(methods):
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    for method in methods:
        x, y = batch_for(method, np.random.default_rng(0))
        loss_one, before, single = one_step(method, None, x, y)
        loss_two, _, mirrored = one_step(method, two, x, y)
        weights = [(a.numpy(), b.numpy()) for a, b in zip(single.trainable_weights, mirrored.trainable_weights)]
        difference = max(float(np.max(np.abs(a - b))) for a, b in weights)
        moved = max(float(np.max(np.abs(a - b0))) for (a, _), b0 in zip(weights, before))
        print(json.dumps({"method": method, "loss_one": loss_one, "loss_two": loss_two,
                          "weight_difference": difference, "largest_update": moved}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or [name for name in method_names()])
