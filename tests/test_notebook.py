"""The trimap explorer notebook runs headless (tiny fresh model on generated toy data)."""

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "trimap_explorer.ipynb"


def test_trimap_explorer_runs(tmp_path, monkeypatch):
    for name in ("AVLOC_MODEL", "AVLOC_DATA", "AVLOC_SPLIT", "AVLOC_IMAGE_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "batch: loss" in outputs and "trimap: positive" in outputs
    images = sum("image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", []))
    assert images >= 3
