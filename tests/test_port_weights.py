"""PyTorch -> Keras ResNet-18 weight porting.

Torch-free tests use the committed fixture made by tests/fixtures/make_resnet_fixture.py (torch's own
outputs of a reduced-width network). Tests marked with `pytest.importorskip("torch")` repeat the
check at full width and run the port tool end to end on a .pth written by torch.
"""

import importlib.util
import os
import pickle
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_avloc.backbones import (  # noqa: E402
    ResNet18,
    StateDictMismatchError,
    load_torch_state_dict,
    read_state_dict,
)
from keras_avloc.backbones.porting import PortingError  # noqa: E402
from keras_avloc.cli import main as avloc_main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoint(resnet_fixtures):
    with np.load(resnet_fixtures / "lvs_w8_checkpoint.npz", allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture(scope="module")
def expected(resnet_fixtures):
    with np.load(resnet_fixtures / "resnet18_w8_outputs.npz", allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _sub(checkpoint, prefix):
    return {key[len(prefix) :]: value for key, value in checkpoint.items() if key.startswith(prefix)}


def _port_tool():
    spec = importlib.util.spec_from_file_location("port_resnet18_tool", REPO / "tools" / "port_resnet18.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("stride", [1, 2])
def test_image_net_matches_torch_fixture(checkpoint, expected, stride):
    model = ResNet18(layer4_stride=stride, width=8)
    report = load_torch_state_dict(model, checkpoint, prefix="imgnet.")
    out = np.asarray(model(expected["image_input"], training=False))
    assert out.shape == expected[f"image_stride{stride}"].shape
    assert np.max(np.abs(out - expected[f"image_stride{stride}"])) < TOLERANCE
    # the official LVS image net carries unused conv1_a / conv1_flow, plus fc and BN counters
    assert {"conv1_a.weight", "conv1_flow.weight", "fc.weight", "fc.bias", "bn1.num_batches_tracked"} <= set(
        report["ignored"]
    )
    assert report["loaded"] == 1 + 19 + 4 * 20  # 20 convs + 20 BNs x 4 tensors


@pytest.mark.parametrize("stride", [1, 2])
def test_audio_net_uses_conv1_a_and_matches_torch_fixture(checkpoint, expected, stride):
    model = ResNet18(input_channels=1, layer4_stride=stride, width=8)
    report = load_torch_state_dict(model, checkpoint, prefix="module.audnet.")
    out = np.asarray(model(expected["audio_input"], training=False))
    assert np.max(np.abs(out - expected[f"audio_stride{stride}"])) < TOLERANCE
    assert {"conv1.weight", "conv1_flow.weight", "fc.weight"} <= set(report["ignored"])
    assert "conv1_a.weight" not in report["ignored"]
    kernel = np.asarray(model.get_layer("conv1").kernel)
    np.testing.assert_array_equal(kernel, checkpoint["module.audnet.conv1_a.weight"].transpose(2, 3, 1, 0))


def test_three_channel_conv1_is_summed_for_audio(checkpoint, expected):
    torchvision_layout = {
        key: value
        for key, value in _sub(checkpoint, "module.imgnet.").items()
        if not key.startswith(("conv1_a.", "conv1_flow."))
    }
    model = ResNet18(input_channels=1, layer4_stride=2, width=8)
    report = load_torch_state_dict(model, torchvision_layout)
    assert any("summed" in note for note in report["notes"])
    manual = torchvision_layout["conv1.weight"].sum(axis=1)  # [out, kh, kw]
    np.testing.assert_allclose(np.asarray(model.get_layer("conv1").kernel)[:, :, 0, :], manual.transpose(1, 2, 0), atol=1e-6)
    # torch ran the original 3-channel net on the spectrogram repeated on 3 channels
    out = np.asarray(model(expected["audio_input"], training=False))
    assert np.max(np.abs(out - expected["imagenet_conv1_on_audio_stride2"])) < TOLERANCE


def test_batch_norm_statistics_are_copied(checkpoint):
    model = ResNet18(width=8)
    load_torch_state_dict(model, checkpoint, prefix="imgnet.")
    bn = model.get_layer("layer3_0_downsample_1")
    for keras_name, torch_name in [("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                                   ("moving_variance", "running_var")]:
        np.testing.assert_array_equal(
            np.asarray(getattr(bn, keras_name)), checkpoint[f"module.imgnet.layer3.0.downsample.1.{torch_name}"]
        )


def test_mismatches_are_listed_and_model_left_unchanged(checkpoint):
    image = _sub(checkpoint, "module.imgnet.")
    model = ResNet18(width=8)
    before = [np.array(w) for w in model.get_weights()]

    broken = dict(image)
    del broken["layer2.1.bn2.running_var"]
    broken["layer5.0.conv1.weight"] = np.zeros((3, 3, 3, 3), "float32")
    broken["layer1.0.conv2.weight"] = np.zeros((8, 8, 5, 5), "float32")
    with pytest.raises(StateDictMismatchError) as err:
        load_torch_state_dict(model, broken)
    message = str(err.value)
    assert "missing (1): layer2.1.bn2.running_var" in message
    assert "unexpected (1): layer5.0.conv1.weight" in message
    assert "shape mismatch (1): layer1.0.conv2.weight" in message and "(8, 8, 5, 5)" in message
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.get_weights()))


def test_width_mismatch_and_missing_prefix_are_explained(checkpoint):
    with pytest.raises(StateDictMismatchError, match="shape mismatch"):
        load_torch_state_dict(ResNet18(width=16), checkpoint, prefix="imgnet.")
    with pytest.raises(StateDictMismatchError, match="prefix"):
        load_torch_state_dict(ResNet18(width=8), checkpoint)  # keys are nested under imgnet./audnet.
    with pytest.raises(StateDictMismatchError, match="audnet., imgnet."):
        load_torch_state_dict(ResNet18(width=8), checkpoint, prefix="visnet.")
    # an image model given the audio net: conv1_a is not used, so the 3-channel conv1 is taken
    report = load_torch_state_dict(ResNet18(width=8), checkpoint, prefix="audnet.")
    assert "conv1_a.weight" in report["ignored"]


def test_read_state_dict_npz_unwraps_checkpoint(tmp_path, checkpoint):
    path = tmp_path / "wrapped.npz"
    np.savez(path, **checkpoint)
    audio = read_state_dict(path, prefix="audnet.")
    assert set(audio) == set(_sub(checkpoint, "module.audnet."))
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_state_dict(tmp_path / "absent.pth")


def test_port_tool_and_cli_write_loadable_weights(tmp_path, checkpoint, expected, capsys):
    npz = tmp_path / "lvs.npz"
    np.savez(npz, **checkpoint)
    out = tmp_path / "audio.weights.h5"
    assert _port_tool().main([str(npz), str(out), "--prefix", "audnet.", "--audio", "--layer4-stride", "1"]) == 0
    model = ResNet18(input_channels=1, layer4_stride=1, width=8)
    model.load_weights(str(out))
    result = np.asarray(model(expected["audio_input"], training=False))
    assert np.max(np.abs(result - expected["audio_stride1"])) < TOLERANCE

    out_cli = tmp_path / "image.weights.h5"
    assert avloc_main(["port-weights", str(npz), str(out_cli), "--prefix", "imgnet.", "--layer4-stride", "2"]) == 0
    assert "ignored conv1_a.weight" in capsys.readouterr().out
    model = ResNet18(layer4_stride=2, width=8)
    model.load_weights(str(out_cli))
    result = np.asarray(model(expected["image_input"], training=False))
    assert np.max(np.abs(result - expected["image_stride2"])) < TOLERANCE

    assert avloc_main(["port-weights", str(npz), str(tmp_path / "x.weights.h5")]) == 2
    assert "--prefix" in capsys.readouterr().err
    assert avloc_main(["port-weights", str(npz), str(tmp_path / "x.h5"), "--prefix", "imgnet."]) == 2
    assert ".weights.h5" in capsys.readouterr().err
    assert not list(tmp_path.glob(".tmp-*"))


def test_pth_without_torch_explains_the_npz_route(tmp_path, monkeypatch, capsys):
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(PortingError, match="needs torch.*npz"):
        read_state_dict(path)
    assert avloc_main(["port-weights", str(path), str(tmp_path / "r.weights.h5")]) == 2
    assert "needs torch" in capsys.readouterr().err


# ---- cross-checks against torch (skipped when torch is not installed) ----


def _random_torch_net(torch_reference, modal, stride, seed, width=64):
    net = torch_reference.TorchResNet18(layer4_stride=stride, width=width, lvs_modal=modal)
    return torch_reference.randomize_(net, seed=seed)


@pytest.fixture(scope="module")
def full_width_state_dicts():
    """One randomised full-width net per modality (official LVS layout); strides share the weights."""
    pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference

    return {modal: _random_torch_net(torch_reference, modal, 1, seed=seed).state_dict()
            for seed, modal in enumerate(("vision", "audio"), start=10)}


@pytest.mark.parametrize("modal, stride", [("vision", 1), ("vision", 2), ("audio", 1), ("audio", 2)])
def test_full_width_matches_torch(full_width_state_dicts, modal, stride):
    from keras_avloc.backbones import torch_reference

    net, _ = torch_reference.model_for_state_dict(full_width_state_dicts[modal], audio=modal == "audio",
                                                  layer4_stride=stride)
    channels, size = (1, (129, 100)) if modal == "audio" else (3, (112, 112))
    x = np.random.default_rng(stride).standard_normal((2, *size, channels)).astype("float32")
    reference = torch_reference.run_nhwc(net, x)
    model = ResNet18(input_channels=channels, layer4_stride=stride)
    load_torch_state_dict(model, full_width_state_dicts[modal])
    result = np.asarray(model(x, training=False))
    assert result.shape == reference.shape
    assert np.max(np.abs(result - reference)) < TOLERANCE
    assert np.max(np.abs(reference)) > 0.5  # features are not trivially small


def test_fixture_is_torch_output(checkpoint, expected):
    pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference

    net, _ = torch_reference.model_for_state_dict(_sub(checkpoint, "module.imgnet."), layer4_stride=1)
    np.testing.assert_allclose(torch_reference.run_nhwc(net, expected["image_input"]), expected["image_stride1"], atol=1e-5)


def test_port_tool_end_to_end_on_torch_pth(tmp_path, capsys, full_width_state_dicts):
    torch = pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference

    # torchvision layout: the randomised image net without the LVS-only stem convs
    torchvision_layout = {
        key: value for key, value in full_width_state_dicts["vision"].items()
        if not key.startswith(("conv1_a.", "conv1_flow."))
    }
    net = torch_reference.TorchResNet18(layer4_stride=2)
    net.load_state_dict(torchvision_layout, strict=True)
    pth = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), pth)
    out = tmp_path / "resnet18.weights.h5"
    assert _port_tool().main([str(pth), str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    verified = float(printed.split("max |keras - torch| = ")[1].split()[0])
    assert verified < TOLERANCE

    model = ResNet18()
    model.load_weights(str(out))
    x = np.random.default_rng(5).standard_normal((1, 96, 96, 3)).astype("float32")
    assert np.max(np.abs(np.asarray(model(x, training=False)) - torch_reference.run_nhwc(net, x))) < TOLERANCE


def test_official_lvs_checkpoint_layout_pth_tar(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference

    audnet = _random_torch_net(torch_reference, "audio", 1, seed=4, width=8)
    imgnet = _random_torch_net(torch_reference, "vision", 1, seed=5, width=8)
    state = {f"module.audnet.{k}": v for k, v in audnet.state_dict().items()}
    state.update({f"module.imgnet.{k}": v for k, v in imgnet.state_dict().items()})
    path = tmp_path / "lvs_vggss.pth.tar"
    # the official file stores {"model_state_dict": {"module.imgnet.*", "module.audnet.*"}, ...}
    torch.save({"model_state_dict": state, "epoch": 20, "optimizer_state_dict": {"param_groups": [{"lr": 1e-4}]}}, path)
    out = tmp_path / "lvs_audio.weights.h5"
    args = [str(path), str(out), "--prefix", "audnet.", "--audio", "--layer4-stride", "1", "--verify"]
    assert avloc_main(["port-weights", *args]) == 0
    verified = float(capsys.readouterr().out.split("max |keras - torch| = ")[1].split()[0])
    assert verified < TOLERANCE


class _Payload:
    """Unpickling this would create a file; weights_only loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_never_executed(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        torch.save({"conv1.weight": torch.zeros(1), "trap": _Payload(str(marker))}, handle, pickle_module=pickle)
    assert not marker.exists()
    with pytest.raises(StateDictMismatchError, match="weights_only"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("method", ["ezvsl", "fnac"])
def test_official_ezvsl_and_fnac_checkpoints_port_and_match_the_torch_network(tmp_path, capsys, method):
    """A checkpoint in the official EZ-VSL / FNAC layout ({"model": {"module.imgnet.*", "module.img_proj.*",
    "module.audnet.*", "module.aud_proj.*"}}, random weights, width 8, 16-d projections) written by torch: the
    ported model's matched-pair maps equal those of the network the official forward builds from it (ResNet-18
    layer4 -> 1 x 1 conv and normalise; ResNet-18 -> global max pool -> linear and normalise; einsum)."""
    torch = pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference
    from keras_avloc.models import load_model

    imgnet = torch_reference.TorchResNet18(input_channels=3, layer4_stride=2, width=8, num_classes=0)
    audnet = torch_reference.TorchResNet18(input_channels=1, layer4_stride=2, width=8, num_classes=0)
    torch_reference.randomize_(imgnet, seed=1)
    torch_reference.randomize_(audnet, seed=2)
    torch.manual_seed(3)
    img_proj, aud_proj = torch.nn.Conv2d(64, 16, kernel_size=(1, 1)), torch.nn.Linear(64, 16)
    modules = {"imgnet": imgnet, "img_proj": img_proj, "audnet": audnet, "aud_proj": aud_proj}
    state = {f"module.{name}.{key}": value for name, module in modules.items()
             for key, value in module.state_dict().items()}
    path = tmp_path / "best.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 20, "best_cIoU": 0.0, "best_Auc": 0.0}, path)
    out = tmp_path / "model.keras"
    assert avloc_main(["port-weights", str(path), str(out), "--method", method]) == 0
    assert "projections: loaded 4 tensors; ignored 0" in capsys.readouterr().out
    model = load_model(str(out))
    assert model.name == method and model.embed_dim == 16 and model.eval_settings["image_mode"] == "squash"

    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    audio = rng.normal(size=(2, 97, 61, 1)).astype(np.float32)
    for module in modules.values():
        module.eval()
    with torch.no_grad():
        image = torch.nn.functional.normalize(img_proj(imgnet(torch.from_numpy(images).permute(0, 3, 1, 2))), dim=1)
        sound = audnet(torch.from_numpy(audio).permute(0, 3, 1, 2)).amax(dim=(2, 3))
        sound = torch.nn.functional.normalize(aud_proj(sound), dim=1)
        expected = torch.einsum("nchw,nc->nhw", image, sound).numpy()
    features = model({"image": images, "audio": audio}, training=False)
    maps = np.asarray(model.similarity_map(features["image_maps"], features["audio_vecs"]))
    np.testing.assert_allclose(maps, expected, atol=TOLERANCE)


def test_official_slavc_checkpoint_ports_both_pairs_and_the_momentum_copies(tmp_path, capsys):
    """A `latest.pth` in the official SLAVC layout written by torch (random weights, width 8, two 16-d projection
    pairs, momentum copies that differ from the base networks): the ported base and momentum maps equal those of
    the torch networks (mean of the two heads' cosine maps, as the official test's map up to its 1 / tau)."""
    torch = pytest.importorskip("torch")
    from keras_avloc.backbones import torch_reference
    from keras_avloc.models import load_model

    modules = {}
    for seed, prefix in ((1, ""), (11, "momentum_")):
        modules[f"{prefix}imgnet"] = torch_reference.TorchResNet18(input_channels=3, layer4_stride=2, width=8,
                                                                   num_classes=0)
        modules[f"{prefix}audnet"] = torch_reference.TorchResNet18(input_channels=1, layer4_stride=2, width=8,
                                                                   num_classes=0)
        torch_reference.randomize_(modules[f"{prefix}imgnet"], seed=seed)
        torch_reference.randomize_(modules[f"{prefix}audnet"], seed=seed + 1)
        torch.manual_seed(seed)
        for k in (1, 2):
            modules[f"{prefix}img_proj{k}"] = torch.nn.Conv2d(64, 16, kernel_size=(1, 1))
            modules[f"{prefix}aud_proj{k}"] = torch.nn.Linear(64, 16)
    state = {f"module.{name}.{key}": value for name, module in modules.items()
             for key, value in module.state_dict().items()}
    path = tmp_path / "latest.pth"
    torch.save({"model": state, "optimizer": {}, "epoch": 20, "best_Precision": 0.0}, path)
    out = tmp_path / "model.keras"
    assert avloc_main(["port-weights", str(path), str(out), "--method", "slavc"]) == 0
    assert "projections: loaded 16 tensors; ignored 0" in capsys.readouterr().out
    model = load_model(str(out))
    assert model.embed_dim == 16 and float(model.momentum_updates.numpy()) == 1.0

    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 64, 64, 3)).astype(np.float32)
    audio = rng.normal(size=(2, 97, 61, 1)).astype(np.float32)
    for module in modules.values():
        module.eval()

    def torch_map(prefix):
        with torch.no_grad():
            trunk = modules[f"{prefix}imgnet"](torch.from_numpy(images).permute(0, 3, 1, 2))
            sound = modules[f"{prefix}audnet"](torch.from_numpy(audio).permute(0, 3, 1, 2)).amax(dim=(2, 3))
            maps = []
            for k in (1, 2):
                image = torch.nn.functional.normalize(modules[f"{prefix}img_proj{k}"](trunk), dim=1)
                heard = torch.nn.functional.normalize(modules[f"{prefix}aud_proj{k}"](sound), dim=1)
                maps.append(torch.einsum("nchw,nc->nhw", image, heard))
            return ((maps[0] + maps[1]) / 2).numpy()

    for prefix, image_encoder, audio_encoder in (("", model.image_encoder, model.audio_encoder),
                                                 ("momentum_", model.momentum_image_encoder,
                                                  model.momentum_audio_encoder)):
        ours = np.asarray(model.similarity_map(image_encoder(images, training=False),
                                               audio_encoder(audio, training=False)))
        np.testing.assert_allclose(ours, torch_map(prefix), atol=TOLERANCE, err_msg=prefix or "base")
    assert not np.allclose(torch_map(""), torch_map("momentum_"), atol=1e-3)  # the two copies were told apart
