"""Rows of a local data file (JSON lines or Parquet) or a hub dataset, each with a ``where`` that names
the file and row, so a source's error about a bad row says exactly where it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nt_harness.recipes import SpecError


class MalformedRow(SpecError):
    """A row does not fit the schema its source expects; the message names the file and row."""


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(row number, row) from a .jsonl/.json (JSON lines) or .parquet file; rows count from 1."""
    if path.suffix == ".parquet":  # batch by batch: released trace sets run to gigabytes
        try:
            parquet = pq.ParquetFile(path)
        except pa.ArrowException as e:
            raise MalformedRow(f"{path}: not a readable Parquet file ({e})") from None
        i = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                i += 1
                yield i, row
        return
    with path.open("rb") as f:  # bytes, decoded line by line, so a bad byte is named with its row
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise MalformedRow(f"{path}: row {i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at position "
                                   f"{e.start} of the line)") from None
            if not line.strip():
                continue
            try:
                yield i, json.loads(line)
            except json.JSONDecodeError as e:
                raise MalformedRow(f"{path}: row {i}: not valid JSON ({e.msg})") from None


def rows(source: str, name: str, split: str = "train", config: str | None = None) -> Iterator[tuple[str, dict]]:
    """(where, row) from a local file; else through ``datasets.load_dataset`` from a local folder (a clone of
    the dataset's hub repo, for machines behind a firewall: its README's configs apply) or a hub dataset id
    (when a hub is reachable, or cached)."""
    path = Path(source).expanduser()
    if path.is_file():
        yield from ((f"{path}: row {i}", row) for i, row in read_rows(path))
        return
    hub_id = "/" in source.strip("/") and not path.is_absolute()  # e.g. GAIR/LIMO
    if not path.is_dir() and (path.suffix in (".jsonl", ".json", ".parquet") or not hub_id):
        raise SpecError(f"source {name}: no such file {path} (give source.path=FILE.jsonl|.parquet)")
    from datasets import load_dataset

    where = str(path) if path.is_dir() else source
    for i, row in enumerate(load_dataset(where, config, split=split), 1):
        yield f"{where}[{config or 'default'}/{split}]: row {i}", row
