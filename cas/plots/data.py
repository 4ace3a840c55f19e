"""Plot data files: parsing them, and finding the rows (datapoints) inside.

A plot's data is a JSON, YAML, CSV or TSV file, or an image. As in DVC
(dvc/repo/plots `parse`, dvc/render/converter/vega.py `get_datapoints`):

- CSV and TSV rows are mappings of the header's names to the cells *as text*
  (`"0.25"`, not 0.25); Vega-Lite reads quantitative fields from text. With
  `header: false` the columns are named `0`, `1`, ...
- In JSON and YAML, every list of mappings that share one set of keys is a table;
  several such lists (at any depth of mappings) are merged row by row.
- Images (.jpg .jpeg .gif .png .svg) are kept as bytes.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from typing import Any, Iterator

from cas.core.errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".gif", ".png", ".svg"})
DATA_EXTENSIONS = frozenset({".json", ".yaml", ".yml", ".csv", ".tsv"})
MAX_DATA_SIZE = 256 * 1024 * 1024  # bytes: a plot file larger than this is not read
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".png": "image/png",
        ".svg": "image/svg+xml"}


class PlotDataError(UsageError):
    """A plot's data file cannot be used: unknown type, not parseable, a missing field."""


def extension(path: str) -> str:
    return posixpath.splitext(path)[1].lower()


def is_image(path: str) -> bool:
    return extension(path) in IMAGE_EXTENSIONS


def parse(path: str, data: bytes, *, header: bool = True) -> Any:
    """The content of plot file `path`: parsed JSON/YAML, a list of row mappings for
    CSV/TSV, or the bytes of an image.

    Raises:
        PlotDataError: an unsupported extension, bad UTF-8, or a syntax error.
    """
    ext = extension(path)
    if ext in IMAGE_EXTENSIONS:
        return data
    if ext not in DATA_EXTENSIONS:
        raise PlotDataError(f"'{path}' - file type error: only JSON, YAML, CSV and TSV "
                            "formats are supported", path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlotDataError(f"'{path}' is not UTF-8", path=path) from None
    if ext in (".csv", ".tsv"):
        return load_sv(text, delimiter="\t" if ext == ".tsv" else ",", header=header)
    try:
        if ext == ".json":
            return json.loads(text)
        from ruamel.yaml import YAML
        return YAML(typ="safe", pure=True).load(text)
    except Exception as exc:  # noqa: BLE001 - any parser error means the same to the user
        raise PlotDataError(f"'{path}' cannot be parsed: {str(exc).splitlines()[0]}", path=path) from None


def load_sv(text: str, *, delimiter: str, header: bool = True) -> list[dict[str, str]]:
    """Rows of a CSV/TSV text as mappings (values are the cells' text)."""
    if header:
        return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))
    first = next(csv.reader(io.StringIO(text), delimiter=delimiter), [])
    names = [str(i) for i in range(len(first))]
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter, fieldnames=names))


def lists(blob: Any) -> Iterator[list[Any]]:
    """Every list in `blob` reached through mappings only (the blob itself if a list)."""
    if isinstance(blob, list):
        yield blob
    elif isinstance(blob, dict):
        for value in blob.values():
            if isinstance(value, dict):
                yield from lists(value)
            elif isinstance(value, list):
                yield value


def is_table(rows: list[Any]) -> bool:
    """A non-empty list of mappings that all have the first one's keys and no others."""
    if not rows or not all(isinstance(r, dict) for r in rows):
        return False
    keys = set(rows[0])
    return all(set(r) <= keys for r in rows) and keys == {k for r in rows for k in r}


def datapoints(content: Any) -> list[dict[str, Any]]:
    """The rows of a parsed data file: its tables merged index by index."""
    out: list[dict[str, Any]] = []
    for rows in lists(content):
        if is_table(rows):
            for i, row in enumerate(rows):
                if len(out) <= i:
                    out.append({})
                out[i].update(row)
    return out


def last_field(content: Any) -> str | None:
    """The last key of the first row of the first list of mappings (DVC's guess of `y`)."""
    for rows in lists(content):
        if rows and all(isinstance(r, dict) for r in rows) and rows[0]:
            return list(rows[0])[-1]
    return None


__all__ = ["IMAGE_EXTENSIONS", "DATA_EXTENSIONS", "MIME", "PlotDataError", "extension", "is_image",
           "parse", "load_sv", "lists", "is_table", "datapoints", "last_field"]
