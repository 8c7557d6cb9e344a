"""The released AVC / AVSA checkpoints: a `checkpoint.pth.tar` in the official layout written by torch (the networks of
tests/avsa_reference.py, random weights and batch-norm statistics, width 8) ports with `avloc port-weights --method`,
and the ported model's features, heads and transformer outputs equal the torch networks' on the same inputs."""

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_avloc.cli import main as avloc_main  # noqa: E402

TOLERANCE = 1e-4
WIDTH = 8


def _write_checkpoint(torch, reference, directory, method, stats=True):
    wrapper = reference.randomize_(reference.Wrapper(WIDTH), seed=1)
    loss = reference.AVCCriterion(8 * WIDTH) if method == "avc" else reference.AVSACriterion(8 * WIDTH)
    criterion = reference.randomize_(reference.MultiTask(loss), seed=2)
    path = directory / "checkpoint.pth.tar"
    torch.save({"epoch": 50, "model": {f"module.{k}": v for k, v in wrapper.state_dict().items()},
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
                "train_criterion": criterion.state_dict()}, path)
    mel_stats = {"mean": np.linspace(-3, 3, 128), "std": np.linspace(0.5, 2, 128)}
    if stats:
        np.savez(directory / "MelSpectDB-24khz-257fft-128mels-norm-stats.npz", **mel_stats)
    return path, wrapper, loss, mel_stats


@pytest.mark.parametrize("method", ["avc", "avsa"])
def test_official_checkpoint_ports_and_matches_the_torch_networks(tmp_path, capsys, method):
    torch = pytest.importorskip("torch")
    import avsa_reference
    from keras_avloc.models import load_model

    path, wrapper, loss, mel_stats = _write_checkpoint(torch, avsa_reference, tmp_path, method)
    out = tmp_path / "model.keras"
    assert avloc_main(["port-weights", str(path), str(out), "--method", method]) == 0
    printed = capsys.readouterr().out
    assert "criterion: loaded" in printed and "ignored 0" in printed.split("criterion:")[1].splitlines()[0]
    model = load_model(str(out))
    np.testing.assert_allclose(model.mel_stats["mean"], mel_stats["mean"], rtol=1e-6)

    rng = np.random.default_rng(0)
    video = rng.normal(size=(2, 4, 4, 32, 32, 3)).astype(np.float32)  # [B, V, F, S, S, 3]
    logmels = rng.normal(size=(2, 4, 24, 128, 4)).astype(np.float32) * 3  # [B, V, T, mels, channels]
    features = model({"image": video, "audio": logmels}, training=False)
    normalised = (logmels - mel_stats["mean"][:, None]) / (mel_stats["std"][:, None] + 1e-5)
    with torch.no_grad():
        torch_video = wrapper.video_model(torch.from_numpy(video.reshape(8, 4, 32, 32, 3)).permute(0, 4, 1, 2, 3))
        torch_audio = wrapper.audio_model(torch.from_numpy(normalised.reshape(8, 24, 128, 4).astype(np.float32))
                                          .permute(0, 3, 1, 2))
    video_feat = np.asarray(features["video_feat"]).reshape(8, -1)
    audio_feat = np.asarray(features["audio_feat"]).reshape(8, -1)
    np.testing.assert_allclose(video_feat, torch_video.numpy(), atol=TOLERANCE * np.abs(torch_video.numpy()).max())
    np.testing.assert_allclose(audio_feat, torch_audio.numpy(), atol=TOLERANCE * np.abs(torch_audio.numpy()).max())

    sequence_video, sequence_audio = torch_video.reshape(2, 4, -1), torch_audio.reshape(2, 4, -1)
    with torch.no_grad():
        if method == "avc":
            expected = [loss.video_projection(torch_video), loss.audio_projection(torch_audio)]
            ours = [model.video_head(video_feat), model.audio_head(audio_feat)]
        else:
            expected = [loss.video_head(sequence_video), loss.audio_head(sequence_audio),
                        loss.video_pred_head(loss.a2v_transformer(sequence_audio)),
                        loss.audio_pred_head(loss.v2a_transformer(sequence_video))]
            ours = model.embeddings(features["video_feat"], features["audio_feat"])
    for mine, theirs in zip(ours, expected):
        theirs = theirs.numpy()
        np.testing.assert_allclose(np.asarray(mine).reshape(theirs.shape), theirs,
                                   atol=TOLERANCE * np.abs(theirs).max())


def test_the_other_methods_checkpoint_and_a_missing_stats_file_are_explained(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    import avsa_reference

    path, *_ = _write_checkpoint(torch, avsa_reference, tmp_path, "avsa", stats=False)
    assert avloc_main(["port-weights", str(path), str(tmp_path / "avc.keras"), "--method", "avc"]) != 0
    assert "other method's checkpoint" in capsys.readouterr().err
    assert avloc_main(["port-weights", str(path), str(tmp_path / "avsa.keras"), "--method", "avsa"]) == 0
    assert "MelSpectDB-24khz-257fft-128mels-norm-stats.npz" in capsys.readouterr().out


def test_the_reference_networks_have_the_official_keys_and_shapes():
    """tests/fixtures/avsa_official_keys.json lists the state-dict keys and shapes of the official modules (made once
    from pedro-morgado/AVSpatialAlignment, its header says how); the torch networks the port tests write files with
    have exactly those."""
    torch = pytest.importorskip("torch")  # noqa: F841
    import avsa_reference

    official = json.loads((Path(__file__).parent / "fixtures" / "avsa_official_keys.json").read_text())
    for method, loss in (("avc", avsa_reference.AVCCriterion(512)), ("avsa", avsa_reference.AVSACriterion(512))):
        ours = {"model": avsa_reference.Wrapper(64), "train_criterion": avsa_reference.MultiTask(loss)}
        for part, module in ours.items():
            shapes = {key: list(value.shape) for key, value in module.state_dict().items()}
            assert shapes == official[method][part], (method, part)


def test_the_official_statistics_file_is_preferred_and_ambiguity_refused(tmp_path):
    from keras_avloc.models.avsa_checkpoint import OFFICIAL_STATS, find_mel_stats
    from keras_avloc.backbones.porting import StateDictMismatchError

    checkpoint = tmp_path / "checkpoint.pth.tar"
    assert find_mel_stats(checkpoint) == (None, None)
    np.savez(tmp_path / "MelSpectDB-24khz-1025fft-128mels-norm-stats.npz", mean=np.ones(128), std=np.ones(128))
    assert find_mel_stats(checkpoint)[1] == "MelSpectDB-24khz-1025fft-128mels-norm-stats.npz"  # the only one
    np.savez(tmp_path / "ComplexSpect-24khz-257fft-norm-stats.npz", mean=np.ones(257), std=np.ones(257))
    with pytest.raises(StateDictMismatchError, match="several"):
        find_mel_stats(checkpoint)
    np.savez(tmp_path / OFFICIAL_STATS, mean=np.zeros(128), std=np.full(128, 2.0))
    stats, name = find_mel_stats(checkpoint)
    assert name == OFFICIAL_STATS and stats["std"][0] == 2.0
