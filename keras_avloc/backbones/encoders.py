"""Encoders shared by the methods: ResNet-18 image and audio encoders with pooling and projections.

Every builder takes `dtype` (a dtype policy) and passes it to each layer it creates, so a model built in
bf16 holds bf16 layers and rebuilds identically from its config whatever the global policy is then.

Example:
>>> image = projected_image_encoder(resnet18_backbone(3, 2, "image_resnet18"), embed_dim=512)  # doctest: +SKIP
>>> audio = audio_encoder(resnet18_backbone(1, 2, "audio_resnet18"), projection_dim=512)  # doctest: +SKIP
"""

import keras


def resnet18_backbone(input_channels, layer4_stride, name, dtype=None, **resnet_kwargs):
    """A `keras_avloc.backbones.ResNet18` accepting any spatial size.

    Args:
        input_channels: 3 (RGB) or 1 (spectrogram).
        layer4_stride: 1 (LVS, 14 x 14 at 224 px) or 2 (EZ-VSL / AVGN, 7 x 7).
        name: model name ("image_resnet18", "audio_resnet18").
        dtype: dtype policy of its layers.
        **resnet_kwargs: e.g. `width=16`.
    """
    from keras_avloc.backbones.resnet import ResNet18

    return ResNet18(input_channels=input_channels, layer4_stride=layer4_stride,
                    input_shape=(None, None, input_channels), name=name, dtype=dtype, **resnet_kwargs)


def stride1_resnet18_networks(dtype=None, **resnet_kwargs):
    """The projection-free pair: ResNet-18s with a stride-1 layer4 for the image and for the 1-channel spectrogram,
    the audio globally max-pooled.

    Args:
        dtype: dtype policy of their layers.
        **resnet_kwargs: e.g. `width=16`.

    Returns:
        (image_backbone "image_resnet18", audio_backbone "audio_resnet18", audio_encoder "audio_encoder").
    """
    image_backbone = resnet18_backbone(3, 1, "image_resnet18", dtype=dtype, **resnet_kwargs)
    audio_backbone = resnet18_backbone(1, 1, "audio_resnet18", dtype=dtype, **resnet_kwargs)
    return image_backbone, audio_backbone, audio_encoder(audio_backbone, pooling="max", dtype=dtype)


def audio_encoder(backbone, pooling="max", projection_dim=None, name="audio_encoder", dtype=None, dropout=0.0, heads=1):
    """Spectrogram encoder: backbone -> global max (or average) pool -> [dropout] -> optional linear projection(s).

    Args:
        backbone: a Keras model [B, F, T, C] -> [B, f, t, D].
        pooling: "max" (LVS, EZ-VSL, AVGN) or "avg".
        projection_dim: size of a final Dense layer (EZ-VSL / AVGN: 512); None for none (LVS).
        name: model name.
        dtype: dtype policy of the new layers.
        dropout: dropout rate on the pooled vector, in training only (0: none; FNAC and SLAVC's `--dropout_aud`).
        heads: number of parallel projections, concatenated along the channels (SLAVC: 2, `aud_proj1` and
            `aud_proj2`); needs `projection_dim`.

    Returns:
        keras.Model [B, F, T, C] -> [B, heads * projection_dim (or D)].
    """
    if pooling not in ("max", "avg"):
        raise ValueError(f"audio_encoder: pooling must be 'max' or 'avg', got {pooling!r}.")
    if heads != 1 and not projection_dim:
        raise ValueError("audio_encoder: several heads need a projection_dim.")
    inputs = keras.Input(shape=(None, None, backbone.input_shape[-1]), name="audio")
    features = backbone(inputs)
    if pooling == "max":
        vectors = keras.layers.GlobalMaxPooling2D(name="audio_max_pool", dtype=dtype)(features)
    else:
        vectors = keras.layers.GlobalAveragePooling2D(name="audio_avg_pool", dtype=dtype)(features)
    if dropout:
        vectors = keras.layers.Dropout(float(dropout), name="audio_dropout", dtype=dtype)(vectors)
    if projection_dim and heads == 1:
        vectors = keras.layers.Dense(projection_dim, name="audio_projection", dtype=dtype)(vectors)
    elif projection_dim:
        vectors = keras.layers.Concatenate(name="audio_heads", dtype=dtype)(
            [keras.layers.Dense(projection_dim, name=f"audio_projection_{i + 1}", dtype=dtype)(vectors)
             for i in range(heads)])
    return keras.Model(inputs, vectors, name=name)


def projected_image_encoder(backbone, embed_dim, name="image_encoder", dtype=None, dropout=0.0, heads=1):
    """Image encoder: backbone -> [dropout] -> 1x1 convolution(s) (with bias) to `embed_dim` channels (EZ-VSL, AVGN,
    FNAC, SLAVC).

    Args:
        backbone: a Keras model [B, H, W, 3] -> [B, h, w, D].
        embed_dim: output channels of each projection.
        name: model name.
        dtype: dtype policy of the new layers.
        dropout: element-wise dropout rate on the backbone's features, active in training only (0: none, as
            EZ-VSL; FNAC and SLAVC train with 0.9, torch's `nn.Dropout` before their image projections).
        heads: number of parallel projections, concatenated along the channels (SLAVC: 2, `img_proj1` and
            `img_proj2`).

    Returns:
        keras.Model [B, H, W, 3] -> [B, h, w, heads * embed_dim].
    """
    inputs = keras.Input(shape=(None, None, 3), name="image")
    features = backbone(inputs)
    if dropout:
        features = keras.layers.Dropout(float(dropout), name="image_dropout", dtype=dtype)(features)
    if heads == 1:
        projected = keras.layers.Conv2D(embed_dim, 1, name="image_projection", dtype=dtype)(features)
    else:
        projected = keras.layers.Concatenate(name="image_heads", dtype=dtype)(
            [keras.layers.Conv2D(embed_dim, 1, name=f"image_projection_{i + 1}", dtype=dtype)(features)
             for i in range(heads)])
    return keras.Model(inputs, projected, name=name)
