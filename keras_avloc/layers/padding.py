"""Reflection padding (Keras has only zero padding): one of the ablations of the one-cell shortcut."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_avloc")
class ReflectPadding2D(keras.layers.Layer):
    """Pads the two spatial axes of [B, H, W, C] by mirroring (`mode="reflect"`: the edge pixel is not repeated,
    as `torch.nn.ReflectionPad2d`; `"symmetric"`: it is), so border cells carry no constant padding signal.

    Args:
        padding: pixels added on every side.
        mode: "reflect" or "symmetric".
    """

    def __init__(self, padding=1, mode="reflect", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("reflect", "symmetric"):
            raise ValueError(f"ReflectPadding2D: mode must be 'reflect' or 'symmetric', got {mode!r}.")
        self.padding, self.mode = int(padding), mode

    def call(self, inputs):
        p = self.padding
        return ops.pad(inputs, [[0, 0], [p, p], [p, p], [0, 0]], mode=self.mode)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = lambda side: None if side is None else side + 2 * self.padding  # noqa: E731
        return batch, grow(height), grow(width), channels

    def get_config(self):
        return {**super().get_config(), "padding": self.padding, "mode": self.mode}
