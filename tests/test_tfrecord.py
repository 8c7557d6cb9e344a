"""TFRecord shards: round trip against the media-folder pipeline, multi-worker sharding, the CLI."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from keras_avloc.cli import main
from keras_avloc.data import make_dataset
from keras_avloc.data.synthetic import write_synthetic_dataset

SIZE = 48


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfr")
    write_synthetic_dataset(str(folder), count=5, seconds=1.5, image_hw=(40, 56), with_masks=True, split="train")
    return folder


def _collect(dataset):
    xs, ys = zip(*[(x, y) for x, y in dataset])
    x = {k: np.concatenate([b[k].numpy() for b in xs]) for k in xs[0]}
    y = {k: np.concatenate([b[k].numpy() for b in ys]) for k in ys[0]}
    order = np.argsort(y["index"])
    return {k: v[order] for k, v in x.items()}, {k: v[order] for k, v in y.items()}


def test_shards_round_trip_equals_the_media_pipeline(root, tmp_path):
    from keras_avloc.data import write_tfrecords

    result = write_tfrecords(str(root), str(tmp_path), split="train", shards=2, progress=False)
    assert result["written"] == 5 and result["skipped"] == []
    assert [os.path.basename(p) for p in result["shards"]] == ["train-00000-of-00002.tfrecord",
                                                                "train-00001-of-00002.tfrecord"]
    meta = json.loads((tmp_path / "train.meta.json").read_text())
    assert meta["class_list"] == ["noise", "tone"] and meta["written"] == 5
    kwargs = dict(split="train", image_size=SIZE, clip_seconds=1.0, batch_size=2)
    x_media, y_media = _collect(make_dataset(str(root), **kwargs))
    x_shards, y_shards = _collect(make_dataset(str(root), tfrecord_dir=str(tmp_path), **kwargs))
    np.testing.assert_array_equal(y_shards["index"], np.arange(5))
    np.testing.assert_array_equal(x_shards["image"], x_media["image"])  # original jpg bytes are stored
    np.testing.assert_allclose(x_shards["audio"], x_media["audio"], atol=1e-4)  # PCM16 round trip
    np.testing.assert_array_equal(y_shards["gt_map"], y_media["gt_map"])  # from the stored mask PNG
    np.testing.assert_array_equal(y_shards["label"], y_media["label"])

    # Two workers read disjoint shard files that together cover the split.
    halves = [_collect(make_dataset(str(root), tfrecord_dir=str(tmp_path), num_shards=2, shard_index=i,
                                    **kwargs))[1]["index"] for i in range(2)]
    assert sorted(np.concatenate(halves).tolist()) == list(range(5)) and not set(halves[0]) & set(halves[1])

    train = make_dataset(str(root), tfrecord_dir=str(tmp_path), training=True, seed=1, **kwargs)
    x, y = _collect(train)
    assert x["image"].shape == (5, SIZE, SIZE, 3) and x["audio"].shape == (5, 257, 66, 1)
    with pytest.raises(FileNotFoundError, match="avloc data to-tfrecord"):
        make_dataset(str(root), tfrecord_dir=str(tmp_path), **dict(kwargs, split="test"))


def test_cli_converts_skips_bad_clips_and_reports_errors(root, tmp_path, capsys):
    bad = tmp_path / "bad"
    write_synthetic_dataset(str(bad), count=3, seconds=1.0, image_hw=(32, 32), split="train")
    (bad / "audio" / "clip_0001.wav").write_bytes(b"")
    out = tmp_path / "shards"
    assert main(["data", "to-tfrecord", str(bad), str(out), "--split", "train", "--shards", "1"]) == 0
    printed = capsys.readouterr().out
    assert "wrote 2 clips to 1 shards" in printed and "clip_0001" in printed and "empty" in printed
    assert sorted(os.listdir(out)) == ["train-00000-of-00001.tfrecord", "train.meta.json"]
    assert main(["data", "to-tfrecord", str(bad), str(out), "--shards", "1", "--strict"]) == 2
    assert "clip_0001.wav" in capsys.readouterr().err
    assert main(["data", "to-tfrecord", str(tmp_path / "nowhere"), str(out)]) == 2
    assert "no such dataset folder" in capsys.readouterr().err
    assert main(["data", "to-tfrecord", str(bad), str(out), "--split", "val"]) == 2
    assert "val.json" in capsys.readouterr().err
