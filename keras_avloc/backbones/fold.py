"""Batch-norm folding for inference: every `BatchNormalization` that directly follows a `Conv2D` is
merged into that convolution (kernel scaled per output channel, bias added), and removed.

In eval mode a batch norm is the per-channel affine map `y = gamma * (x - mean) / sqrt(var + eps) + beta`.
Following a convolution `x = W * z + b`, it equals one convolution with
`W' = W * s` and `b' = (b - mean) * s + beta`, where `s = gamma / sqrt(var + eps)`. The folded network
skips one full read and write of every activation per batch norm (ResNet-18 has 20).

The folded model is for inference only (it has no batch norms left to train). Its layers are new
copies, so later changes to the source model do not reach it.

Example:
>>> from keras_avloc.backbones import ResNet18
>>> from keras_avloc.backbones.fold import fold_batch_norms
>>> backbone = ResNet18(layer4_stride=1)
>>> folded = fold_batch_norms(backbone)  # same outputs as backbone(x, training=False)
"""

import numpy as np
import keras


def _single_call_node(layer):
    """The layer's only inbound node, or None when the layer is shared (called more than once)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    return nodes[0] if len(nodes) == 1 else None


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history is not None else None


def _is_channels_last_conv2d(layer):
    return (
        type(layer) is keras.layers.Conv2D
        and layer.data_format == "channels_last"
        and layer.groups == 1
        and layer.get_config().get("activation") == "linear"
    )


def _is_channel_batch_norm(layer):
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    axis = layer.axis if isinstance(layer.axis, int) else (layer.axis[0] if len(layer.axis) == 1 else None)
    return axis in (-1, 3) and not getattr(layer, "renorm", False)


def foldable_pairs(model):
    """Finds the (Conv2D, BatchNormalization) pairs of a functional model that can be folded.

    A pair qualifies when the batch norm normalises the channel axis of a channels-last, ungrouped,
    activation-free `Conv2D`, both layers are called once, and the convolution's output feeds
    nothing but that batch norm.

    Args:
        model: a functional `keras.Model` (nested functional models are not searched; see
            `fold_batch_norms`).

    Returns:
        dict {batch-norm layer name: conv layer name}.
    """
    pairs = {}
    for layer in model.layers:
        if not _is_channel_batch_norm(layer):
            continue
        node = _single_call_node(layer)
        if node is None or len(node.input_tensors) != 1:
            continue
        conv = _producer(node.input_tensors[0])
        if conv is None or not _is_channels_last_conv2d(conv) or _single_call_node(conv) is None:
            continue
        if len(getattr(conv, "_outbound_nodes", [])) != 1:
            continue
        pairs[layer.name] = conv.name
    return pairs


def folded_conv_weights(kernel, bias, gamma, beta, mean, variance, epsilon):
    """The kernel and bias of `BatchNorm(Conv(x))` as one convolution (numpy, float64 inside).

    Args:
        kernel: conv kernel [kh, kw, in, out].
        bias: conv bias [out] or None.
        gamma, beta: batch-norm scale and offset [out] (None -> 1 and 0).
        mean, variance: batch-norm moving statistics [out].
        epsilon: batch-norm epsilon.

    Returns:
        (kernel [kh, kw, in, out], bias [out]) as float32.
    """
    out_channels = kernel.shape[-1]
    gamma = np.ones(out_channels) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(out_channels) if beta is None else np.asarray(beta, np.float64)
    bias = np.zeros(out_channels) if bias is None else np.asarray(bias, np.float64)
    scale = gamma / np.sqrt(np.asarray(variance, np.float64) + epsilon)
    new_kernel = np.asarray(kernel, np.float64) * scale
    new_bias = (bias - np.asarray(mean, np.float64)) * scale + beta
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def _folded_conv(conv, batch_norm):
    config = conv.get_config()
    config["use_bias"] = True
    config["name"] = conv.name
    new_conv = keras.layers.Conv2D.from_config(config)
    new_conv.build(conv.input.shape)
    kernel, bias = folded_conv_weights(
        keras.ops.convert_to_numpy(conv.kernel),
        keras.ops.convert_to_numpy(conv.bias) if conv.use_bias else None,
        keras.ops.convert_to_numpy(batch_norm.gamma) if batch_norm.scale else None,
        keras.ops.convert_to_numpy(batch_norm.beta) if batch_norm.center else None,
        keras.ops.convert_to_numpy(batch_norm.moving_mean),
        keras.ops.convert_to_numpy(batch_norm.moving_variance),
        batch_norm.epsilon,
    )
    new_conv.kernel.assign(kernel)
    new_conv.bias.assign(bias)
    return new_conv


def _copy_layer(layer):
    new_layer = layer.__class__.from_config(layer.get_config())
    if layer.weights:
        node = _single_call_node(layer) or layer._inbound_nodes[0]
        shapes = [tensor.shape for tensor in node.input_tensors]
        new_layer.build(shapes[0] if len(shapes) == 1 else shapes)
        new_layer.set_weights(layer.get_weights())
    return new_layer


class _Identity:
    """Stands in for a removed batch norm when the graph is replayed."""

    def __call__(self, inputs, *args, **kwargs):
        return inputs


def _is_functional(layer):
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") and hasattr(layer, "_run_through_graph")


def fold_batch_norms(model, name=None):
    """Returns a new functional model equal to `model` in eval mode, with conv+BN pairs merged.

    Nested functional models (e.g. an audio encoder wrapping a ResNet-18) are folded recursively.
    Batch norms that do not directly follow a convolution are kept (copied with their statistics).

    Args:
        model: a functional `keras.Model`, e.g. `keras_avloc.backbones.ResNet18(...)` or an encoder
            built on it.
        name: name of the new model (default: the source model's name + "_folded").

    Returns:
        A `keras.Model` (plain functional) with the same inputs and outputs structure. Outputs equal
        `model(x, training=False)` up to float32 rounding (about 1e-6 relative).

    Raises:
        TypeError: `model` is not a functional model (subclassed models have no graph to rewrite).

    Example:
    >>> folded = fold_batch_norms(ResNet18(input_channels=1, layer4_stride=1))  # doctest: +SKIP
    >>> folded(spectrograms).shape  # doctest: +SKIP
    TensorShape([16, 17, 13, 512])
    """
    if not _is_functional(model):
        raise TypeError(
            f"fold_batch_norms needs a functional keras.Model (e.g. keras_avloc.backbones.ResNet18), got "
            f"{type(model).__name__}; pass the model's encoders (model.image_encoder, model.audio_encoder)."
        )
    pairs = foldable_pairs(model)
    layers_by_name = {layer.name: layer for layer in model.layers}
    folded_convs = {conv_name: _folded_conv(layers_by_name[conv_name], layers_by_name[bn_name])
                    for bn_name, conv_name in pairs.items()}
    replacements = {}

    def operation_fn(operation):
        key = id(operation)
        if key not in replacements:
            if getattr(operation, "name", None) in pairs and operation is layers_by_name.get(operation.name):
                replacements[key] = _Identity()
            elif getattr(operation, "name", None) in folded_convs and operation is layers_by_name.get(operation.name):
                replacements[key] = folded_convs[operation.name]
            elif _is_functional(operation):
                replacements[key] = fold_batch_norms(operation, name=operation.name)
            elif isinstance(operation, keras.layers.Layer):
                replacements[key] = _copy_layer(operation)
            else:
                replacements[key] = operation
        return replacements[key]

    inputs = [
        keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=_producer(tensor).name)
        for tensor in model.inputs
    ]
    outputs = model._run_through_graph(inputs, operation_fn=operation_fn)
    model_inputs = inputs[0] if len(inputs) == 1 and not isinstance(model._inputs_struct, (list, dict)) else inputs
    return keras.Model(model_inputs, outputs, name=name or f"{model.name}_folded")


def count_batch_norms(model):
    """Number of `BatchNormalization` layers in `model`, nested models included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            total += 1
        elif isinstance(layer, keras.Model):
            total += count_batch_norms(layer)
    return total
