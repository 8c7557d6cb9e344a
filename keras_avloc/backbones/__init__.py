"""Backbones: ResNet-18 (torchvision layout, channels-last) and PyTorch weight porting.

Public API:
    ResNet18(input_channels=3, layer4_stride=2, input_shape=None, return_intermediate=False,
             name="resnet18", width=64) -> keras.Model
    load_torch_state_dict(model, state_dict, prefix="") -> dict (what was loaded / ignored)
    read_state_dict(path, prefix="") -> dict[str, np.ndarray]
    port_resnet18(in_path, out_path, prefix="", audio=False, layer4_stride=2, verify=False) -> dict

`keras_avloc.backbones.torch_reference` (a plain-torch ResNet-18) needs torch and is never imported here.
"""

import importlib

# Resolved lazily (PEP 562) so that `avloc --help`, which imports the porting helpers, does not
# import TensorFlow.
_EXPORTS = {
    "ResNet18": "keras_avloc.backbones.resnet",
    "StateDictMismatchError": "keras_avloc.backbones.porting",
    "load_torch_state_dict": "keras_avloc.backbones.porting",
    "port_resnet18": "keras_avloc.backbones.porting",
    "read_state_dict": "keras_avloc.backbones.porting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_avloc.backbones' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
