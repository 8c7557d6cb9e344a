"""DenseAV's networks: the spectrogram CNN, the image and audio aligners, and LoRA on transformer featurizers.

Facts from mhamilton723/DenseAV (`denseav/aligners.py`, `denseav/train.py`); see `keras_avloc.models.denseav` for the
model, its losses and the deviations.
"""

import math

import keras
from keras import ops

from keras_avloc.layers.normalization import FusedBatchNormalization

CODE_DIM = 384
ATTENTION_HEADS = 6
MLP_RATIO = 4
NORM_EPSILON = 1e-4
LORA_RANK = 8  # the official image_lora_rank (for its ViT featurizer)
LORA_ALPHA = 32


@keras.saving.register_keras_serializable(package="keras_avloc")
class FrequencyMean(keras.layers.Layer):
    """[B, T, F, C] -> [B, T, C]: the mean over frequency (`FrequencyAvg`)."""

    def call(self, inputs):
        return ops.mean(inputs, axis=2)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], input_shape[3])


@keras.saving.register_keras_serializable(package="keras_avloc")
class ClassToken(keras.layers.Layer):
    """Prepends (`mode="add"`) or removes (`mode="drop"`) one learned token on [B, t, D] sequences."""

    def __init__(self, mode="add", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def build(self, input_shape):
        if self.mode == "add":
            self.token = self.add_weight(shape=(input_shape[-1],), initializer="random_normal", name="token")
        self.built = True

    def call(self, inputs):
        if self.mode == "drop":
            return inputs[:, 1:]
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype)[None, None, :],
                                 (ops.shape(inputs)[0], 1, inputs.shape[-1]))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        steps = None if input_shape[1] is None else input_shape[1] + (1 if self.mode == "add" else -1)
        return (input_shape[0], steps, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def spectrogram_cnn(width=64, name="audio_cnn", dtype=None):
    """A spectrogram CNN that keeps time resolution: [B, T, F, 1] -> [B, T/4, F/16, 8 * width].

    Four stages of two 3 x 3 conv-BN-ReLU layers (widths `width * (1, 2, 4, 8)`); the first conv of each
    stage has stride (2, 2), (2, 2), (1, 2), (1, 2): the 5 ms log-mel frames become 20 ms steps.
    """
    inputs = keras.Input(shape=(None, None, 1), name="spectrogram")
    x = inputs
    for stage, stride in enumerate(((2, 2), (2, 2), (1, 2), (1, 2))):
        for layer in range(2):
            x = keras.layers.Conv2D(int(width) * 2**stage, 3, strides=stride if layer == 0 else 1, padding="same",
                                    use_bias=False, name=f"stage{stage + 1}_conv{layer + 1}", dtype=dtype)(x)
            x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=f"stage{stage + 1}_bn{layer + 1}",
                                        dtype=dtype)(x)
            x = keras.layers.ReLU(name=f"stage{stage + 1}_relu{layer + 1}", dtype=dtype)(x)
    return keras.Model(inputs, x, name=name)


def torch_default_init(fan_in):
    """torch's default init of Linear / Conv weights and biases, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming uniform
    with a = sqrt(5)), as keyword arguments of a Keras layer: the official aligners keep it, and the scale of
    the similarities at the start of training follows from it."""
    bound = 1.0 / math.sqrt(fan_in)
    return {"kernel_initializer": keras.initializers.RandomUniform(-bound, bound),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound)}


def image_aligner(featurizer, code_dim=CODE_DIM, name="image_encoder", dtype=None):
    """featurizer -> LayerNorm over channels (eps 1e-4) -> 1x1 conv to `code_dim` ("image_linear")."""
    inputs = keras.Input(shape=(None, None, 3), name="image")
    features = featurizer(inputs)
    channels = features.shape[-1]
    x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="image_channel_norm", dtype=dtype)(features)
    x = keras.layers.Conv2D(code_dim, 1, name="image_projection", dtype=dtype, **torch_default_init(channels))(x)
    return keras.Model(inputs, x, name=name)


def audio_aligner(featurizer, code_dim=CODE_DIM, attention_heads=ATTENTION_HEADS, name="audio_encoder", dtype=None):
    """featurizer -> frequency mean -> LayerNorm -> two (1, 3)-stride-3 convs -> self-attention block with a
    CLS token ("audio_sa_3_3_pool_2"): [B, T, F, 1] -> [B, t, code_dim]."""
    if code_dim % attention_heads:
        raise ValueError(f"DenseAV: code_dim {code_dim} must be a multiple of the {attention_heads} attention heads.")
    inputs = keras.Input(shape=(None, None, 1), name="audio")
    features = featurizer(inputs)
    channels = features.shape[-1]
    x = FrequencyMean(name="frequency_mean", dtype=dtype)(features)
    x = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="audio_channel_norm", dtype=dtype)(x)
    x = keras.layers.Conv1D(code_dim, 3, strides=3, name="time_pool_1", dtype=dtype, **torch_default_init(3 * channels))(x)
    x = keras.layers.Conv1D(code_dim, 3, strides=3, name="time_pool_2", dtype=dtype, **torch_default_init(3 * code_dim))(x)
    tokens = ClassToken("add", name="class_token", dtype=dtype)(x)
    normed = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="attention_norm", dtype=dtype)(tokens)
    attended = keras.layers.MultiHeadAttention(attention_heads, code_dim // attention_heads, name="attention",
                                               dtype=dtype, **torch_default_init(code_dim))(normed, normed)
    tokens = keras.layers.Add(name="attention_residual", dtype=dtype)([tokens, attended])
    normed = keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name="mlp_norm", dtype=dtype)(tokens)
    hidden = keras.layers.Dense(MLP_RATIO * code_dim, name="mlp_fc1", dtype=dtype, **torch_default_init(code_dim))(normed)
    hidden = keras.layers.Activation("gelu", name="mlp_gelu", dtype=dtype)(hidden)  # exact (erf) GELU, as torch's
    hidden = keras.layers.Dense(code_dim, name="mlp_fc2", dtype=dtype, **torch_default_init(MLP_RATIO * code_dim))(hidden)
    tokens = keras.layers.Add(name="mlp_residual", dtype=dtype)([tokens, hidden])
    outputs = ClassToken("drop", name="drop_class_token", dtype=dtype)(tokens)
    return keras.Model(inputs, outputs, name=name)


def enable_image_lora(featurizer, rank=LORA_RANK, alpha=LORA_ALPHA):
    """Keras' built-in LoRA on the attention projections (query, key, value, output) of every
    `keras.layers.MultiHeadAttention` inside `featurizer`; returns how many projections got it.

    Raises:
        ValueError: the featurizer has no attention layer (e.g. the default ResNet-18).
    """
    projections = []
    for layer in featurizer._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            projections += [layer._query_dense, layer._key_dense, layer._value_dense, layer._output_dense]
    if not projections:
        raise ValueError(f"DenseAV image_lora_rank: {featurizer.name} has no MultiHeadAttention layer to adapt; LoRA "
                         "applies to transformer featurizers (pass image_lora_rank=0 for a CNN).")
    for projection in projections:
        if not projection.lora_enabled:  # a featurizer rebuilt from its config already carries its LoRA weights
            projection.enable_lora(int(rank), lora_alpha=float(alpha))
    return len(projections)
