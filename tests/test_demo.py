"""The README's first command, end to end on a tiny preset: stamps split → LVS + EZ-VSL → report."""

import json

from keras_avloc.demo import PRESETS, run_demo


def test_tiny_demo_writes_report_with_models_and_baselines_and_resumes(tmp_path, capsys):
    out, data = tmp_path / "demo", tmp_path / "stamps"
    report_path = run_demo(str(out), str(data), preset="tiny")
    report = open(report_path).read()
    for row in ("| LVS |", "| EZ-VSL |", "| centre prior |", "| random map |", "| objectness"):
        assert row in report, f"{row} missing from the report"
    results = json.loads((out / "results.json").read_text())["results"]
    for name, row in results.items():
        assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["ciou@0.5"] <= 1.0, name
    assert (out / "heatmaps.png").stat().st_size > 10_000
    assert (out / "lvs" / "model.keras").exists() and (out / "ezvsl" / "model.keras").exists()
    assert len(json.loads((data / "test.json").read_text())) == PRESETS["tiny"]["n_test"]

    capsys.readouterr()
    run_demo(str(out), str(data), preset="tiny")  # a re-run resumes: nothing is trained again
    assert capsys.readouterr().out.count("nothing to do") == 2


def test_demo_refuses_runs_trained_on_other_data(tmp_path):
    import pytest

    from keras_avloc.demo import check_runs_match_data

    out = tmp_path / "demo"
    summary = {"classes": ["cello", "frog"], "size": 64, "seed": 0, "splits": {"train": {"scenes": 8}}}
    (out / "lvs").mkdir(parents=True)
    (out / "lvs" / "train_state.json").write_text("{}")
    with pytest.raises(FileExistsError, match="rm -r .*--out"):  # runs from a demo that did not record its data
        check_runs_match_data(str(out), summary, ("lvs", "ezvsl"))
    (out / "lvs" / "train_state.json").unlink()
    check_runs_match_data(str(out), summary, ("lvs", "ezvsl"))
    check_runs_match_data(str(out), summary, ("lvs", "ezvsl"))  # same data: resuming is fine
    with pytest.raises(FileExistsError, match="other data"):
        check_runs_match_data(str(out), dict(summary, classes=["cello", "zebra"]), ("lvs",))
