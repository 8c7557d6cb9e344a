"""Official AVC / AVSA checkpoints (pedro-morgado/AVSpatialAlignment) as `AVC` / `AVSA` models: the released AVSA model
(`Cur-Loc4-TransfD2`) and any checkpoint the official code writes (AVC from `InstDisc.yaml`; no AVC model is released).

The official `main-video-ssl.py` saves {"epoch", "model", "optimizer", "train_criterion"}:

* "model": the `AV_Wrapper` (`models/av_wrapper.py`) under DataParallel, `module.video_model.*` (R(2+1)D-18 of
  `models/video.py`, blocks of `models/network_blocks.py BasicR2P1DBlock`) and `module.audio_model.*` (`models/audio.py
  Conv2D`); both configs set `proj_dim: null`, so it holds no heads;
* "train_criterion": the `MultiTask` criterion, `losses.0.*`: AVC's (`configs/main/avsa/InstDisc.yaml`,
  `criterions/contrastive.py`) two 128-d heads `video_projection` / `audio_projection`; AVSA's
  (`configs/main/avsa/Cur-Loc4-TransfD2.yaml`, `criterions/video2audio_seq.py`, `criterions/transformers.py`) the
  `v2a_transformer` / `a2v_transformer` (single-head `SimplifiedAttention`) and the heads `video_head`, `audio_head`,
  `video_pred_head`, `audio_pred_head`.

The Keras layers carry the official attribute names (`conv3x.0.spt_conv1` -> `conv3x_0_spt_conv1`); kernels are
transposed (Conv3d [out, in, t, h, w] -> [t, h, w, in, out], Conv2d [out, in, kh, kw] -> [kh, kw, in, out], Linear
[out, in] -> [in, out]); BatchNorm weight / bias / running_mean / running_var -> gamma / beta / moving_mean /
moving_variance (`num_batches_tracked` is unused). The audio input is time x mel in both. The per-mel statistics the
official loader normalises with (`datasets/assets/MelSpectDB-24khz-257fft-128mels-norm-stats.npz`) are read from a
`*norm-stats*.npz` beside the checkpoint, or passed as `mel_stats`. The transformers must be the released
configuration's single-head ones (`multihead: false`): a multi-head checkpoint has the same keys and shapes, so no
check on the file can tell them apart.
"""

import glob
import inspect
import os
import re

import numpy as np

from keras_avloc.backbones.porting import StateDictMismatchError, read_checkpoint, select_state_dict

STATS_PATTERN = "*norm-stats*.npz"
OFFICIAL_STATS = "MelSpectDB-24khz-257fft-128mels-norm-stats.npz"
"""The statistics the official loader normalises the 128-mel log-mels with (`datasets/assets/` of the repository)."""
BN_NAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
VIDEO_BLOCK_PARTS = "spt_conv1|spt_bn1|tmp_conv1|tmp_bn1|spt_conv2|spt_bn2|tmp_conv2|out_bn|res_conv"


def official_state(path, state=None):
    """The checkpoint's "model" and "train_criterion" as one flat state dict.

    Args:
        path: the checkpoint file (read unless `state` is given; named in messages).
        state: its content when already read (a checkpoint dict, or a flat state dict such as an `.npz`'s).

    Returns:
        dict torch-name -> numpy array, `module.` prefixes stripped.
    """
    raw = read_checkpoint(path) if state is None else state
    parts = [raw[key] for key in ("model", "train_criterion")
             if isinstance(raw, dict) and isinstance(raw.get(key), dict)]
    merged = {}
    for part in parts or [raw]:
        merged.update(select_state_dict(part, "", source=str(path)))
    return merged


def _video_layer(key):
    if key in ("conv1.0", "conv1.1"):
        return "stem_conv" if key.endswith("0") else "stem_bn"
    match = re.fullmatch(rf"conv([2-5])x\.(\d+)\.({VIDEO_BLOCK_PARTS})", key)
    return None if match is None else f"conv{match[1]}x_{match[2]}_{match[3]}"


def _audio_layer(key):
    if key in ("conv1.0", "conv1.1"):
        return "conv1" if key.endswith("0") else "conv1_bn"
    match = re.fullmatch(r"block(\d)\.(conv|bn)([12])", key)
    return None if match is None else f"block{match[1]}_conv{match[3]}" + ("_bn" if match[2] == "bn" else "")


def _assign(variable, value, key, path):
    value = np.asarray(value, np.float32)
    if tuple(variable.shape) != value.shape:
        raise StateDictMismatchError(f"{path}: {key} holds {value.shape}, the model's {variable.path} "
                                     f"{tuple(variable.shape)}; build the model with the checkpoint's sizes.")
    variable.assign(value)


def _load_encoder(encoder, flat, prefix, layer_name, path, used):
    for key, value in flat.items():
        if not key.startswith(prefix) or key.endswith("num_batches_tracked"):
            continue
        module, parameter = key[len(prefix):].rsplit(".", 1)
        name = layer_name(module)
        if name is None:
            continue  # reported as unused
        layer = encoder.get_layer(name)
        if parameter in BN_NAMES and not hasattr(layer, "kernel"):
            _assign(getattr(layer, BN_NAMES[parameter]), value, key, path)
        elif value.ndim == 5:
            _assign(layer.kernel, np.transpose(value, (2, 3, 4, 1, 0)), key, path)
        elif value.ndim == 4:
            _assign(layer.kernel, np.transpose(value, (2, 3, 1, 0)), key, path)
        else:
            continue
        used.add(key)


def _load_pairs(flat, pairs, path, used):
    """pairs: (torch module name, Keras layer, kind) with kind "linear" or "norm"."""
    for module, layer, kind in pairs:
        names = ("weight", "bias")
        missing = [f"{module}.{n}" for n in names if f"{module}.{n}" not in flat]
        if missing:
            raise StateDictMismatchError(f"{path}: {', '.join(missing)} missing; is this the other method's "
                                         "checkpoint (AVC's heads or AVSA's transformers)?")
        weight, bias = flat[f"{module}.weight"], flat[f"{module}.bias"]
        if kind == "linear":
            _assign(layer.kernel, np.transpose(weight), f"{module}.weight", path)
            _assign(layer.bias, bias, f"{module}.bias", path)
        else:
            _assign(layer.gamma, weight, f"{module}.weight", path)
            _assign(layer.beta, bias, f"{module}.bias", path)
        used.update({f"{module}.weight", f"{module}.bias"})


def _criterion_pairs(model):
    if not hasattr(model, "v2a_transformer"):  # AVC
        return [("losses.0.video_projection.projection.0", model.video_head, "linear"),
                ("losses.0.audio_projection.projection.0", model.audio_head, "linear")]
    pairs = []
    for direction in ("v2a", "a2v"):
        network = getattr(model, f"{direction}_transformer")
        for layer in range(model.depth):
            prefix = f"losses.0.{direction}_transformer.transformer.{layer}"
            attention = network.get_layer(f"layer{layer}_attention")
            pairs += [(f"{prefix}.attention.{part}", getattr(attention, part), "linear")
                      for part in ("query", "key", "value", "dense")]
            pairs += [(f"{prefix}.attention_norm", network.get_layer(f"layer{layer}_attention_norm"), "norm"),
                      (f"{prefix}.dense.0", network.get_layer(f"layer{layer}_dense1"), "linear"),
                      (f"{prefix}.dense.2", network.get_layer(f"layer{layer}_dense2"), "linear"),
                      (f"{prefix}.dense_norm", network.get_layer(f"layer{layer}_dense_norm"), "norm")]
    return pairs + [(f"losses.0.{head}.projection.0", getattr(model, head), "linear")
                    for head in ("video_head", "audio_head", "video_pred_head", "audio_pred_head")]


def load_official(model, path, state=None):
    """Loads an official checkpoint into an `AVC` / `AVSA` built with `video_block="avsa"` (all or nothing per tensor;
    sizes are checked).

    Args:
        model: the `AVC` / `AVSA` model.
        path: the checkpoint file (named in messages).
        state: its content when already read.

    Returns:
        dict {"video", "audio", "criterion"} of reports with "loaded" and "ignored" ({key: reason}).
    """
    if model.video_block != "avsa":
        raise StateDictMismatchError(f"{path}: the official checkpoints hold the official R(2+1)D blocks; build the "
                                     f"model with video_block='avsa' (it has {model.video_block!r}).")
    flat = official_state(path, state)
    for prefix in ("video_model.", "audio_model."):
        if not any(key.startswith(prefix) for key in flat):
            raise StateDictMismatchError(f"{path} is not an AVSpatialAlignment checkpoint: no keys start with "
                                         f"{prefix} (expected the official checkpoint.pth.tar layout).")
    report = {}
    for part, encoder, layer_name in (("video", model.video_encoder, _video_layer),
                                      ("audio", model.audio_encoder, _audio_layer)):
        used = set()
        _load_encoder(encoder, flat, f"{part}_model.", layer_name, path, used)
        expected = sum(len(layer.weights) for layer in encoder.layers)
        if len(used) != expected:
            raise StateDictMismatchError(f"{path}: {len(used)} of the {part} network's {expected} tensors were found; "
                                         "build the model with the checkpoint's width and depth.")
        report[part] = {"loaded": len(used), "ignored": {}}
    used = set()
    _load_pairs(flat, _criterion_pairs(model), path, used)
    report["criterion"] = {"loaded": len(used), "ignored": {}}
    accounted = {key for key in flat if key.startswith(("video_model.", "audio_model."))
                 and (key.endswith("num_batches_tracked") or _known(key))} | used
    report["criterion"]["ignored"] = {key: "not part of this model" for key in flat if key not in accounted}
    return report


def _known(key):
    module = key.split(".", 1)[1].rsplit(".", 1)[0]
    return (_video_layer(module) if key.startswith("video_model.") else _audio_layer(module)) is not None


def find_mel_stats(path):
    """The official per-mel statistics beside a checkpoint.

    Args:
        path: the checkpoint file.

    Returns:
        ({"mean", "std"}, file name) from `OFFICIAL_STATS` in its folder, else from the one `*norm-stats*.npz` there;
        (None, None) when there is none.

    Raises:
        StateDictMismatchError: several candidates and not the official one, or a file without "mean" / "std".
    """
    folder = os.path.dirname(os.path.abspath(path))
    found = sorted(glob.glob(os.path.join(folder, STATS_PATTERN)))
    official = os.path.join(folder, OFFICIAL_STATS)
    if official in found:
        found = [official]
    if len(found) > 1:
        raise StateDictMismatchError(f"{folder}: several statistics files ({', '.join(map(os.path.basename, found))}) "
                                     f"and not {OFFICIAL_STATS}; keep the one the model was trained with, or pass "
                                     "mel_stats.")
    if not found:
        return None, None
    with np.load(found[0], allow_pickle=False) as archive:
        if "mean" not in archive.files or "std" not in archive.files:
            raise StateDictMismatchError(f"{found[0]}: expected arrays 'mean' and 'std' (the official "
                                         "MelSpectDB-...-norm-stats.npz).")
        return {"mean": archive["mean"].tolist(), "std": archive["std"].tolist()}, os.path.basename(found[0])


def official_sphere_model(model_class, path, mel_stats=None, **kwargs):
    """A `model_class` (AVC or AVSA) with an official checkpoint's weights and the official per-mel statistics.

    Args:
        model_class: `AVC` or `AVSA`.
        path: the official `checkpoint.pth.tar` (needs torch) or an `.npz` of its merged state dicts.
        mel_stats: {"mean", "std"}; None reads the `*norm-stats*.npz` beside the checkpoint when there is one.
        **kwargs: other constructor arguments.

    Returns:
        (model, report) with `report` as in `load_official`, plus "mel_stats" naming their source.
    """
    state = official_state(path)
    source = "given"
    if mel_stats is None:
        mel_stats, name = find_mel_stats(path)
        source = f"from {name}, beside the checkpoint" if mel_stats else None
    if "video_model.conv1.0.weight" in state:
        kwargs.setdefault("width", int(state["video_model.conv1.0.weight"].shape[0]))
    for head in ("losses.0.video_projection.projection.0.weight", "losses.0.video_head.projection.0.weight"):
        if head in state:
            kwargs.setdefault("embed_dim", int(state[head].shape[0]))
    layers = {int(key.split(".")[4]) for key in state if key.startswith("losses.0.v2a_transformer.transformer.")}
    if layers and "depth" in inspect.signature(model_class.__init__).parameters:
        kwargs.setdefault("depth", 1 + max(layers))
    model = model_class(mel_stats=mel_stats, video_block="avsa", **kwargs)
    report = load_official(model, path, state=state)
    model.build()
    report["mel_stats"] = {"loaded": 0 if mel_stats is None else 2, "ignored": {}, "note": (
        f"per-mel statistics {source}" if mel_stats else
        f"no {STATS_PATTERN} beside {path}: put the official {OFFICIAL_STATS} there (datasets/assets/ of the "
        "official repository) and port again; without it the model uses mean 0 and std 1")}
    return model, report
