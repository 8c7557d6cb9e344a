"""Training: `train(...)` (the API behind `avloc train`) and its callbacks.

Example:
>>> from keras_avloc.training import train
>>> model, history = train("lvs", "datasets/stamps", "runs/lvs", epochs=5, batch_size=8)  # doctest: +SKIP
"""

from keras_avloc.training.train import TrainingError, build_training_model, train

__all__ = ["TrainingError", "build_training_model", "train"]
