"""The method contract, checked for every registered method (keras-hub's shared `TestCase`, for keras-avloc).

Each method declares its tiny configuration (`tiny_config`) and its input kind (`data_kind`: frames or 360°
viewpoints, `tiny_configs.tiny_batch`). Every method in `method_names()`, and the example method of the design docs
(`tests/example_method.py`), must then:

* rebuild exactly from a `.keras` file (`from_config(get_config())`), in float32 and mixed bfloat16: same
  class, same config, its `eval_settings`, the dtype policy of every layer with weights, bit-identical outputs;
* compute in bfloat16 under the mixed policy;
* report every loss term as a float32 scalar, in bf16 too;
* move its weights with one `fit` step;
* give `localize` maps of the requested size (frame methods).

A method added with `register_method` (or a `METHODS` declaration in its module) is checked with no other test code.
The global-batch check of every method (one step on one device against two replicas) is `test_distribute.py`.
"""

import keras
import numpy as np
import pytest
from tiny_configs import tiny_batch

from keras_avloc.models import build_model, get_method_class, load_model, method_names, register_method, registry

EXAMPLE = "example"
METHODS = method_names() + [EXAMPLE]


@pytest.fixture(autouse=True)
def example_method_registered():
    """The design docs' example method, registered for this module's tests only (other tests list the built-ins)."""
    register_method(EXAMPLE, "example_method:ExampleMethod")
    yield
    registry._REGISTERED.pop(EXAMPLE, None)


SETTINGS = {"image_size": 64, "clip_seconds": 0.5}


def _model(method, dtype):
    return build_model(method, dtype=dtype, eval_settings=SETTINGS, **get_method_class(method).tiny_config)


def _outputs(model, x):
    values = model(x, training=False)
    return {key: np.asarray(value) for key, value in values.items() if hasattr(value, "shape")}


def test_every_method_declares_a_tiny_configuration():
    missing = [method for method in METHODS if not isinstance(get_method_class(method).tiny_config, dict)]
    assert not missing, f"{missing}: set the class attribute `tiny_config` (the smallest constructor arguments)"


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("method", METHODS)
def test_config_and_keras_file_rebuild_the_model_exactly(tmp_path, method, dtype):
    x, _ = tiny_batch(get_method_class(method), np.random.default_rng(0), batch=2)
    model = _model(method, dtype)
    before = _outputs(model, x)
    model.save(tmp_path / "model.keras")  # loading rebuilds with `from_config(get_config())`
    assert keras.config.dtype_policy().name == "float32"  # loading must not depend on the global policy
    restored = load_model(str(tmp_path / "model.keras"), compile=False)
    assert type(restored) is type(model) and restored.get_config() == model.get_config()
    assert restored.dtype_policy.name == dtype and restored.eval_settings["image_size"] == 64
    assert restored.eval_settings["clip_seconds"] == 0.5
    policies = [(layer.name, layer.dtype_policy.name) for layer in model._flatten_layers() if layer.weights]
    assert [(layer.name, layer.dtype_policy.name) for layer in restored._flatten_layers() if layer.weights] == policies
    assert dtype in {name for _, name in policies}
    after = _outputs(restored, x)
    assert before and set(after) == set(before)
    if dtype == "mixed_bfloat16":
        assert "bfloat16" in {keras.backend.standardize_dtype(value.dtype) for value in before.values()}
    for key in before:
        np.testing.assert_array_equal(after[key], before[key], err_msg=f"{method} output {key}")
    if model.data_kind == "frames":  # the maps come from the outputs compared above
        heatmaps = restored.localize(x["image"], x["audio"], image_size=(40, 48))
        assert heatmaps.shape == (2, 40, 48) and heatmaps.dtype == np.float32 and np.isfinite(heatmaps).all()


@pytest.mark.parametrize("method", METHODS)
def test_loss_terms_are_float32_scalars_and_one_step_moves_the_weights(method):
    keras.utils.set_random_seed(1)
    x, y = tiny_batch(get_method_class(method), np.random.default_rng(1), batch=4)
    model = _model(method, "mixed_bfloat16")
    model(x, training=False)
    terms = model.compute_batch_terms(x, y, training=True)
    assert set(model.loss_term_names) <= set(terms)
    for name in model.loss_term_names:
        value = terms[name]
        assert keras.backend.standardize_dtype(value.dtype) == "float32" and tuple(value.shape) == (), (name, value)
    before = [np.asarray(weight) for weight in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = max(float(np.max(np.abs(np.asarray(w, np.float32) - b))) for w, b in zip(model.trainable_weights, before))
    assert moved > 0


def test_capabilities_are_declared_by_the_protocols_of_the_contract():
    """The plumbing asks `isinstance(model, Capability)`; this is the matrix it sees (and docs/design.md shows).
    AVC and AVSA alias their video encoder as `image_encoder` but score 360° viewpoints: the plumbing checks
    `data_kind` before a frame capability."""
    from keras_avloc.models import contract

    expected = {
        contract.MultiSource: {"avgn"},
        contract.ClassAware: {"csolstage2", "ierstage2"},
        contract.MultiHead: {"denseav"},
        contract.InterferenceFilters: {"ierstage2"},
        contract.FastInference: {"lvs", "ezvsl", "avgn", "fnac", "slavc", "sslalign",
                                 "csol", "csolstage2", "ier", "ierstage2",
                                 "denseav", EXAMPLE},
    }
    models = {method: _model(method, "float32") for method in METHODS}
    for capability, names in expected.items():
        found = {method for method, model in models.items()
                 if isinstance(model, capability) and model.data_kind == "frames"}
        assert found == names, capability.__name__
    assert {m for m in METHODS if issubclass(get_method_class(m), contract.OfficialCheckpoint)} == {
        "lvs", "ezvsl", "fnac", "slavc", "sslalign", "avc", "avsa"}
    assert {m: get_method_class(m).next_stage for m in METHODS if get_method_class(m).next_stage} == {
        "csol": "csolstage2", "ier": "ierstage2"}
