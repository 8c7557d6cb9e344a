"""Run as a script: one process of a training job, `train(**json.loads(sys.argv[1]))` (one worker of a
multi-worker job when TF_CONFIG is set). test_distribute.py starts several of these on loopback ports.

Environment (test hooks, both optional):
    AVLOC_TEST_INITIAL_WEIGHTS=path.npz   the chief saves the trainable weights before the first step there
    AVLOC_TEST_DIE_AT=EPOCH:BATCH         this process SIGKILLs itself after that batch (a preempted worker)
"""

import json
import os
import signal
import sys

import keras
import numpy as np

from keras_avloc.training import train


class InitialWeights(keras.callbacks.Callback):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        np.savez(self.path, *[variable.numpy() for variable in self.model.trainable_weights])


class DieAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (int(epoch), int(batch)), -1

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            print(f"dying at epoch {self.epoch} batch {batch}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    arguments = json.loads(sys.argv[1])
    callbacks = []
    if os.environ.get("AVLOC_TEST_INITIAL_WEIGHTS"):
        callbacks.append(InitialWeights(os.environ["AVLOC_TEST_INITIAL_WEIGHTS"]))
    if os.environ.get("AVLOC_TEST_DIE_AT"):
        callbacks.append(DieAt(*os.environ["AVLOC_TEST_DIE_AT"].split(":")))
    _, history = train(**arguments, callbacks=callbacks)
    losses = [float(value) for value in (history.history.get("loss", []) if history else [])]
    print("finished", json.dumps({"loss": losses, "epochs": list(history.epoch) if history else []}), flush=True)
