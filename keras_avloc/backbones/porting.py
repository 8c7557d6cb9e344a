"""Porting PyTorch ResNet-18 state dicts (torchvision layout, official LVS nets) onto `ResNet18`.

Keras layer `layer1_0_conv1` takes torch module `layer1.0.conv1` ("_" -> "."). Conv kernels are
transposed from torch's [out, in, kh, kw] to Keras' [kh, kw, in, out]; BatchNorm weight / bias /
running_mean / running_var become gamma / beta / moving_mean / moving_variance.

Keys ignored on purpose (and reported as ignored, never silently):
  * `fc.*` - our model has no classifier;
  * `*.num_batches_tracked` - a training counter with no Keras equivalent;
  * the unused stem convs of the official LVS nets (models/base_models.py there builds `conv1`
    (3 ch), `conv1_a` (1 ch) and `conv1_flow` (6 ch) in every net and uses only one): an audio
    model takes `conv1_a` and ignores `conv1` / `conv1_flow`; an image model takes `conv1` and
    ignores `conv1_a` / `conv1_flow`.
A 1-channel model given only a 3-channel `conv1` (e.g. ImageNet weights for the audio net) gets the
kernel summed over input channels, which equals feeding the spectrogram repeated on 3 channels.

State dicts are read without executing pickled code: `.npz` files with numpy (allow_pickle=False),
`.pth` / `.pt` / `.tar` files with `torch.load(weights_only=True)`.
"""

import os
import zipfile

import numpy as np

from keras_avloc.io.errors import AvlocError
from keras_avloc.io.files import atomic_output

CHECKPOINT_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "net")
DATA_PARALLEL_PREFIX = "module."
IGNORED_SUFFIXES = (".num_batches_tracked",)
IGNORED_MODULES = ("fc",)
STEM_CONV_NAMES = ("conv1", "conv1_a", "conv1_flow")
BN_PARAMS = (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_variance"))


class PortingError(AvlocError, ValueError):
    """A weights file that cannot be read or written as asked; the message names the file and the fix."""


class StateDictMismatchError(PortingError):
    """The state dict does not fit the model; the message lists missing, unexpected and mismatched keys."""


def _to_numpy(value, key):
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):  # a torch tensor; bf16/fp16 tensors go through float32
        tensor = value.detach().cpu()
        if not tensor.dtype.is_floating_point:
            return tensor.numpy()
        return tensor.float().numpy()
    if np.isscalar(value):
        return np.asarray(value)
    raise StateDictMismatchError(
        f"state dict entry {key!r} is a {type(value).__name__}, not an array or tensor; "
        "pass a flat state dict (name -> tensor) or a checkpoint dict holding one under 'model', "
        "'state_dict' or 'model_state_dict'."
    )


def _strip_data_parallel(key):
    while key.startswith(DATA_PARALLEL_PREFIX):
        key = key[len(DATA_PARALLEL_PREFIX) :]
    return key


def _top_level_prefixes(keys):
    return sorted({key.split(".", 1)[0] + "." for key in keys if "." in key})


def select_state_dict(state_dict, prefix="", source="state dict"):
    """Unwraps a checkpoint, strips DataParallel `module.` prefixes and keeps the keys under `prefix`.

    Args:
        state_dict: a mapping name -> tensor/array, or a checkpoint dict holding one under
            "model" / "state_dict" / "model_state_dict" (the official LVS checkpoint uses the latter).
        prefix: sub-module prefix such as "imgnet." or "audnet." ("" keeps everything); a leading
            "module." is ignored.
        source: how to name the input in error messages (e.g. its file path).

    Returns:
        dict torch-name -> numpy array, with `prefix` removed from the names.
    """
    for wrapper in CHECKPOINT_WRAPPER_KEYS:
        inner = state_dict.get(wrapper) if hasattr(state_dict, "get") else None
        if isinstance(inner, dict) and inner:
            state_dict = inner
            break
    if not hasattr(state_dict, "items"):
        raise StateDictMismatchError(f"{source}: expected a dict of tensors, got {type(state_dict).__name__}.")
    prefix = _strip_data_parallel(prefix or "")
    if prefix and not prefix.endswith("."):
        prefix += "."
    selected = {}
    for key, value in state_dict.items():
        name = _strip_data_parallel(str(key))
        if prefix:
            if not name.startswith(prefix):
                continue
            name = name[len(prefix) :]
        selected[name] = _to_numpy(value, key)
    if not selected:
        available = _top_level_prefixes(_strip_data_parallel(str(k)) for k in state_dict.keys())
        raise StateDictMismatchError(
            f"{source}: no keys start with prefix {prefix!r}. Top-level prefixes present: "
            f"{', '.join(available) or '(none)'}; pass one of them as --prefix / prefix="
            + (", or no prefix: this is a bare ResNet state dict." if "layer1." in available else ".")
        )
    return selected


def read_state_dict(path, prefix=""):
    """Reads a PyTorch state dict from `.npz` (no torch needed) or `.pth` / `.pt` / `.pth.tar` / `.bin`.

    Pickled files are opened with `torch.load(path, map_location="cpu", weights_only=True)`, which
    refuses to run pickled code. `.npz` files hold torch names as keys and arrays in torch layout.

    Args:
        path: the file.
        prefix: sub-module prefix to select (see `select_state_dict`).

    Returns:
        dict torch-name -> numpy array.

    Example:
    >>> audio_weights = read_state_dict("lvs_vggss.pth.tar", prefix="audnet.")
    """
    return select_state_dict(read_checkpoint(path), prefix, source=os.fspath(path))


def read_checkpoint(path):
    """The whole content of a checkpoint file, unselected, read as `read_state_dict` reads it (`.npz` with numpy,
    pickles with `torch.load(weights_only=True)`).

    Args:
        path: the file.

    Returns:
        what the file holds, e.g. {"epoch", "model", "optimizer", ...} or a flat state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file; pass the path of a .pth/.pth.tar/.npz state dict.")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                raw = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise PortingError(f"{path}: not a readable .npz state dict ({type(err).__name__}: {err}); re-save it "
                               "with np.savez(path, **{name: array}).") from None
    else:
        try:
            import torch
        except ImportError as err:
            raise PortingError(
                f"{path}: reading a PyTorch pickle needs torch (pip install -e '.[torch]'); or convert it "
                "once elsewhere to .npz: np.savez(out, **{k: v.numpy() for k, v in state_dict.items()})."
            ) from err
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises UnpicklingError / RuntimeError with long messages
            raise StateDictMismatchError(
                f"{path}: torch.load(weights_only=True) failed ({type(err).__name__}: {str(err).splitlines()[0]}). "
                "The file must hold tensors only (a state dict, or one under 'model' / 'model_state_dict'); "
                "re-save it with torch.save(model.state_dict(), path)."
            ) from err
    return raw


def _keras_layers_by_kind(model):
    import keras

    convs, norms = {}, {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            convs[layer.name] = layer
        elif isinstance(layer, keras.layers.BatchNormalization):
            norms[layer.name] = layer
    if "conv1" not in convs or "bn1" not in norms:
        raise ValueError(
            f"load_torch_state_dict: model {model.name!r} has no 'conv1'/'bn1' layers; pass the "
            "ResNet18 backbone itself (e.g. model.image_encoder), not a model that wraps it."
        )
    return convs, norms


def _torch_module_name(keras_name):
    return keras_name.replace("_", ".")


def _stem_source(state_dict, input_channels, ignored):
    """Chooses the torch stem conv for conv1 and records the unused stem convs as ignored."""
    present = [name for name in STEM_CONV_NAMES if f"{name}.weight" in state_dict]
    if input_channels == 1 and "conv1_a" in present:
        chosen = "conv1_a"
    elif "conv1" in present:
        chosen = "conv1"
    elif present:
        chosen = present[0]
    else:
        return "conv1"  # reported as missing below
    for name in present:
        if name != chosen:
            ignored[f"{name}.weight"] = f"unused stem conv of the official LVS nets ({chosen} is used)"
    return chosen


def plan_state_dict_assignment(model, state_dict):
    """Matches a (prefix-stripped) torch state dict to the model's layers without changing the model.

    Returns:
        (assignments, ignored, notes): assignments maps keras layer name -> list of numpy arrays in
        the layer's `get_weights()` order; ignored maps torch key -> reason; notes lists conversions.

    Raises:
        StateDictMismatchError listing missing, unexpected and shape-mismatched keys.
    """
    convs, norms = _keras_layers_by_kind(model)
    input_channels = convs["conv1"].kernel.shape[2]
    ignored = {}
    for key in state_dict:
        if key.endswith(IGNORED_SUFFIXES):
            ignored[key] = "BatchNorm step counter, not used at inference"
        elif key.split(".", 1)[0] in IGNORED_MODULES:
            ignored[key] = "classifier head; the backbone has no fc"
    stem = _stem_source(state_dict, input_channels, ignored)

    used, missing, mismatched, notes = set(), [], [], []
    assignments = {}
    for name, layer in convs.items():
        module = stem if name == "conv1" else _torch_module_name(name)
        key = f"{module}.weight"
        if key not in state_dict:
            missing.append(key)
            continue
        used.add(key)
        weight = state_dict[key]
        expected = tuple(layer.kernel.shape)  # kh, kw, in, out
        if name == "conv1" and weight.ndim == 4 and weight.shape[1] == 3 and input_channels == 1:
            weight = weight.sum(axis=1, keepdims=True)
            notes.append(f"{key}: summed over its 3 input channels for the 1-channel model")
        kernel = np.transpose(weight, (2, 3, 1, 0)) if weight.ndim == 4 else weight
        if tuple(kernel.shape) != expected:
            torch_expected = (expected[3], expected[2], expected[0], expected[1])
            mismatched.append(f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {torch_expected}")
            continue
        assignments[name] = [kernel.astype("float32")]
        if layer.use_bias:  # not the case in ResNet18, kept for completeness
            bias_key = f"{module}.bias"
            if bias_key in state_dict:
                used.add(bias_key)
                assignments[name].append(state_dict[bias_key].astype("float32"))
            else:
                missing.append(bias_key)
    for name, layer in norms.items():
        module = _torch_module_name(name)
        values = []
        for torch_param, _ in BN_PARAMS:
            key = f"{module}.{torch_param}"
            if key not in state_dict:
                missing.append(key)
                continue
            used.add(key)
            value = state_dict[key]
            if tuple(value.shape) != (layer.gamma.shape[0],):
                mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model ({layer.gamma.shape[0]},)")
                continue
            values.append(value.astype("float32"))
        if len(values) == len(BN_PARAMS):
            assignments[name] = values
    unexpected = sorted(set(state_dict) - used - set(ignored))

    if missing or unexpected or mismatched:
        lines = [f"state dict does not fit {model.name!r} (input_channels={input_channels}):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
        prefixes = _top_level_prefixes(unexpected)
        if missing and unexpected and not (set(prefixes) & {"layer1.", "layer2.", "bn1."}):
            lines.append(f"  hint: the keys look nested under {', '.join(prefixes)}; pass prefix= / --prefix.")
        elif mismatched:
            lines.append("  hint: check width / input_channels (--audio) against the checkpoint.")
        raise StateDictMismatchError("\n".join(lines))
    return assignments, ignored, notes


def load_torch_state_dict(model, state_dict, prefix=""):
    """Loads a torchvision-layout ResNet-18 state dict into a `ResNet18` model (all or nothing).

    Args:
        model: a `keras_avloc.backbones.ResNet18` (any width / stride / input_channels).
        state_dict: mapping torch-name -> torch tensor or numpy array (torch layout), or a checkpoint
            dict with the state dict under "model" / "state_dict" / "model_state_dict". `module.`
            prefixes are stripped.
        prefix: sub-module to take, e.g. "imgnet." or "audnet." for the official LVS checkpoint.

    Returns:
        dict with "loaded" (number of torch tensors copied), "ignored" ({torch key: reason}) and
        "notes" (conversions such as the conv1 channel sum).

    Raises:
        StateDictMismatchError listing missing, unexpected and shape-mismatched keys; the model is
        left unchanged in that case.

    Example:
    >>> audio_encoder = ResNet18(input_channels=1, layer4_stride=1)
    >>> load_torch_state_dict(audio_encoder, torch.load(path, weights_only=True), prefix="audnet.")
    """
    selected = select_state_dict(state_dict, prefix, source=f"state dict for {model.name!r}")
    assignments, ignored, notes = plan_state_dict_assignment(model, selected)
    for name, values in assignments.items():
        model.get_layer(name).set_weights(values)
    loaded = sum(len(values) for values in assignments.values())
    return {"loaded": loaded, "ignored": ignored, "notes": notes}


def _check_output_name(out_path):
    if not os.fspath(out_path).endswith(".weights.h5"):
        raise PortingError(f"{out_path}: the output name must end in .weights.h5 (Keras weights file); for a "
                           "complete model (*.keras) add --method.")


def _atomic_save_weights(model, out_path):
    out_path = os.fspath(out_path)
    _check_output_name(out_path)
    with atomic_output(out_path, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)


def infer_width(state_dict):
    """Base width of a torchvision-layout ResNet-18 state dict (64 for the standard net)."""
    for key in ("layer1.0.conv1.weight", "bn1.weight", "conv1.weight", "conv1_a.weight"):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    raise StateDictMismatchError(
        "cannot infer the ResNet-18 width: no layer1.0.conv1 / bn1 / conv1 weights; "
        f"keys start with {', '.join(_top_level_prefixes(state_dict)) or '(none)'} - pass --prefix."
    )


def torch_projection_weights(layer, state_dict, name, source="state dict"):
    """The [kernel, bias] of torch's 1 x 1 `Conv2d` or `Linear` `name` in the layout of the Keras `layer` (a 1 x 1
    `Conv2D` or a `Dense`), checked against its shapes.

    Args:
        layer: the Keras layer the weights are for.
        state_dict: flat mapping torch-name -> numpy array (`select_state_dict`).
        name: the torch module, e.g. "img_proj" or "momentum_aud_proj2".
        source: how to name the input in error messages.

    Raises:
        StateDictMismatchError when a tensor is missing or its shape does not fit.
    """
    if f"{name}.weight" not in state_dict or f"{name}.bias" not in state_dict:
        present = ", ".join(_top_level_prefixes(state_dict)) or "(none)"
        raise StateDictMismatchError(f"{source}: {name}.weight / {name}.bias missing (top-level keys: {present}).")
    weight = np.asarray(state_dict[f"{name}.weight"])
    kernel = np.transpose(weight, (2, 3, 1, 0)) if weight.ndim == 4 else np.transpose(weight)
    values = [kernel, np.asarray(state_dict[f"{name}.bias"])]
    shapes = [tuple(w.shape) for w in layer.get_weights()]
    if shapes != [tuple(v.shape) for v in values]:
        raise StateDictMismatchError(f"{source}: {name} holds {[tuple(v.shape) for v in values]}, the model's "
                                     f"{layer.name} {shapes}; pass embed_dim / width to match.")
    return values


def unused_keys(flat, known_prefixes, reason="not part of this model"):
    """{key: reason} for the keys of a flat state dict outside `known_prefixes`: what an official loader reports
    instead of dropping it (the official loaders use `strict=False`)."""
    return {key: reason for key in flat if not key.startswith(tuple(known_prefixes))}


def official_model(model_class, path, projection=None, state=None, **kwargs):
    """A `model_class` built to fit an official checkpoint (ResNet-18 width from `imgnet.*`, projection size from
    `<projection>.weight` when given), with its `OFFICIAL_EVAL_SETTINGS`, loaded with its `load_official_checkpoint`
    (the file is read once).

    Args:
        model_class: a method class with `OFFICIAL_EVAL_SETTINGS` and `load_official_checkpoint(path, state=...)`.
        path: the checkpoint file (named in messages).
        projection: the torch module whose output size is the model's `embed_dim` (e.g. "img_proj"), or None.
        state: the file's state dict when the caller has read it already.
        **kwargs: other constructor arguments (win over what the file says).

    Returns:
        (model, report).
    """
    state = read_state_dict(path) if state is None else state
    width = infer_width(select_state_dict(state, "imgnet.", source=str(path)))
    if width != 64:
        kwargs.setdefault("backbone_kwargs", {"width": width})
    if projection:
        weight = select_state_dict(state, "", source=str(path)).get(f"{projection}.weight")
        if weight is not None:
            kwargs.setdefault("embed_dim", int(weight.shape[0]))
    kwargs.setdefault("eval_settings", dict(model_class.OFFICIAL_EVAL_SETTINGS))
    model = model_class(**kwargs)
    report = model.load_official_checkpoint(path, state=state)
    model.build()
    return model, report


def verify_against_torch(model, state_dict, audio, layer4_stride, seed=0):
    """Runs torch (reference ResNet-18 on the original weights) and Keras on one random input.

    Returns:
        (max_abs_difference, max_abs_torch_output).
    """
    from keras_avloc.backbones import torch_reference

    torch_model, torch_input_channels = torch_reference.model_for_state_dict(
        state_dict, audio=audio, layer4_stride=layer4_stride
    )
    height, width = (257, 200) if audio else (224, 224)
    channels = model.input_shape[-1]
    x = np.random.default_rng(seed).standard_normal((2, height, width, channels)).astype("float32")
    torch_x = np.repeat(x, torch_input_channels, axis=-1) if channels != torch_input_channels else x
    reference = torch_reference.run_nhwc(torch_model, torch_x)
    ours = np.asarray(model(x, training=False))
    return float(np.max(np.abs(ours - reference))), float(np.max(np.abs(reference)))


def port_resnet18(in_path, out_path, prefix="", audio=False, layer4_stride=2, verify=False, log=print):
    """Converts a PyTorch ResNet-18 state dict file to a Keras `.weights.h5` for `ResNet18`.

    Args:
        in_path: `.pth` / `.pth.tar` / `.pt` (needs torch) or `.npz` state dict.
        out_path: output file ending in `.weights.h5` (written atomically).
        prefix: sub-module prefix, e.g. "imgnet." / "audnet." for the official LVS checkpoint.
        audio: build the 1-channel (spectrogram) variant.
        layer4_stride: 1 (official LVS image and audio nets) or 2 (torchvision, EZ-VSL).
        verify: also run torch and Keras on one random input and report the max-abs difference.
        log: callable for progress lines.

    Returns:
        dict with "width", "loaded", "ignored", "notes" and, when verify is set, "max_abs_diff" and
        "max_abs_output".

    Example:
    >>> port_resnet18("lvs_vggss.pth.tar", "lvs_audio.weights.h5", prefix="audnet.", audio=True, layer4_stride=1)
    """
    from keras_avloc.backbones.resnet import ResNet18

    _check_output_name(out_path)
    state_dict = read_state_dict(in_path, prefix)
    width = infer_width(state_dict)
    model = ResNet18(input_channels=1 if audio else 3, layer4_stride=layer4_stride, width=width)
    report = load_torch_state_dict(model, state_dict)
    report["width"] = width
    log(f"{in_path}: loaded {report['loaded']} tensors into ResNet18(width={width}, "
        f"input_channels={1 if audio else 3}, layer4_stride={layer4_stride})")
    counters = [key for key in report["ignored"] if key.endswith(IGNORED_SUFFIXES)]
    if counters:
        log(f"  ignored {len(counters)} BatchNorm num_batches_tracked counters (not used at inference)")
    for key, reason in sorted(report["ignored"].items()):
        if key not in counters:
            log(f"  ignored {key}: {reason}")
    for note in report["notes"]:
        log(f"  note: {note}")
    if verify:
        diff, scale = verify_against_torch(model, state_dict, audio, layer4_stride)
        report["max_abs_diff"], report["max_abs_output"] = diff, scale
        log(f"verify: max |keras - torch| = {diff:.3g} (max |torch output| = {scale:.3g})")
    _atomic_save_weights(model, out_path)
    log(f"wrote {out_path}")
    return report


def add_port_arguments(parser):
    """Adds the shared arguments of `tools/port_resnet18.py` and `avloc port-weights`."""
    parser.add_argument("input", help="PyTorch state dict: .pth / .pth.tar / .pt (needs torch) or .npz")
    parser.add_argument("output", help="Keras weights file to write, ending in .weights.h5")
    parser.add_argument("--prefix", default="", help="sub-module prefix, e.g. imgnet. or audnet. (official LVS)")
    parser.add_argument("--audio", action="store_true", help="1-channel spectrogram variant (conv1_a in LVS)")
    parser.add_argument("--layer4-stride", type=int, choices=(1, 2), default=2,
                        help="1 for the official LVS nets (14x14 at 224), 2 for torchvision / EZ-VSL (default)")
    parser.add_argument("--verify", action="store_true",
                        help="run torch and Keras on one random input and print the max-abs difference (needs torch)")
    return parser


PORT_EXAMPLES = """Examples:
  # torchvision ImageNet weights -> image encoder (layer4 stride 2, 7x7 at 224 px)
  {prog} resnet18-f37072fd.pth resnet18_imagenet.weights.h5 --verify
  # the official LVS checkpoint: image and audio nets, layer4 stride 1
  {prog} lvs_vggss.pth.tar lvs_image.weights.h5 --prefix imgnet. --layer4-stride 1
  {prog} lvs_vggss.pth.tar lvs_audio.weights.h5 --prefix audnet. --audio --layer4-stride 1
  # torch-free: a state dict saved as .npz (torch names, torch layout)
  {prog} resnet18.npz resnet18.weights.h5
Load the result with ResNet18(...same options...).load_weights(path).
"""
