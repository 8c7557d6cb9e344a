"""The synthetic 360° benchmark: real stamps on equirectangular panoramas of real photos, each sounding object's
real recording encoded into ambiX at its direction. Checked against the geometry: the classical steered-response
power points at the sounding object (without reflections and ambience), the object's mask sits at its direction,
and builds resume."""

import json
import os

import numpy as np
import pytest

from keras_avloc.data import load_split
from keras_avloc.data import sphere
from keras_avloc.data import stamps as stamps_module
from keras_avloc.spatial import direction_to_equirect, srp_direction, unit_vector


@pytest.fixture(scope="module")
def dry_sphere(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("sphere"))
    try:
        summary = sphere.build_sphere(root, n_train=2, n_val=1, n_test=3, size=(64, 128), seed=1, reflections=False,
                                      ambience=False, classes=["cow", "dog", "duck"], progress=False)
    except stamps_module.MediaMissingError as err:
        pytest.fail(f"stamps media missing, run `bash tools/setup.sh`: {err}")
    return root, summary


def test_scenes_have_ambix_audio_equirectangular_video_and_exact_directions(dry_sphere):
    from keras_avloc.io.media import read_frames
    import soundfile

    root, summary = dry_sphere
    assert summary["splits"] == {"train": 2, "val": 1, "test": 3} and summary["built"] == 6
    for record in load_split(root, "test"):
        assert record["kind"] == "sphere"
        audio, rate = soundfile.read(record["audio"])
        assert rate == sphere.AUDIO_RATE and audio.shape == (sphere.AUDIO_RATE, 4)
        frames, fps = read_frames(os.path.join(root, "video", record["file"] + ".mp4"))
        assert frames.shape[1:] == (64, 128, 3) and abs(len(frames) - sphere.FRAMES) <= 1 and abs(fps - 16) < 0.5
        sounding = [o for o in record["objects"] if o["sounding"]]
        assert len(sounding) == 1 and sounding[0]["class"] == record["class"]
        assert sounding[0]["direction"].shape == (sphere.FRAMES, 2)

        # the classical DoA estimate from the 4 channels points at the sounding object (middle of its drift)
        phi, nu = srp_direction(audio.T)
        target = sounding[0]["direction"].mean(axis=0)
        error = np.degrees(np.arccos(np.clip(unit_vector(phi, nu) @ unit_vector(*target), -1, 1)))
        assert error < 6.0, error
        # and its mask on the middle frame is centred on its direction there
        import cv2

        mask = cv2.imread(sounding[0]["mask"], cv2.IMREAD_GRAYSCALE) > 127
        x, y = direction_to_equirect(*sounding[0]["direction"][sphere.FRAMES // 2])
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() / 64 - y) < 0.1
        col_offset = np.angle(np.mean(np.exp(2j * np.pi * cols / 128)) * np.exp(-2j * np.pi * x)) / (2 * np.pi)
        assert abs(col_offset) < 0.05  # circular mean of the columns, the seam wraps


def test_builds_resume_and_refuse_other_settings(dry_sphere, tmp_path):
    root, _ = dry_sphere
    again = sphere.build_sphere(root, n_train=2, n_val=1, n_test=3, size=(64, 128), seed=1, reflections=False,
                                ambience=False, classes=["cow", "dog", "duck"], progress=False)
    assert again["built"] == 0 and again["skipped"] == 6
    with pytest.raises(stamps_module.OtherBuildError, match="--overwrite"):
        sphere.build_sphere(root, n_train=2, n_val=1, n_test=3, size=(64, 128), seed=2, classes=["cow", "dog", "duck"],
                            progress=False)
    with pytest.raises(stamps_module.StampsError, match="twice the height"):
        sphere.build_sphere(str(tmp_path / "x"), size=(64, 100), progress=False)


def test_reflections_and_ambience_keep_the_direct_sound_on_top(tmp_path):
    import soundfile

    root = str(tmp_path / "wet")
    sphere.build_sphere(root, n_train=0, n_val=0, n_test=2, size=(32, 64), seed=4, classes=["cow", "dog"],
                        progress=False)
    for record in load_split(root, "test"):
        with open(os.path.join(root, ".parts", "test", record["file"] + ".json")) as handle:
            scene = json.load(handle)["scene"]
        assert {"floor", "back wall", "ambience"} <= set(scene)
        audio, _ = soundfile.read(record["audio"])
        phi, nu = srp_direction(audio.T)
        target = [o for o in record["objects"] if o["sounding"]][0]["direction"].mean(axis=0)
        assert np.degrees(np.arccos(np.clip(unit_vector(phi, nu) @ unit_vector(*target), -1, 1))) < 25.0


def test_object_directions_are_validated_when_a_split_is_read(tmp_path):
    from keras_avloc.data.annotations import AnnotationError

    for bad in ([[0.1]], "north", [[0.1, float("nan")]]):
        (tmp_path / "test.json").write_text(json.dumps([{"file": "a", "class": "dog", "kind": "sphere", "objects": [
            {"class": "dog", "sounding": True, "direction": bad}]}]))
        with pytest.raises(AnnotationError, match="'direction' must be a list of"):
            load_split(str(tmp_path), "test")
    (tmp_path / "test.json").write_text(json.dumps([{"file": "a", "class": "dog", "kind": "sphere", "objects": [
        {"class": "dog", "sounding": True, "direction": [[0.1, 0.2], [0.15, 0.2]]}]}]))
    assert load_split(str(tmp_path), "test")[0]["objects"][0]["direction"].shape == (2, 2)


def test_viewpoints_follow_the_official_sampling_rule():
    from keras_avloc.data.viewpoints import sample_viewpoints

    rng = np.random.default_rng(0)
    for _ in range(50):
        centres, fovs = sample_viewpoints(rng)
        assert centres.shape == (4, 2) and fovs.shape == (4, 2)
        assert ((centres[:, 1] >= 0.33) & (centres[:, 1] <= 0.66)).all()
        assert ((fovs[:, 0] >= 0.0707) & (fovs[:, 0] <= 0.25)).all()
        aspect = fovs[:, 1] / (2.0 * fovs[:, 0])
        assert ((aspect >= 0.75 - 1e-9) & (aspect <= 4 / 3 + 1e-9)).all()
        for i in range(4):
            for j in range(i):
                dx = abs(centres[i, 0] - centres[j, 0])
                dx = min(dx, 1.0 - dx)  # across the seam
                assert np.hypot(2 * dx, centres[i, 1] - centres[j, 1]) > 0.2
    with pytest.raises(ValueError, match="apart"):
        sample_viewpoints(rng, count=40, max_tries=50)


def test_ambi_pow_draws_centres_where_the_field_is_loud():
    """The official `pos='ambi_pow'` sampler: for one plane wave the projection beam towards a grid point hears
    s (1 + cos theta), so the weights are (1 + cos theta)^2 / sum (written out here from the gains, not the code)."""
    from keras_avloc.data.viewpoints import power_weights, sample_viewpoints

    rng = np.random.default_rng(0)
    source = (0.3, 0.45)  # panorama (x, y)
    phi, nu = (1 - 2 * source[0]) * np.pi, (1 - 2 * source[1]) * np.pi / 2
    signal = rng.normal(size=2400)
    # ambiX (W, Y, Z, X), SN3D: W = s, Y = s cos(nu) sin(phi), Z = s sin(nu), X = s cos(nu) cos(phi)
    foa = np.stack([signal, signal * np.cos(nu) * np.sin(phi), signal * np.sin(nu), signal * np.cos(nu) * np.cos(phi)])
    grid, weights = power_weights(foa)
    assert grid.shape == (100, 2) and np.isclose(weights.sum(), 1.0)
    towards = unit_vector((1 - 2 * grid[:, 0]) * np.pi, (1 - 2 * grid[:, 1]) * np.pi / 2)
    expected = (1 + towards @ unit_vector(phi, nu)) ** 2
    np.testing.assert_allclose(weights, expected / expected.sum(), rtol=1e-9)
    drawn = np.array([sample_viewpoints(np.random.default_rng(i), 1, crop_method="ambi_pow", foa=foa)[0][0]
                      for i in range(3000)])
    counts = np.array([np.sum(np.all(np.isclose(drawn, point), axis=1)) for point in grid])
    assert counts.sum() == 3000 and np.corrcoef(counts, weights)[0, 1] > 0.95
    centres, _ = sample_viewpoints(rng, 4, crop_method="ambi_pow", foa=foa)
    for i in range(4):
        for j in range(i):
            dx = abs(centres[i, 0] - centres[j, 0])
            assert np.hypot(2 * min(dx, 1 - dx), centres[i, 1] - centres[j, 1]) > 0.2
    _, silent = power_weights(np.zeros((4, 100)))
    np.testing.assert_allclose(silent, np.full(100, 0.01))  # a silent field: every grid point alike
    with pytest.raises(ValueError, match="foa"):
        sample_viewpoints(rng, 1, crop_method="ambi_pow")
    with pytest.raises(ValueError, match="ambi_pow"):
        sample_viewpoints(rng, 1, crop_method="detector")


def test_random_viewpoints_are_the_ones_drawn_before_the_ambi_pow_option():
    """The random sampler draws exactly as before (same centres and fields of view for a seed)."""
    from keras_avloc.data.viewpoints import sample_viewpoints

    for seed in range(5):
        rng = np.random.default_rng(seed)
        centres, fovs, kept = [], [], []
        for _ in range(4):  # the rule written out: redraw until 0.2 from every earlier centre in (2x, y), wrapped
            while True:
                centre = np.array([rng.uniform(0.0, 1.0), rng.uniform(0.33, 0.66)])
                if all(np.hypot(2 * min(abs(centre[0] - c[0]), 1 - abs(centre[0] - c[0])), centre[1] - c[1]) > 0.2
                       for c in kept):
                    break
            kept.append(centre)
            horizontal = rng.uniform(0.0707, 0.25)
            fovs.append([horizontal, np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))) * horizontal * 2.0])
            centres.append(centre)
        ours = sample_viewpoints(np.random.default_rng(seed), 4)
        np.testing.assert_allclose(ours[0], centres)
        np.testing.assert_allclose(ours[1], fovs)


def test_ambi_pow_viewpoints_look_where_the_field_heard_after_misalignment_is_loud():
    from keras_avloc.data.sphere_dataset import clip_viewpoints
    from keras_avloc.spatial.ambisonics import foa_encode

    frames = np.zeros((10, 32, 64, 3), np.uint8)
    foa = foa_encode(np.random.default_rng(0).normal(size=(1, 2400)), np.array([2.0]), np.array([0.1]))
    example = clip_viewpoints(frames, foa, np.random.default_rng(1), viewpoints=4, frames_per_clip=8, crop_size=16,
                              crop_method="ambi_pow")
    centres = example["centres"]
    np.testing.assert_allclose(centres * 10, np.round(centres * 10), atol=1e-5)  # the official 0.1 grid
    heard = [clip_viewpoints(frames, foa, np.random.default_rng(i), viewpoints=1, frames_per_clip=8, crop_size=16,
                             crop_method="ambi_pow", misalign=1.0) for i in range(30)]
    random = [clip_viewpoints(frames, foa, np.random.default_rng(i), viewpoints=1, frames_per_clip=8, crop_size=16,
                              misalign=1.0) for i in range(30)]
    # with the field turned, the ambi_pow viewpoints follow the turned field: each one hears its source near the front
    def ahead(example):  # cos(angle to the source) = <W X> / <W W> for one plane wave (X: the front axis)
        field = example["audio"][0]
        return float(np.mean(field[0] * field[3])) / float(np.mean(field[0] ** 2))

    assert np.mean([ahead(e) for e in heard]) > np.mean([ahead(e) for e in random]) + 0.2


def test_objects_viewpoints_look_at_the_clips_objects_then_at_random_places():
    """"objects": each viewpoint centres on an object not yet looked at (0.2 from the earlier centres), then random."""
    from keras_avloc.data.sphere_dataset import clip_viewpoints
    from keras_avloc.data.viewpoints import sample_viewpoints

    points = np.array([[0.1, 0.5], [0.6, 0.4], [0.62, 0.41]])  # the third is within 0.2 of the second
    for seed in range(20):
        centres, _ = sample_viewpoints(np.random.default_rng(seed), 4, crop_method="objects", objects=points)
        on_object = [any(np.allclose(centre, point) for point in points) for centre in centres]
        assert on_object[:2] == [True, True] and not any(on_object[2:])  # two objects apart, then random centres
        assert not np.allclose(centres[0], centres[1])
        for i in range(4):
            for j in range(i):
                dx = abs(centres[i, 0] - centres[j, 0])
                assert np.hypot(2 * min(dx, 1 - dx), centres[i, 1] - centres[j, 1]) > 0.2
    firsts = {tuple(sample_viewpoints(np.random.default_rng(s), 1, crop_method="objects", objects=points)[0][0])
              for s in range(40)}
    assert firsts == {tuple(point) for point in points}  # one object picked at random, each of them in turn
    seam = np.array([[0.99, 0.5], [0.01, 0.5]])  # 0.04 apart across the seam: one of them, then a random centre
    centres, _ = sample_viewpoints(np.random.default_rng(3), 2, crop_method="objects", objects=seam)
    assert sum(any(np.allclose(centre, point) for point in seam) for centre in centres) == 1
    none, _ = sample_viewpoints(np.random.default_rng(0), 2, crop_method="objects", objects=np.zeros((0, 2)))
    assert none.shape == (2, 2)  # no object: random centres
    with pytest.raises(ValueError, match="objects"):
        sample_viewpoints(np.random.default_rng(0), 1, crop_method="objects")
    # In a clip, the centre is the object's direction at the middle of the frames used (azimuth 0, elevation 0 is
    # the panorama's centre; azimuth pi / 2 is a quarter turn to the left, x = 0.25).
    frames = np.zeros((8, 32, 64, 3), np.uint8)
    track = [[np.pi / 2, 0.0]] * 4 + [[0.0, 0.0]] * 4
    example = clip_viewpoints(frames, np.zeros((4, 2400)), np.random.default_rng(0), viewpoints=1, frames_per_clip=8,
                              crop_size=16, crop_method="objects", objects=[track])
    np.testing.assert_allclose(example["centres"][0], [0.5, 0.5], atol=1e-6)  # frame 4 of 8
    example = clip_viewpoints(frames[:4], np.zeros((4, 2400)), np.random.default_rng(0), viewpoints=1,
                              frames_per_clip=4, crop_size=16, crop_method="objects", objects=[track[:4]])
    np.testing.assert_allclose(example["centres"][0], [0.25, 0.5], atol=1e-6)  # frame 2 of 4


def test_the_sphere_dataset_centres_objects_viewpoints_on_the_records_objects(dry_sphere):
    from keras_avloc.data.annotations import load_split
    from keras_avloc.data.sphere_dataset import make_sphere_dataset

    root, _ = dry_sphere
    dataset = make_sphere_dataset(root, "test", batch_size=3, viewpoints=1, frames=4, crop_size=32,
                                  crop_method="objects")
    _, y = next(iter(dataset))
    for record, centre in zip(load_split(root, "test"), np.asarray(y["centres"])[:, 0]):
        # evaluation takes the middle 4 of the 16 frames (6-9): each object's direction at frame 8, on the panorama
        points = [((1 - phi / np.pi) / 2 % 1.0, (1 - 2 * nu / np.pi) / 2)
                  for phi, nu in (np.asarray(item["direction"])[8] for item in record["objects"])]
        assert any(np.allclose(centre, point, atol=1e-5) for point in points), (record["file"], centre, points)


def test_the_intensity_channels_say_how_far_from_the_front_the_sound_is(dry_sphere):
    """In a viewpoint's rotated field the front (X) intensity is the cosine of the angle between the viewpoint's centre
    and the sounding object (dry scenes: one plane wave), which the log-mels' magnitudes cannot tell apart from its
    mirror image behind."""
    from keras_avloc.data.annotations import load_split
    from keras_avloc.data.sphere_dataset import make_sphere_dataset

    root, _ = dry_sphere
    dataset = make_sphere_dataset(root, "test", batch_size=3, viewpoints=4, frames=4, crop_size=32,
                                  audio_input="ambix_intensity")
    x, y = next(iter(dataset))
    mels, intensity = x["audio"].numpy()[..., :4], x["audio"].numpy()[..., 4:]
    weights = 10.0 ** (mels[..., 0] / 10.0)  # the W band energies weigh the bands' intensities
    vectors = np.einsum("bvtm,bvtmc->bvc", weights, intensity) / weights.sum(axis=(2, 3))[..., None]
    for record, centres, vector in zip(load_split(root, "test"), y["centres"].numpy(), vectors):
        sounding = [item for item in record["objects"] if item["sounding"]][0]
        source = unit_vector(*np.asarray(sounding["direction"])[8])  # the middle of the frames used
        for centre, heard in zip(centres, vector):
            phi, nu = (1 - 2 * centre[0]) * np.pi, (1 - 2 * centre[1]) * np.pi / 2  # panorama -> direction
            cosine = float(unit_vector(phi, nu) @ source)
            assert abs(heard[2] - cosine) < 0.1, (record["file"], heard, cosine)
            assert abs(np.linalg.norm(heard) - 1.0) < 0.1  # one plane wave: a unit vector


def test_the_sphere_dataset_names_the_crop_methods(tmp_path):
    from keras_avloc.data.sphere_dataset import make_sphere_dataset

    with pytest.raises(ValueError, match="random, ambi_pow, objects"):
        make_sphere_dataset(tmp_path, "train", crop_method="detector")


def test_objects_viewpoints_need_the_objects_directions_in_the_records(tmp_path):
    from keras_avloc.data.sphere_dataset import SphereDataError, make_sphere_dataset

    (tmp_path / "train.json").write_text(json.dumps([{"file": "clip", "class": "cow"}]))
    (tmp_path / "video").mkdir()
    (tmp_path / "video" / "clip.mp4").write_bytes(b"")  # one of the user's own clips, without detections
    with pytest.raises(SphereDataError, match="train.json: crop_method 'objects'.*no record here has any"):
        make_sphere_dataset(tmp_path, "train", crop_method="objects")


def test_a_viewpoint_on_the_sounding_object_sees_it_and_hears_it_in_front(dry_sphere):
    import cv2
    import soundfile

    from keras_avloc.data.viewpoints import viewpoint_clip
    from keras_avloc.io.media import read_frames
    from keras_avloc.spatial import intensity_vector, perspective_crop

    root, _ = dry_sphere
    record = load_split(root, "test")[0]
    sounding = [o for o in record["objects"] if o["sounding"]][0]
    frames, _ = read_frames(os.path.join(root, "video", record["file"] + ".mp4"))
    audio, _ = soundfile.read(record["audio"])
    centre = direction_to_equirect(*sounding["direction"][sphere.FRAMES // 2])
    crops, rotated = viewpoint_clip(frames[:8], audio.T, centre, (0.2, 0.4), size=(32, 32))
    assert crops.shape == (8, 32, 32, 3)
    # the object's mask, seen through the same crop, covers the crop's centre
    mask = (cv2.imread(sounding["mask"], cv2.IMREAD_GRAYSCALE) > 127).astype(np.float32)[..., None]
    seen = np.asarray(perspective_crop(mask, centre, (0.2, 0.4), (32, 32)))[..., 0]
    assert seen[12:20, 12:20].mean() > 0.5
    # and the rotated sound field comes from the front (within the object's drift over the clip)
    front = intensity_vector(rotated)
    assert np.degrees(np.arccos(np.clip(front[0], -1, 1))) < 12.0
