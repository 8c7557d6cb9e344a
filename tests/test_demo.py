"""The README's first command, end to end on a tiny preset: stamps benchmark + ImageNet stand-in -> the methods
(from the stand-in; from scratch with the ablations) -> one report."""

import json
import os

import cv2
import numpy as np
import pytest

from keras_avloc.demo import DemoError, PRESETS, run_demo


def centre_prior_reference(records):
    """cIoU of the centre prior against each record's box union, by the published formula (independent)."""
    coords = (np.arange(224) + 0.5) / 224 - 0.5
    prior = np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * 0.25**2)).astype(np.float32)
    value = (prior - prior.min()) / (prior.max() - prior.min())
    predicted = value >= np.sort(value.ravel())[value.size // 2]
    cious = []
    for record in records:
        gt = np.zeros((224, 224))
        for box in record["bbox"]:
            x1, y1, x2, y2 = (int(224 * max(v, 0)) for v in box)
            gt[y1:y2, x1:x2] = 1
        cious.append(np.sum(predicted * gt) / (np.sum(gt) + np.sum(predicted * (gt == 0))))
    thresholds = [0.05 * i for i in range(21)]
    fractions = [np.mean(np.asarray(cious) >= t) for t in thresholds]
    return float(np.mean(cious)), float(np.trapezoid(fractions, thresholds))


@pytest.fixture(scope="session")  # session: the `long` tests run first, away from the rest of the module
def tiny_data(tmp_path_factory):
    """The tiny preset's stamps benchmark and its ImageNet stand-in, built once for this module's demo runs (each
    run then finds them built, as a user's second demo does)."""
    from keras_avloc.demo import build_data, build_standin

    data = tmp_path_factory.mktemp("tiny") / "stamps"
    settings = dict(PRESETS["tiny"], precision=None)
    summary = build_data(str(data), settings, 0, 2, speech=False, mosaic=False)
    build_standin(str(data), settings, summary["classes"], 0, None, 2)
    return data


@pytest.mark.long
@pytest.mark.xdist_group("tiny_demo")  # one worker builds the tiny benchmark and stand-in once
def test_tiny_demo_trains_the_default_methods_reports_them_with_baselines_and_resumes_with_ablations(tiny_data, tmp_path, capsys):
    out, data = tmp_path / "demo", tiny_data
    report_path = run_demo(str(out), str(data), preset="tiny", precision=None)
    report = open(report_path).read()
    for row in ("| LVS | stand-in |", "| EZ-VSL | stand-in |", "| AVGN | stand-in |",
                "| AVGN, predicted classes | stand-in |",
                "| centre prior | - |", "| random map | - |", "| objectness (stand-in ResNet-18) | - |",
                "| ground-truth box (the metric's ceiling) | - |"):
        assert row in report, f"{row} missing from the report"
    assert "## Generalisation (validation)" in report and "## Targets" in report
    # The second recipe and the listening control, with the baselines beside them.
    assert "## Out of the generator (test_ood)" in report and "## Listening control" in report
    assert "| centre prior |" in report.split("## Out of the generator")[1].split("## Listening")[0]
    results = json.loads((out / "results.json").read_text())
    # no default method asks for the speech stand-in or the sound and speech protocols
    assert results["speech_standin"] is None and "speech stand-in" not in report
    assert results["prompted"] == [] and "## Sound and speech" not in report
    rows = {(row["method"], row["init"]): row for row in results["results"]}
    test_records = json.loads((data / "test.json").read_text())
    assert len(test_records) == PRESETS["tiny"]["n_test"]
    mean_ciou, auc = centre_prior_reference(test_records)
    centre = rows[("centre prior", "-")]["test"]
    assert centre["mean_ciou"] == pytest.approx(mean_ciou, abs=1e-9) and centre["auc"] == pytest.approx(auc, abs=1e-9)
    ceiling = rows[("ground-truth box (the metric's ceiling)", "-")]["test"]
    assert ceiling["pointing_game"] == 1.0 and all(row["test"]["mean_ciou"] <= ceiling["mean_ciou"] + 1e-9
                                                   for row in results["results"])
    assert rows[("LVS", "stand-in")]["test_unseen"]["num_evaluated"] == PRESETS["tiny"]["n_test_unseen"]
    assert {item["method"] for item in results["generalisation"]} == {"LVS", "EZ-VSL", "AVGN"}
    assert {item["method"] for item in results["listening"]} == {"LVS", "EZ-VSL", "AVGN"}
    assert all(set(item) >= {"test", "test_ood"} and "margin_lost" in item["test_ood"] for item in results["listening"])
    assert results["test_ood"][0]["test_ood"]["num_evaluated"] == PRESETS["tiny"]["n_test_ood"]
    # the stand-in was trained and loaded: its weights are the LVS stand-in run's initial image weights
    assert (data / "standin" / "resnet18_w4.weights.h5").is_file() and results["standin"]["classes"] > 300
    state = json.loads((out / "lvs" / "train_state.json").read_text())
    ezvsl_state = json.loads((out / "ezvsl" / "train_state.json").read_text())
    assert state["settings"]["augment"]["ambience_probability"] == 0.5  # the demo's per-method augmentation
    assert state["settings"]["audio_level_db"] == -20.0
    assert ezvsl_state["settings"]["augment"]["ambience_probability"] == 0.0
    assert json.loads((out / "avgn" / "train_state.json").read_text())["settings"]["learning_rate"] == 6e-4
    assert ezvsl_state["settings"]["learning_rate"] == PRESETS["tiny"]["learning_rate"]
    assert "| LVS | scratch |" not in report and not (out / "lvs-scratch").exists()  # the ablations: on request
    figure = cv2.imread(str(out / "heatmaps.png"))
    assert figure.shape[0] == 3 * 192 and figure.shape[1] == 4 * 192  # one row per method, four test scenes

    # A re-run resumes: LVS and the stand-in are not trained again; with the ablations (--ablations) it adds LVS
    # from scratch, scored beside the stand-in run.
    capsys.readouterr()
    report = open(run_demo(str(out), str(data), preset="tiny", precision=None, methods=("lvs",), scratch=True)).read()
    assert capsys.readouterr().out.count("nothing to do") == 2
    assert "| LVS | stand-in |" in report and "| LVS | scratch |" in report
    assert state["settings"]["init_image_weights"] and not json.loads(
        (out / "lvs-scratch" / "train_state.json").read_text())["settings"]["init_image_weights"]


@pytest.mark.long
@pytest.mark.xdist_group("tiny_demo")  # one worker builds the tiny benchmark and stand-in once
def test_tiny_demo_trains_denseav_on_sound_and_speech(tiny_data, tmp_path):
    # the demo adds train_speech (sound and speech pairs) to the data (that it changes nothing the other runs were
    # trained or scored on is test_demo_refuses_runs_trained_on_other_data's)
    out, data = tmp_path / "demo", tiny_data
    report = open(run_demo(str(out), str(data), preset="tiny", precision=None, methods=("denseav",),
                           scratch=False)).read()
    assert "| DenseAV | stand-in |" in report and "| centre prior | - |" in report
    settings = json.loads((out / "denseav" / "train_state.json").read_text())["settings"]
    assert settings["split"] == "train+train_speech" and settings["clip_seconds"] == 2.0
    # cosine similarities at LVS's temperature, and the demo's audio augmentation with its masks scaled to the
    # 64-band log-mel (METHOD_TRAINING / METHOD_SETTINGS)
    assert settings["model_kwargs"]["norm_vectors"] and settings["model_kwargs"]["cal_init"] == pytest.approx(14.3)
    assert settings["augment"]["freq_mask_width"] == 6 and settings["augment"]["time_mask_width"] == 36
    assert settings["augment"]["gain_db"] == 6.0
    # its audio network starts from the speech stand-in, built once next to the data and named in the report
    assert settings["init_audio_weights"] and (data / "standin" / "speech_w4.weights.h5").is_file()
    assert "- speech stand-in: 6 spoken words" in report
    # scored on the sound and speech protocols too, beside the centre prior and the random map (no LVS ran here)
    section = report.split("## Sound and speech")[1].split("## Targets")[0]
    assert "| DenseAV |" in section and "| centre prior |" in section and "| random map |" in section
    prompted = json.loads((out / "results.json").read_text())["prompted"]
    assert [row["method"] for row in prompted] == ["DenseAV"]
    assert prompted[0]["test_speech"]["samples"] == PRESETS["tiny"]["n_test"]
    assert 0.0 <= prompted[0]["test_speech"]["disentanglement"]["pred_dis"] <= 1.0
    assert prompted[0]["test_speech_unseen"]["samples"] == PRESETS["tiny"]["n_test"] // 2
    assert len(json.loads((data / "train_speech.json").read_text())) == PRESETS["tiny"]["n_train"] // 2
    assert cv2.imread(str(out / "heatmaps.png")).shape[0] == 192


@pytest.mark.long
@pytest.mark.xdist_group("tiny_demo")  # one worker builds the tiny benchmark and stand-in once
def test_tiny_demo_trains_ier_on_csols_stage_one(tiny_data, tmp_path):
    out, data = tmp_path / "demo", tiny_data
    # IEr, then CSOL: IEr's stage one continues CSOL's stage one (trained for it first); the report scores both
    # stage ones (their demo_recipe["scored_stage"]), so the demo trains no stage two and builds no train_mosaic
    report = open(run_demo(str(out), str(data), preset="tiny", precision=None, methods=("ier", "csol"),
                           scratch=False)).read()
    assert "| IEr stage one | stand-in |" in report and "| CSOL stage one | stand-in |" in report
    stage_one = json.loads((out / "ier-stage1" / "train_state.json").read_text())
    assert stage_one["settings"]["method"] == "ier" and stage_one["settings"]["split"] == "train"
    assert stage_one["details"]["init_from_path"].endswith(os.path.join("csol-stage1", "model.keras"))
    assert json.loads((out / "csol-stage1" / "train_state.json").read_text())["settings"]["method"] == "csol"
    # csol/ and ier/ hold only the scored stage ones' evaluation, no stage-two model
    assert not (out / "csol" / "model.keras").exists() and not (out / "ier" / "model.keras").exists()
    assert (out / "csol" / "eval").is_dir() and not (out / "ier" / "train_state.json").exists()
    assert not (data / "train_mosaic.json").exists()


def test_demo_refuses_runs_trained_on_other_data(tmp_path):
    from keras_avloc.demo import check_runs_match_data

    out = tmp_path / "demo"
    summary = {"classes": ["cello", "frog"], "size": 64, "seed": 0, "splits": {"train": {"scenes": 8}}}
    (out / "lvs").mkdir(parents=True)
    (out / "lvs" / "train_state.json").write_text("{}")
    with pytest.raises(DemoError, match="rm -r .*--out"):  # runs from a demo that did not record its data
        check_runs_match_data(str(out), summary, ("lvs", "ezvsl"))
    (out / "lvs" / "train_state.json").unlink()
    check_runs_match_data(str(out), summary, ("lvs", "ezvsl"))
    check_runs_match_data(str(out), summary, ("lvs", "ezvsl"))  # same data: resuming is fine
    with pytest.raises(DemoError, match="other data"):
        check_runs_match_data(str(out), dict(summary, classes=["cello", "zebra"]), ("lvs",))
    # DenseAV's train_speech and CSOL / IEr's train_mosaic, added to the data later, change nothing the other runs
    # were trained or scored on, and the speech test splits are scored again on every run: the runs are not refused
    # (`avloc demo`, then `avloc demo --methods all` in the same folder, and back)
    (out / "lvs" / "train_state.json").write_text("{}")
    more = {"train_speech": {"scenes": 4}, "train_mosaic": {"scenes": 4}, "test_speech": {"scenes": 8},
            "test_speech_unseen": {"scenes": 4}}
    check_runs_match_data(str(out), dict(summary, splits={**summary["splits"], **more}), ("lvs", "denseav"))
    check_runs_match_data(str(out), summary, ("lvs",))
    with pytest.raises(DemoError, match="other data"):
        check_runs_match_data(str(out), dict(summary, splits={"train": {"scenes": 9}}), ("lvs",))


def test_demo_training_splits_follow_the_scored_stage_and_the_settings():
    from keras_avloc.demo import needed_splits, trained_stages, training_split

    # both stage ones are scored: no stage two is trained, so no train_mosaic is needed
    assert trained_stages("csol") == ("csol",) and trained_stages("ier") == ("ier",)
    assert trained_stages("lvs") == ("lvs",)
    assert needed_splits(("lvs", "csol", "ier", "denseav")) == {"train", "train_speech"}
    # a "split" in a method's training settings replaces its default
    preset = {"method_training": {"denseav": {"split": "train"}}}
    assert training_split("denseav") == "train+train_speech" and training_split("denseav", preset) == "train"
    assert needed_splits(("lvs", "denseav"), preset) == {"train"}


def test_the_sound_and_speech_protocols_score_denseav_and_lvs_beside_it_only():
    from keras_avloc.demo import prompted_methods, uses_speech_standin

    # DenseAV's recipe asks for them ("prompted"), LVS's is the reference ("prompted_reference") when both run
    assert prompted_methods(("lvs", "ezvsl", "avgn", "denseav")) == ("lvs", "denseav")
    assert prompted_methods(("denseav",)) == ("denseav",)
    assert prompted_methods(("lvs", "ezvsl", "avgn")) == ()
    assert uses_speech_standin("denseav") and not uses_speech_standin("lvs") and not uses_speech_standin("csol")


def test_full_preset_trains_ezvsl_at_its_official_rate_and_the_rest_as_the_default(monkeypatch):
    import keras_avloc.training
    from keras_avloc.demo import train_method

    calls = {}

    def fake_train(method, data_root, out_dir, **kwargs):
        calls[(method, out_dir)] = kwargs
        return None, None

    monkeypatch.setattr(keras_avloc.training, "train", fake_train)
    for preset in ("default", "full"):
        for method in ("lvs", "ezvsl", "avgn", "csol", "denseav"):
            train_method(method, "data", preset, PRESETS[preset], 0, None, None)
    # at 3e-4 EZ-VSL's map took the one-cell shortcut on the 65-class build (docs/demo.md, "The full preset")
    assert calls[("ezvsl", "full")]["learning_rate"] == 1e-4
    assert calls[("ezvsl", "default")]["learning_rate"] == 3e-4 and calls[("ezvsl", "default")]["epochs"] == 12
    for method in ("lvs", "avgn", "csol", "denseav"):
        full, default = calls[(method, "full")], calls[(method, "default")]
        assert full["learning_rate"] == default["learning_rate"] and full["augment"] == default["augment"]
        assert full["epochs"] == (default["epochs"] if method == "csol" else 12)
        assert full["clip_seconds"] == default["clip_seconds"]
        assert full["model_kwargs"] == default["model_kwargs"]  # no "full_settings": the default's settings
    # the 8-class demo's temperature and image dropout were not tried on 65 classes ("full_settings")
    assert calls[("ezvsl", "default")]["model_kwargs"] == {"backbone_kwargs": {"width": 16}, "image_layer4_stride": 1,
                                                           "tau": 0.05, "image_dropout": 0.5}
    assert calls[("ezvsl", "full")]["model_kwargs"] == {"backbone_kwargs": {"width": 16}, "image_layer4_stride": 1}
