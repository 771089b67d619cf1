"""Run the workshop notebooks headless (as CI does) and keep them stripped of outputs in git."""

from __future__ import annotations

import time
from pathlib import Path


def execute(path: str | Path, timeout: int = 900, save_to: str | Path | None = None) -> dict:
    """Run every cell of the notebook at `path` in a fresh kernel, in the notebook's own folder.

    The notebook file itself is left as it is; `save_to` keeps the executed copy (with its outputs).

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised; the message holds its traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    started = time.monotonic()
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent.resolve())}},
    )
    try:
        client.execute()
    finally:
        if save_to is not None:
            Path(save_to).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, save_to)
    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    return {"notebook": path.name, "code_cells": len(code_cells), "seconds": round(time.monotonic() - started, 1)}


def strip(path: str | Path) -> bool:
    """Remove outputs and execution counts from the notebook at `path`; returns whether it changed."""
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    changed = False
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs, cell.execution_count, changed = [], None, True
        if cell.metadata.pop("execution", None) is not None:
            changed = True
    if changed:
        nbformat.write(notebook, path)
    return changed


def has_outputs(notebook: dict) -> bool:
    """Whether a notebook (its JSON, as a dict) carries outputs or execution counts."""
    return any(
        cell.get("outputs") or cell.get("execution_count") is not None
        for cell in notebook.get("cells", [])
        if cell.get("cell_type") == "code"
    )
