"""Annotation parsers on small fixtures in the public formats, plus the real files when present."""

import json

import numpy as np
import pytest

from keras_avloc.data import annotations
from keras_avloc.metrics.groundtruth import box_gt_map, flickr_gt_map
from shared_data import SHARED, shared_path

REAL = SHARED / "annotations"
PLACEHOLDER = -2.8823037615171176e16


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_vggss_json_clamps_placeholder_coordinates(tmp_path):
    entries = [
        {"file": "a_000001", "class": "dog barking", "bbox": [[0.1, 0.2, 0.5, 0.6]]},
        {"file": "b_000002", "class": "cat", "bbox": [[0.3, 0.4, PLACEHOLDER, 0.9], [0.0, 0.0, 1.0, 1.0]]},
    ]
    records = annotations.read_vggss_json(_write(tmp_path / "vggss.json", json.dumps(entries)))
    assert [r["file"] for r in records] == ["a_000001", "b_000002"]
    np.testing.assert_allclose(records[0]["boxes"], [[0.1, 0.2, 0.5, 0.6]], atol=1e-7)
    np.testing.assert_allclose(records[1]["boxes"], [[0.3, 0.4, 0.0, 0.9], [0.0, 0.0, 1.0, 1.0]], atol=1e-7)
    assert [r["clamped"] for r in records] == [0, 1]


def test_flickr_xml_boxes_and_consensus_map(tmp_path):
    xml = """<annotation><filename>123.jpg</filename>
      <object><bbox><label>1</label><xmin>0</xmin><ymin>0</ymin><xmax>128</xmax><ymax>128</ymax></bbox></object>
      <object><bbox><label>2</label><xmin>64</xmin><ymin>64</ymin><xmax>192</xmax><ymax>192</ymax></bbox></object>
      <object><bndbox><xmin>64</xmin><ymin>64</ymin><xmax>128</xmax><ymax>128</ymax></bndbox></object>
    </annotation>"""
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    _write(xml_dir / "123.xml", xml)
    boxes = annotations.read_flickr_xml(str(xml_dir / "123.xml"))
    np.testing.assert_array_equal(boxes, [[0, 0, 128, 128], [64, 64, 192, 192], [64, 64, 128, 128]])
    records = annotations.flickr_records(str(xml_dir))
    assert records[0]["file"] == "123" and records[0]["gt"] == "consensus"
    gt = flickr_gt_map(records[0]["boxes"], 224)
    # Independent reference: pixels scaled 224/256 -> [0,112), [56,168), [56,112); sum / 2 capped at 1.
    assert gt[10, 10] == 0.5  # one annotator
    assert gt[60, 60] == 1.0  # three annotators, capped
    assert gt[120, 120] == 0.5
    assert gt[200, 200] == 0.0
    assert gt[111, 111] == 1.0 and gt[112, 112] == 0.5


def test_box_map_union_uses_truncated_pixel_edges():
    gt = box_gt_map(np.array([[0.1, 0.2, 0.5, 0.6], [0.4, 0.5, 0.9, 0.95]]), 10)
    reference = np.zeros([10, 10])
    reference[2:6, 1:5] = 1
    reference[5:9, 4:9] = 1
    np.testing.assert_array_equal(gt, reference)


def test_music_solo_and_duet_are_xywh(tmp_path):
    solo = [{"file": "s1", "class": "cello", "bbox": [0.25, 0.1, 0.5, 0.8]}]
    duet = [{"file": "d1", "class_src1": "cello", "bbox_src1": [0.1, 0.2, 0.3, 0.4],
             "class_src2": "flute", "bbox_src2": [0.5, 0.5, 0.6, 0.2]}]
    records = annotations.read_music_solo_json(_write(tmp_path / "solo.json", json.dumps(solo)))
    np.testing.assert_allclose(records[0]["boxes"], [[0.25, 0.1, 0.75, 0.9]], atol=1e-7)
    records = annotations.read_music_duet_json(_write(tmp_path / "duet.json", json.dumps(duet)))
    assert [s["class"] for s in records[0]["sources"]] == ["cello", "flute"]
    np.testing.assert_allclose(records[0]["sources"][0]["boxes"], [[0.1, 0.2, 0.4, 0.6]], atol=1e-7)
    np.testing.assert_allclose(records[0]["sources"][1]["boxes"], [[0.5, 0.5, 1.0, 0.7]], atol=1e-7)  # clamped
    with pytest.raises(annotations.AnnotationError, match="bbox_src2"):
        annotations.read_music_duet_json(_write(tmp_path / "bad.json", json.dumps([{"file": "x", "class_src1": "a",
                                                                                     "bbox_src1": [0, 0, 1, 1]}])))


def test_duet_csv_and_id_lists(tmp_path):
    pairs = annotations.read_vggsound_duet_csv(_write(tmp_path / "duet.csv", "a_1,dog,b_2,cat\nc_3,cow,d_4,owl\n"))
    assert pairs[1] == {"file1": "c_3", "class1": "cow", "file2": "d_4", "class2": "owl"}
    assert annotations.read_id_list(_write(tmp_path / "flickr.csv", "100,202\n101,0\n")) == ["100", "101"]
    (tmp_path / "vggss.csv").write_bytes(b"x_000001\r\ny_000002\r\n\r\n")
    assert annotations.read_id_list(str(tmp_path / "vggss.csv")) == ["x_000001", "y_000002"]
    with pytest.raises(annotations.AnnotationError, match="line 1 has 3 fields"):
        annotations.read_vggsound_duet_csv(_write(tmp_path / "bad.csv", "a,b,c\n"))


def test_load_split_contract_layout(tmp_path):
    entries = [
        {"file": "one", "class": "dog", "bbox": [[0.1, 0.1, 0.4, 0.5]], "mask": "masks/one.png"},
        {"file": "mix", "class": "dog", "bbox": [[0, 0, 0.5, 1]], "kind": "mixture",
         "sources": [{"class": "dog", "bbox": [[0, 0, 0.5, 1]], "audio": "audio/dog.wav"},
                     {"class": "cat", "bbox": [[0.5, 0, 1, 1.5]], "mask": "masks/cat.png"}]},
        {"file": "silent", "class": "", "bbox": [], "kind": "silent"},
    ]
    _write(tmp_path / "test.json", json.dumps(entries))
    records = annotations.load_split(str(tmp_path), "test")
    assert [r["file"] for r in records] == ["one", "mix", "silent"]
    assert records[0]["mask"] == str(tmp_path / "masks" / "one.png")
    assert records[0]["image"] == str(tmp_path / "frames" / "one.jpg")
    assert records[0]["audio"] == str(tmp_path / "audio" / "one.wav")
    assert records[1]["kind"] == "mixture" and records[1]["sources"][1]["class"] == "cat"
    np.testing.assert_allclose(records[1]["sources"][1]["boxes"], [[0.5, 0, 1, 1]])
    assert records[1]["clamped"] == 1
    assert records[2]["boxes"].shape == (0, 4) and records[2]["kind"] == "silent"
    assert annotations.class_names(str(tmp_path)) == ["cat", "dog"]
    annotations.write_split(records, str(tmp_path / "copy.json"))
    again = annotations.load_split(str(tmp_path), "copy")
    np.testing.assert_allclose(again[1]["sources"][1]["boxes"], records[1]["sources"][1]["boxes"])
    assert again[2]["kind"] == "silent"
    assert again[0]["mask"] == records[0]["mask"] and again[1]["sources"][1]["mask"] == records[1]["sources"][1]["mask"]
    assert json.loads((tmp_path / "copy.json").read_text())[0]["mask"] == "masks/one.png"  # relative to the root
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(annotations.AnnotationError, match="outside"):
        annotations.write_split(records, str(other / "test.json"))  # its masks would not be inside that root


def test_load_split_flat_folder_and_missing_split(tmp_path):
    for key in ("01", "02"):
        (tmp_path / f"image_{key}.jpg").write_bytes(b"")
        (tmp_path / f"audio_{key}.wav").write_bytes(b"")
    records = annotations.load_split(str(tmp_path), "test")
    assert [r["file"] for r in records] == ["01", "02"]
    assert records[1]["audio"] == str(tmp_path / "audio_02.wav") and records[1]["class"] == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(annotations.AnnotationError, match=r"val\.json: no such split file"):
        annotations.load_split(str(empty), "val")
    _write(empty / "val.json", "{not json")
    with pytest.raises(annotations.AnnotationError, match="not valid JSON"):
        annotations.load_split(str(empty), "val")


def test_real_annotation_files_parse_with_published_counts():
    shared_path("annotations")
    vggss = annotations.read_vggss_json(str(REAL / "vggss.json"))
    assert len(vggss) == 5158
    assert sum(len(r["boxes"]) for r in vggss) == 5941
    assert sum(r["clamped"] for r in vggss) == 14  # 14 placeholder coordinates in 12 entries
    assert sum(r["clamped"] > 0 for r in vggss) == 12
    assert len({r["class"] for r in vggss}) == 221
    assert all(((r["boxes"] >= 0) & (r["boxes"] <= 1)).all() for r in vggss)
    test_ids = annotations.read_id_list(str(REAL / "vggss_test.csv"))
    assert len(test_ids) == 5158 and set(test_ids) == {r["file"] for r in vggss}
    assert len(annotations.read_id_list(str(REAL / "flickr_test.csv"))) == 249
    duet = annotations.read_vggsound_duet_csv(str(REAL / "vggsound_duet_test.csv"))
    assert len(duet) == 5158 and all(p["class1"] != p["class2"] for p in duet[:50])
    solo = annotations.read_music_solo_json(str(REAL / "music_solo.json"))
    assert len(solo) == 2124 and len({r["class"] for r in solo}) == 7
    assert sum(r["clamped"] for r in solo) == 0  # x + w and y + h stay inside the frame: the format is xywh
    music_duet = annotations.read_music_duet_json(str(REAL / "music_duet.json"))
    assert len(music_duet) == 1020 and all(len(r["sources"]) == 2 for r in music_duet)


def test_nonsounding_pairs_of_the_real_extended_lists_and_bad_rows(tmp_path):
    from keras_avloc.data.protocols import read_nonsounding_pairs

    shared_path("annotations")
    flickr = read_nonsounding_pairs(str(REAL / "extended_flickr" / "flickr_test_plus_silent.csv"))
    flickr_ids = annotations.read_id_list(str(REAL / "extended_flickr" / "flickr_test.csv"))
    assert len(flickr) == 250 and sorted(p["video"] for p in flickr) == sorted(flickr_ids)
    assert all(p["audio"] != p["video"] and p["audio"] in set(flickr_ids) for p in flickr)
    vggss = read_nonsounding_pairs(str(REAL / "extended_vggss" / "vggss_test_plus_silent.csv"))
    test_ids = set(annotations.read_id_list(str(REAL / "vggss_test.csv")))
    assert len(vggss) == 5158 and len({p["video"] for p in vggss}) == 5158
    own_audio = [p for p in vggss if p["video"] == p["audio"]]
    assert len(own_audio) == 379 and not {p["video"] for p in own_audio} & test_ids
    assert sum(p["video"] in test_ids and p["audio"] in test_ids for p in vggss) == 4779

    good = tmp_path / "list.csv"
    good.write_text("a,b,non-sounding\r\nc,d,sounding\r\n\r\n")  # no header; another label is left out
    assert read_nonsounding_pairs(str(good)) == [{"video": "a", "audio": "b", "label": "non-sounding"}]
    bad = tmp_path / "bad.csv"
    bad.write_text("video,audio,label\na,b,non-sounding\nc,non-sounding\n")
    with pytest.raises(annotations.AnnotationError, match=r"bad\.csv: line 3 has 2 fields"):
        read_nonsounding_pairs(str(bad))
    with pytest.raises(annotations.AnnotationError, match="file not found"):
        read_nonsounding_pairs(str(tmp_path / "missing.csv"))
