"""A complete method: the example of docs/design.md ("How a method plugs in"), run by the conformance suite.

In the package it would be `keras_avloc/models/example.py` with `METHODS = {"example": "ExampleMethod"}` beside its
imports; `tests/test_conformance.py` registers it with `register_method` instead, so that it is checked exactly like
the built-in methods without being one.
"""

import keras
from keras import ops

from keras_avloc.backbones import encoders
from keras_avloc.models import AVLocModel
from keras_avloc.models.losses_common import cross_entropy_with_integer_targets, l2_normalize


def example_loss_terms(image_maps, audio_vecs, temperature=0.07):
    """InfoNCE over the batch on the max over space of the cosine between each image's map and each clip's vector."""
    image_maps, audio_vecs = l2_normalize(image_maps, axis=-1), l2_normalize(audio_vecs, axis=-1)
    cosines = ops.einsum("bhwd,md->bmhw", ops.cast(image_maps, "float32"), ops.cast(audio_vecs, "float32"))
    logits = ops.max(cosines, axis=(2, 3)) / temperature  # [images, clips]
    targets = ops.arange(ops.shape(logits)[0], dtype="int32")
    loss = cross_entropy_with_integer_targets(logits, targets)
    return {"loss": loss, "positive": ops.mean(ops.diagonal(logits)) * temperature}


@keras.saving.register_keras_serializable(package="keras_avloc_example")
class ExampleMethod(AVLocModel):
    """Two ResNet-18s (image maps, max-pooled audio vectors) trained with `example_loss_terms`.

    Args:
        temperature: InfoNCE temperature.
        backbone_kwargs: extra arguments of both ResNet-18s (e.g. `{"width": 16}`).
        **kwargs: `eval_settings` and `keras.Model` arguments such as `dtype` (see `AVLocModel`).
    """

    loss_term_names = ("loss", "positive")
    display_name = "Example"
    tiny_config = {"backbone_kwargs": {"width": 8}}

    def __init__(self, temperature=0.07, backbone_kwargs=None, name="example", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature, self.backbone_kwargs = temperature, dict(backbone_kwargs or {})
        dtype = self.dtype_policy
        self.image_encoder = encoders.resnet18_backbone(3, 2, "image_resnet18", dtype=dtype, **self.backbone_kwargs)
        audio_backbone = encoders.resnet18_backbone(1, 2, "audio_resnet18", dtype=dtype, **self.backbone_kwargs)
        self.audio_encoder = encoders.audio_encoder(audio_backbone, pooling="max", dtype=dtype)

    def compute_loss_terms(self, image_maps, audio_vecs):
        return example_loss_terms(image_maps, audio_vecs, self.temperature)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "backbone_kwargs": self.backbone_kwargs}
