"""CPU performance helpers: threading and oneDNN settings, and a fast inference path (batch norms
folded into convolutions, one compiled graph per input shape).

Example:
>>> from keras_avloc import perf
>>> perf.configure_onednn(True)          # before TensorFlow is imported
>>> perf.configure_threads(intra=2, inter=1)  # before the first TensorFlow op
>>> localizer = perf.fast_inference_model(model)  # doctest: +SKIP
>>> heatmaps = localizer.localize(images, spectrograms)  # doctest: +SKIP
"""

import os
import sys
import warnings


CPU_FLAGS = ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
    """Returns {flag: bool} for the CPU features that matter for TensorFlow speed."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return {flag: flag in present for flag in CPU_FLAGS}
    except OSError:
        pass
    return {flag: None for flag in CPU_FLAGS}


def bf16_usable():
    """True when this CPU has native bf16 (AMX or AVX512-BF16) so `--mixed-precision bf16` pays off."""
    flags = cpu_flags()
    return bool(flags.get("amx_bf16") or flags.get("avx512_bf16"))


def resolve_precision(value="auto"):
    """The mixed precision to train with: "auto" gives "bf16" where bfloat16 is computed natively (a CPU with AMX
    or AVX512-BF16, or a GPU), else None (float32); "bf16" / None / "fp32" (-> None) are returned as asked."""
    if value in (None, "fp32", "float32"):
        return None
    if value != "auto":
        return value
    if bf16_usable():
        return "bf16"
    import tensorflow as tf

    return "bf16" if tf.config.list_physical_devices("GPU") else None


def configure_onednn(enabled=True):
    """Turns TensorFlow's oneDNN graph rewrites (fused conv+bias+relu, blocked layouts) on or off.

    Sets `TF_ENABLE_ONEDNN_OPTS`, which TensorFlow reads once when it is imported (on x86 Linux the
    default is on). Call it before `import tensorflow`.

    Args:
        enabled: True to enable oneDNN optimisations, False to disable them.

    Returns:
        True if the setting takes effect, False if TensorFlow was already imported with another value
        (a warning says so).
    """
    value = "1" if enabled else "0"
    previous = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = value
    if "tensorflow" in sys.modules and previous != value:
        warnings.warn(
            "keras_avloc.perf.configure_onednn: TensorFlow is already imported, so TF_ENABLE_ONEDNN_OPTS="
            f"{value} only applies to new processes; call it before importing tensorflow or keras_avloc models.",
            stacklevel=2,
        )
        return False
    return True


def onednn_enabled():
    """Whether TensorFlow's oneDNN optimisations are active in this process (imports TensorFlow).

    With `TF_ENABLE_ONEDNN_OPTS` unset TensorFlow decides from the CPU: on by default only on CPUs
    with AVX-512 VNNI / AMX-class instructions, off on e.g. AVX2-only CPUs.

    Returns:
        True or False, or None when this TensorFlow build does not say.
    """
    try:
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def configure_threads(intra=None, inter=None):
    """Sets TensorFlow's intra-op (threads per op) and inter-op (ops run concurrently) thread pools.

    On a small CPU one inter-op thread with intra = number of cores avoids oversubscription: the
    convolutions of a ResNet already use every core. Must run before TensorFlow executes its first op.

    Args:
        intra: threads inside one op (None = leave TensorFlow's default, the number of cores).
        inter: ops run in parallel (None = leave the default).

    Returns:
        dict {"intra": int, "inter": int} as TensorFlow reports them afterwards (0 = TF default).

    Raises:
        RuntimeError: TensorFlow already started its runtime with different settings.
    """
    import tensorflow as tf

    threading = tf.config.threading
    try:
        if intra is not None and threading.get_intra_op_parallelism_threads() != int(intra):
            threading.set_intra_op_parallelism_threads(int(intra))
        if inter is not None and threading.get_inter_op_parallelism_threads() != int(inter):
            threading.set_inter_op_parallelism_threads(int(inter))
    except RuntimeError as error:
        raise RuntimeError(
            "keras_avloc.perf.configure_threads must run before TensorFlow executes any op "
            f"(TensorFlow said: {error}); call it at the start of the script."
        ) from None
    return {
        "intra": threading.get_intra_op_parallelism_threads(),
        "inter": threading.get_inter_op_parallelism_threads(),
    }


def fast_inference_model(model, fold=True, jit_compile=False):
    """A fast, inference-only twin of an audio-visual localisation model.

    The image and audio encoders are copied with every conv+batch-norm pair folded into one conv
    (`keras_avloc.backbones.fold.fold_batch_norms`), and the whole localisation (both encoders, cosine
    map, bilinear upsampling) runs as one `tf.function` graph, traced once per input shape. Later
    changes to `model` (training, loading weights) do not reach the twin: build it again.

    Args:
        model: a `keras_avloc.models.AVLocModel` (LVS, EZ-VSL, ...) with functional
            `image_encoder` / `audio_encoder`.
        fold: fold batch norms into the convolutions (True) or only compile the graph (False).
        jit_compile: compile with XLA (usually slower on CPU for these nets).

    Returns:
        A `FastLocalizer`; `localizer.localize(images, audio)` gives the same heatmaps as
        `model.localize(images, audio)` (within ~1e-5).

    Example:
    >>> localizer = fast_inference_model(model)  # doctest: +SKIP
    >>> heatmaps = localizer.localize(x["image"], x["audio"])  # numpy [B, H, W]  # doctest: +SKIP
    """
    return FastLocalizer(model, fold=fold, jit_compile=jit_compile)


class FastLocalizer:
    """Folded encoders plus a compiled localisation graph; built by `fast_inference_model`.

    Args:
        model: the source `AVLocModel`.
        fold: fold batch norms (see `fast_inference_model`).
        jit_compile: XLA compilation.

    Attributes:
        image_encoder, audio_encoder: the (folded) functional encoders.
    """

    def __init__(self, model, fold=True, jit_compile=False):
        import tensorflow as tf

        from keras_avloc.backbones.fold import fold_batch_norms

        from keras_avloc.models.contract import FastInference

        if getattr(model, "data_kind", "frames") != "frames":
            raise TypeError(f"fast_inference_model serves frame methods; {type(model).__name__} scores 360° clips.")
        if not isinstance(model, FastInference):
            missing = [name for name in ("image_encoder", "audio_encoder", "localization_encoders", "similarity_map")
                       if not hasattr(model, name)]
            raise TypeError(
                f"fast_inference_model needs a keras_avloc model with image_encoder, audio_encoder, "
                f"localization_encoders and similarity_map; {type(model).__name__} has no {missing[0]}."
            )
        self.source_model = model
        image_encoder, audio_encoder = model.localization_encoders()  # SLAVC: maybe its momentum copies
        self.image_encoder = fold_batch_norms(image_encoder) if fold else image_encoder
        self.audio_encoder = fold_batch_norms(audio_encoder) if fold else audio_encoder
        self.align_corners = bool(getattr(model, "upsample_align_corners", False))
        # One trace per input shape: the upsampling size must be static.
        self._graph = tf.function(self._heatmaps, jit_compile=jit_compile)

    def _heatmaps(self, images, audio):
        from keras_avloc.models.base import upsample_maps

        image_maps = self.image_encoder(images, training=False)
        audio_vecs = self.audio_encoder(audio, training=False)
        maps = self.source_model.similarity_map(image_maps, audio_vecs)
        return upsample_maps(maps, (images.shape[1], images.shape[2]), align_corners=self.align_corners)

    def __call__(self, images, audio):
        """Heatmaps as a float32 tensor [B, H, W] (raw cosine values, upsampled to the image size)."""
        import tensorflow as tf

        dtype = self.image_encoder.inputs[0].dtype or "float32"
        return self._graph(tf.convert_to_tensor(images, dtype), tf.convert_to_tensor(audio, dtype))

    def localize(self, images, audio):
        """Same contract as `AVLocModel.localize`: numpy float32 heatmaps [B, H, W]."""
        import keras

        return keras.ops.convert_to_numpy(self(images, audio))
