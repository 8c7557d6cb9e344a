"""ResNet-18 as a Keras functional model with torchvision's layout and layer names.

Layer names mirror torchvision's module names with "." replaced by "_" (`layer1.0.conv1` ->
`layer1_0_conv1`, `layer2.0.downsample.0` -> `layer2_0_downsample_0`), so PyTorch state dicts map
onto the model by name (see `keras_avloc.backbones.porting`).
"""

import keras
from keras import layers

from keras_avloc.layers.normalization import FusedBatchNormalization
from keras_avloc.layers.padding import ReflectPadding2D

# torchvision's BatchNorm2d: eps=1e-5, running-stat momentum 0.1, i.e. Keras momentum 0.9.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
BLOCKS_PER_STAGE = (2, 2, 2, 2)
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")
INTERMEDIATE_NAMES = ("stem",) + STAGE_NAMES


def _conv(x, filters, kernel_size, stride, padding, name, dtype=None, padding_mode="zeros"):
    """A bias-free conv with torch padding semantics.

    Keras' padding="same" pads asymmetrically for strided convs (more on the bottom/right), torch pads
    `padding` pixels on every side. Strided (and unusually padded) convs therefore get an explicit
    `ZeroPadding2D` and a 'valid' conv; stride-1 convs with `padding = (k - 1) / 2` use "same", which is
    then symmetric and identical to torch, and saves a padded copy of the activation.
    """
    same = stride == 1 and kernel_size % 2 == 1 and padding == (kernel_size - 1) // 2 and padding_mode == "zeros"
    if padding and padding_mode != "zeros":
        x = ReflectPadding2D(padding, mode=padding_mode, name=f"{name}_pad", dtype=dtype)(x)
    elif padding and not same:
        x = layers.ZeroPadding2D(padding, name=f"{name}_pad", dtype=dtype)(x)
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same" if same else "valid",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        name=name,
        dtype=dtype,
    )(x)


def _batch_norm(x, name, dtype=None):
    # One fused TF kernel instead of ~10 element-wise ops; same weights, names and results as Keras BN.
    return FusedBatchNormalization(axis=-1, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name, dtype=dtype)(x)


def _basic_block(x, filters, stride, name, dtype=None, padding_mode="zeros"):
    """torchvision's BasicBlock: conv3x3-bn-relu-conv3x3-bn (+ 1x1 conv-bn shortcut when needed), add, relu."""
    shortcut = x
    out = _conv(x, filters, 3, stride, 1, f"{name}_conv1", dtype, padding_mode)
    out = _batch_norm(out, f"{name}_bn1", dtype)
    out = layers.ReLU(name=f"{name}_relu1", dtype=dtype)(out)
    out = _conv(out, filters, 3, 1, 1, f"{name}_conv2", dtype, padding_mode)
    out = _batch_norm(out, f"{name}_bn2", dtype)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, 0, f"{name}_downsample_0", dtype)
        shortcut = _batch_norm(shortcut, f"{name}_downsample_1", dtype)
    out = layers.Add(name=f"{name}_add", dtype=dtype)([out, shortcut])
    return layers.ReLU(name=f"{name}_out", dtype=dtype)(out)


@keras.saving.register_keras_serializable(package="keras_avloc")
class ResNet18(keras.Model):
    """ResNet-18 feature extractor (no pooling, no fc) in torchvision layout, channels-last.

    Called like a function, it returns a functional `keras.Model`. The stem is conv1 (7x7, stride 2,
    zero padding 3) - bn1 - relu - maxpool (3x3, stride 2, padding 1), followed by four stages of two
    basic blocks with widths `width * (1, 2, 4, 8)` and strides 1, 2, 2, `layer4_stride`.

    Args:
        input_channels: 3 for RGB images, 1 for spectrograms (the official LVS / EZ-VSL audio nets).
        layer4_stride: 2 (torchvision; 224 px -> 7x7 map, as EZ-VSL / AVGN) or 1 (224 px -> 14x14,
            as the official LVS / CSOL nets).
        input_shape: optional `(height, width, input_channels)`; default `(None, None, input_channels)`.
        return_intermediate: if True the model returns a dict of feature maps
            `{"stem": ..., "layer1": ..., "layer2": ..., "layer3": ..., "layer4": ...}`, where "stem"
            is the conv1-bn1-relu output (stride 2, before max pooling, `width` channels) and
            "layerN" is the output of stage N (strides 4, 8, 16, 16 or 32). Otherwise it returns the
            layer4 map only.
        name: model name; give image and audio encoders different names.
        width: base width (64 = ResNet-18). Smaller widths (e.g. 8 -> 8/16/32/64 channels) are for
            tests and fixtures.
        dtype: dtype policy of every layer (e.g. "mixed_bfloat16"); default: the global policy at
            construction. Saved in the config, so a bf16 backbone reloads as bf16.
        padding: how the convolutions pad: "zeros" (torchvision, the papers) or "reflect" / "symmetric"
            (mirrored, so border cells get no constant padding signal; an ablation, weights are unchanged).

    Returns:
        A `keras.Model` mapping `[B, H, W, input_channels]` to `[B, ceil(H/32), ceil(W/32), 8 * width]`
        (layer4_stride=2) or `[B, ceil(H/16), ceil(W/16), 8 * width]` (layer4_stride=1).

    Example:
    >>> image_encoder = ResNet18(layer4_stride=1, name="image_encoder")
    >>> image_encoder(np.zeros((2, 224, 224, 3), "float32")).shape
    TensorShape([2, 14, 14, 512])
    >>> audio_encoder = ResNet18(input_channels=1, name="audio_encoder")
    >>> audio_encoder(np.zeros((2, 257, 200, 1), "float32")).shape
    TensorShape([2, 9, 7, 512])
    """

    def __init__(
        self,
        input_channels=3,
        layer4_stride=2,
        input_shape=None,
        return_intermediate=False,
        name="resnet18",
        width=64,
        dtype=None,
        padding="zeros",
        **kwargs,
    ):
        if layer4_stride not in (1, 2):
            raise ValueError(f"ResNet18: layer4_stride must be 1 or 2, got {layer4_stride!r}.")
        if padding not in ("zeros", "reflect", "symmetric"):
            raise ValueError(f"ResNet18: padding must be 'zeros', 'reflect' or 'symmetric', got {padding!r}.")
        if int(width) < 1:
            raise ValueError(f"ResNet18: width must be a positive integer, got {width!r}.")
        if input_shape is None:
            input_shape = (None, None, input_channels)
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[-1] != input_channels:
            raise ValueError(
                f"ResNet18: input_shape must be (height, width, {input_channels}) for "
                f"input_channels={input_channels} (channels-last), got {input_shape!r}."
            )

        dtype = keras.dtype_policies.get(dtype) if dtype is not None else keras.dtype_policies.get(
            keras.config.dtype_policy().name)
        inputs = keras.Input(shape=input_shape, name="input")
        x = _conv(inputs, width, 7, 2, 3, "conv1", dtype, padding)
        x = _batch_norm(x, "bn1", dtype)
        stem = layers.ReLU(name="relu", dtype=dtype)(x)
        # Zero padding equals torch's -inf padding here because the input is post-ReLU (>= 0).
        x = layers.ZeroPadding2D(1, name="maxpool_pad", dtype=dtype)(stem)
        x = layers.MaxPooling2D(3, strides=2, padding="valid", name="maxpool", dtype=dtype)(x)

        features = {"stem": stem}
        stage_strides = (1, 2, 2, layer4_stride)
        for stage, (stage_name, blocks, stride) in enumerate(zip(STAGE_NAMES, BLOCKS_PER_STAGE, stage_strides)):
            filters = int(width) * 2**stage
            for block in range(blocks):
                x = _basic_block(x, filters, stride if block == 0 else 1, f"{stage_name}_{block}", dtype, padding)
            features[stage_name] = x

        outputs = features if return_intermediate else x
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.dtype_policy = dtype

        self.input_channels = input_channels
        self.layer4_stride = layer4_stride
        self.return_intermediate = return_intermediate
        self.width = int(width)
        self.padding = padding
        self._input_shape_arg = input_shape

    @property
    def output_stride(self):
        """Total downsampling factor of the layer4 map (16 or 32)."""
        return 16 * self.layer4_stride

    @property
    def output_channels(self):
        return 8 * self.width

    def get_config(self):
        return {
            "input_channels": self.input_channels,
            "layer4_stride": self.layer4_stride,
            "input_shape": self._input_shape_arg,
            "return_intermediate": self.return_intermediate,
            "name": self.name,
            "width": self.width,
            "padding": self.padding,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
