"""The notebooks run headless (tiny fresh models on generated toy data)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name, tmp_path, monkeypatch, variables):
    """Executes a notebook with its AVLOC_* variables unset; returns (printed text, number of images)."""
    for variable in variables:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = "".join(output.get("text", "") for cell in cells for output in cell.outputs)
    images = sum("image/png" in output.get("data", {}) for cell in cells for output in cell.get("outputs", []))
    return text, images


def test_trimap_explorer_runs(tmp_path, monkeypatch):
    outputs, images = _run("trimap_explorer.ipynb", tmp_path, monkeypatch,
                           ("AVLOC_MODEL", "AVLOC_DATA", "AVLOC_SPLIT", "AVLOC_IMAGE_SIZE"))
    assert "batch: loss" in outputs and "trimap: positive" in outputs
    assert images >= 3


@pytest.mark.long
def test_denseav_heads_notebook_runs(tmp_path, monkeypatch):
    outputs, images = _run("denseav_heads.ipynb", tmp_path, monkeypatch, ("AVLOC_MODEL", "AVLOC_DATA"))
    assert "DenseAV with 2 heads" in outputs and "per-head max over space" in outputs and "done: heads over time" in outputs
    assert images >= 3


def test_sphere_explorer_runs(tmp_path, monkeypatch):
    outputs, images = _run("sphere_explorer.ipynb", tmp_path, monkeypatch, ("AVLOC_MODEL", "AVLOC_DATA"))
    assert "AVSA (width 4" in outputs and "cardioid beam energy" in outputs and "done: sweep map (3, 24)" in outputs
    assert images >= 2


@pytest.mark.long
def test_interference_explorer_runs(tmp_path, monkeypatch):
    outputs, images = _run("interference_explorer.ipynb", tmp_path, monkeypatch, ("AVLOC_MODEL", "AVLOC_DATA"))
    assert "IErStageTwo (4 clusters, mask image_max)" in outputs and "(combined): sounding" in outputs
    assert "p^av" in outputs and "done: class maps (4, 224, 224) for 5 filter settings" in outputs
    assert images >= 3
