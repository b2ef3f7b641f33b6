"""Reading ground-truth labels for a folder of images from a CSV file.

The CSV has a header row, a path column and one or more label columns, e.g.::

    path,group_id
    site/products/a2g7a/A2G7A.jpg,a2g7a

    filename,group_id
    ukbench00000.jpg,0

    path,split,fine_id,fine_label,coarse_id,coarse_label
    dataset/train/Fruit/Apple/Golden-Delicious/Golden-Delicious_001.jpg,train,0,Golden-Delicious,0,Apple

A path is relative to the image folder or to the CSV's own folder; a bare file name may
also name a file directly in the image folder.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Path column names, in order of preference, when none is given.
PATH_COLUMNS = ("path", "filename", "file")


@dataclass(frozen=True)
class Labels:
    """The labels of one CSV file."""

    csv_path: Path
    #: The label columns read, in the order asked for.
    columns: tuple[str, ...]
    #: Resolved path of each existing labelled file -> {label column: value}.
    by_path: dict[Path, dict[str, str]]
    #: Path cells (as written) naming no existing file -> {label column: value}.
    unresolved: dict[str, dict[str, str]]

    def column(self, name: str | None = None) -> dict[Path, str]:
        """Resolved path -> the value of label column `name` (default: the first column read)."""
        key = self.columns[0] if name is None else name
        if key not in self.columns:
            raise KeyError(f"{self.csv_path}: label column {key!r} was not read (read {list(self.columns)})")
        return {path: values[key] for path, values in self.by_path.items()}


def read_labels(
    csv_path: Path,
    folder: Path | None = None,
    *,
    path_column: str | None = None,
    label_columns: Sequence[str] | None = None,
) -> Labels:
    """Read the labels in `csv_path` for the images under `folder`.

    `path_column` defaults to the first of :data:`PATH_COLUMNS` in the header, else the
    first column. `label_columns` default to ``fine_id`` and ``coarse_id`` when both are
    present, else ``group_id``, else the first column after the path column. A path cell
    is looked up as `folder`/cell, then next to the CSV, then as `folder`/file name; the
    first existing file wins. If a file is listed twice, its last row wins.

    Raises ValueError when the CSV has no rows or lacks a named column.
    """
    csv_path = Path(csv_path)
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    if not rows:
        raise ValueError(f"{csv_path}: no rows")
    if path_column is None:
        path_column = next((c for c in PATH_COLUMNS if c in fields), fields[0])
    if label_columns is None:
        if "fine_id" in fields and "coarse_id" in fields:
            label_columns = ["fine_id", "coarse_id"]
        elif "group_id" in fields:
            label_columns = ["group_id"]
        else:
            others = [c for c in fields if c != path_column]
            if not others:
                raise ValueError(f"{csv_path}: no label column (has {fields})")
            label_columns = others[:1]
    missing = [c for c in (path_column, *label_columns) if c not in fields]
    if missing:
        raise ValueError(f"{csv_path}: no column {missing[0]!r} (has {fields})")

    bases = [folder, csv_path.parent] if folder is not None else [csv_path.parent]
    by_path: dict[Path, dict[str, str]] = {}
    unresolved: dict[str, dict[str, str]] = {}
    for row in rows:
        cell = row[path_column]
        values = {c: row[c] for c in label_columns}
        candidates = [base / cell for base in bases]
        if folder is not None:
            candidates.append(folder / Path(cell).name)
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            unresolved[cell] = values
        else:
            by_path[found.resolve()] = values
    return Labels(csv_path, tuple(label_columns), by_path, unresolved)
