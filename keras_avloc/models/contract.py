"""The method contract: what every method provides, and the optional capabilities the plumbing looks for.

Every method is an `AVLocModel` subclass registered once (`register_method`). The base gives it training
(`train_step` / `test_step` over `compute_batch_terms`, the global batch under a strategy), `localize`, saving
and `eval_settings`; a method provides:

* `call(inputs)`: its features; `compute_loss_terms(features)` (or, when it needs labels,
  `compute_batch_terms(x, y, training)`), every name of `loss_term_names` a float32 scalar;
* `similarity_map(image_maps, audio_vecs)` when its map is the base's cosine map;
* `get_config` extending the base's, so `from_config(get_config())` rebuilds it exactly;
* class attributes: `frontend` (its audio front-end), `data_kind` ("frames" or "sphere"), `display_name`,
  `next_stage` (the registered name that continues it, for multi-stage methods; None otherwise), `demo_recipe` (its
  place and settings in `avloc demo`) and `tiny_config` (its smallest constructor arguments, for the tests);
* a module-level `METHODS = {"name": "ClassName"}` in its module, which registers it (`keras_avloc.models.registry`).

`tests/test_conformance.py` checks every registered method against this contract.

The plumbing (evaluation, the demo, the command line) asks for an optional capability with `isinstance(model, X)`
for one of the protocols below, never by the method's name.

Example:
>>> from keras_avloc.models.contract import MultiSource
>>> isinstance(build_model("avgn"), MultiSource)  # doctest: +SKIP
True
"""

from typing import Protocol, runtime_checkable


@runtime_checkable
class MultiSource(Protocol):
    """Localises each audio class of a (mixed) clip on its own (AVGN): per-source maps, class-conditioned maps."""

    def localize_sources(self, images, audio, n_sources=2, class_ids=None, min_probability=None, image_size=None):
        ...


@runtime_checkable
class ClassAware(Protocol):
    """Draws one map per discovered class and assigns clips to classes (CSOL / IEr stage two)."""

    def localize_classes(self, images, audio, image_size=None):
        ...

    def cluster_ids(self, images, audio):
        ...


@runtime_checkable
class MultiHead(Protocol):
    """Several heads (DenseAV: sound and language), each with its maps, and dense outputs for prompted scoring."""

    def localize_heads(self, images, audio, image_size=None, over_time=False):
        ...

    def evaluation_outputs(self, images, audio):
        ...


@runtime_checkable
class InterferenceFilters(Protocol):
    """IEr's stage two: silent-object and off-screen filters that evaluation can switch off (ablations)."""

    silent_filter: bool
    offscreen_filter: bool


@runtime_checkable
class OfficialCheckpoint(Protocol):
    """Loads the official repository's released checkpoint (`avloc port-weights`)."""

    @classmethod
    def from_official_checkpoint(cls, path, **kwargs):
        ...


@runtime_checkable
class FastInference(Protocol):
    """Exposes the two encoders its maps come from (`localization_encoders`; `AVLocModel` gives `image_encoder` and
    `audio_encoder`) and the similarity map: `keras_avloc.perf.fast_inference_model` folds them.
    Frame methods only: AVC / AVSA alias their video encoder as `image_encoder`, so check `data_kind` too."""

    image_encoder: object
    audio_encoder: object

    def localization_encoders(self):
        ...

    def similarity_map(self, image_maps, audio_vecs):
        ...
