"""A 2D ResNet-18 (the image stand-in, ImageNet weights) inflated into the official R(2+1)D-18 of AVC / AVSA.

As I3D inflates 2D filters (Carreira & Zisserman, CVPR 2017), every 2D filter becomes the video filter that computes
it on each frame: the stem's 7 x 7 kernel sits in the centre tap of the (3, 7, 7) kernel, and a block's spatial
(1, 3, 3) convolutions take the 2D block's 3 x 3 kernels. The block's temporal (3, 1, 1) convolutions start as the
identity (centre tap), and their batch norms as the identity too. On a clip of one repeated frame the inflated net
computes the 2D net's features per frame, with two differences from the official block's layout:
* the block applies a ReLU after its second spatial batch norm (the 2D block adds that branch to the shortcut before
  any ReLU), so negative values of the branch are lost;
* the stem has no max pool, so every stage sees twice the 2D net's resolution.
The shortcut's 1 x 1 convolution has no batch norm in the official block: the 2D shortcut's batch-norm scale goes into
its kernel and its shift into the block's output batch norm, which starts as the identity otherwise. This is exact.

The mapping: `conv1` / `bn1` -> `stem_conv` / `stem_bn`; `layer{k}_{i}_conv1` / `bn1` -> `conv{k+1}x_{i}_spt_conv1` /
`spt_bn1`; `conv2` / `bn2` -> `spt_conv2` / `spt_bn2`; `layer{k}_0_downsample_0` / `_1` -> `conv{k+1}x_0_res_conv` and
`conv{k+1}x_0_out_bn`'s shift.
"""

import numpy as np

BN_EPSILON = 1e-5


def _identity_bn(layer, shift=None):
    """gamma 1, beta `shift` (0), mean 0 and a variance that makes the normalisation exactly 1 / 1."""
    channels = layer.gamma.shape[0]
    epsilon = float(getattr(layer, "epsilon", BN_EPSILON))
    layer.set_weights([np.ones(channels, np.float32), np.zeros(channels, np.float32) if shift is None else shift,
                       np.zeros(channels, np.float32), np.full(channels, 1.0 - epsilon, np.float32)])


def _identity_in_time(layer):
    kernel = np.zeros(tuple(layer.kernel.shape), np.float32)  # (3, 1, 1, C, C)
    kernel[kernel.shape[0] // 2, 0, 0] = np.eye(kernel.shape[3], dtype=np.float32)
    layer.set_weights([kernel])


def _centre_tap(kernel_2d, taps):
    kernel = np.zeros((taps,) + tuple(kernel_2d.shape), np.float32)
    kernel[taps // 2] = kernel_2d
    return kernel


def inflate_resnet18(video_encoder, image_backbone):
    """Copies a 2D `keras_avloc.backbones.ResNet18` into an official ("avsa" block) R(2+1)D-18 of the same width.

    Args:
        video_encoder: `r2plus1d_backbone(width, "avsa")` (e.g. `AVC(...).video_encoder`).
        image_backbone: a 3-channel `ResNet18` with the same width, its weights loaded.

    Returns:
        the number of video layers set.

    Raises:
        ValueError: the widths differ or the video encoder is not made of the official blocks.
    """
    get, put = image_backbone.get_layer, video_encoder.get_layer
    try:
        put("conv2x_0_spt_conv1")
    except ValueError as err:
        raise ValueError("inflate_resnet18: the video encoder must be built with video_block='avsa'.") from err
    if tuple(put("stem_conv").kernel.shape)[1:] != tuple(get("conv1").kernel.shape):
        raise ValueError(f"inflate_resnet18: the 2D stem {tuple(get('conv1').kernel.shape)} does not fit the video "
                         f"stem {tuple(put('stem_conv').kernel.shape)}; use a stand-in of the model's width.")
    put("stem_conv").set_weights([_centre_tap(np.asarray(get("conv1").kernel), put("stem_conv").kernel.shape[0])])
    put("stem_bn").set_weights(get("bn1").get_weights())
    count = 2
    for stage in range(1, 5):
        for block in range(2):
            source, target = f"layer{stage}_{block}", f"conv{stage + 1}x_{block}"
            for index in (1, 2):
                spatial = np.asarray(get(f"{source}_conv{index}").kernel)[None]  # (1, 3, 3, in, out)
                put(f"{target}_spt_conv{index}").set_weights([spatial])
                put(f"{target}_spt_bn{index}").set_weights(get(f"{source}_bn{index}").get_weights())
            _identity_in_time(put(f"{target}_tmp_conv1"))
            _identity_bn(put(f"{target}_tmp_bn1"))
            _identity_in_time(put(f"{target}_tmp_conv2"))
            shift = None
            if block == 0 and stage > 1:
                gamma, beta, mean, variance = get(f"{source}_downsample_1").get_weights()
                scale = gamma / np.sqrt(variance + BN_EPSILON)
                kernel = np.asarray(get(f"{source}_downsample_0").kernel) * scale  # (1, 1, in, out)
                put(f"{target}_res_conv").set_weights([kernel[None].astype(np.float32)])
                shift = (beta - mean * scale).astype(np.float32)
            _identity_bn(put(f"{target}_out_bn"), shift)
            count += 7 + (block == 0 and stage > 1)
    return count
