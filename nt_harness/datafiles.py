"""Rows of a local data file (JSON lines or Parquet) or a hub dataset, each with a ``where`` that names
the file and row, so a source's error about a bad row says exactly where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow.parquet as pq

from nt_harness.recipes import SpecError


class MalformedRow(SpecError):
    """A row does not fit the schema its source expects; the message names the file and row."""


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(row number, row) from a .jsonl/.json (JSON lines) or .parquet file; rows count from 1."""
    if path.suffix == ".parquet":  # batch by batch: released trace sets run to gigabytes
        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                i += 1
                yield i, row
        return
    with path.open() as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise MalformedRow(f"{path}: row {i}: not valid JSON ({e.msg})") from None


def rows(source: str, name: str, split: str = "train", config: str | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) from a local file, else from a hub dataset id (only when a hub is reachable)."""
    path = Path(source).expanduser()
    if path.exists():
        yield from ((f"{path}: row {i}", row) for i, row in read_rows(path))
        return
    hub_id = "/" in source.strip("/") and not path.is_absolute()  # e.g. GAIR/LIMO
    if path.suffix in (".jsonl", ".json", ".parquet") or not hub_id:
        raise SpecError(f"source {name}: no such file {path} (give source.path=FILE.jsonl|.parquet)")
    from datasets import load_dataset

    for i, row in enumerate(load_dataset(source, config, split=split), 1):
        yield f"{source}[{split}]: row {i}", row
