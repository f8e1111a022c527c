"""Resumable batch runs: each finished batch is a Parquet shard in the stage's scratch folder, so a run
killed after batch k redoes only the batches after k. Batches are fixed before the run starts and each
is seeded from its own index, so a resumed run writes exactly what an uninterrupted one would."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq


def shard_path(scratch: Path, i: int) -> Path:
    """Where batch i's shard lives (a data-parallel caller watches these appear)."""
    return scratch / f"batch-{i:06d}.parquet"


def read_shard(path: Path, schema: pa.Schema) -> pa.Table | None:
    """The shard's rows, or None when it is missing or was written with another schema."""
    try:
        return pq.read_table(path, schema=schema)
    except (OSError, ValueError, pa.ArrowException):
        return None


def run_sharded(
    batches: list[list[str]],
    scratch: Path,
    run_batch: Callable[[int], pa.Table],
    schema: pa.Schema,
    advance: Callable[..., None] = lambda n=1, info=None: None,
    redo: Callable[[pa.Table], bool] | None = None,
    plan: Callable[[dict[int, pa.Table | None]], None] | None = None,
    only: set[int] | None = None,
) -> tuple[pa.Table, int]:
    """Run ``run_batch(i)`` for every batch whose shard is missing; return all rows in batch order and how
    many batches were reused. ``batches[i]`` lists the ``trace_id`` values batch i must produce: a shard
    holding other ids (left by different batching) is redone, not trusted.

    ``redo(shard)`` marks a finished shard to run again (an API teacher's requests that failed after their
    retries). ``plan(todo)`` is called once before any batch runs with {batch index: its shard when it is
    being redone, else None}, so a caller can start every request at once and keep a redone shard's good
    rows.

    ``only`` limits the run to those batch indices (a data-parallel replica's share of a folder that several
    processes fill at once): the others are neither read nor run, and the rows and the reused count returned
    are those of ``only``'s batches."""
    scratch.mkdir(parents=True, exist_ok=True)
    mine = [i for i in range(len(batches)) if only is None or i in only]
    tables: dict[int, pa.Table | None] = {}
    todo: dict[int, pa.Table | None] = {}
    for i in mine:
        table = read_shard(shard_path(scratch, i), schema)
        if table is None or table.column("trace_id").to_pylist() != batches[i]:
            todo[i] = None
            table = None
        elif redo is not None and redo(table):
            todo[i] = table
            table = None
        tables[i] = table
    if plan is not None:
        plan(todo)
    for i in mine:
        if i in todo:
            table = run_batch(i).cast(schema)
            shard = shard_path(scratch, i)
            tmp = shard.with_name(shard.name + ".tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, shard)
            tables[i] = table
        advance(len(batches[i]))
    done = [tables[i] for i in mine]
    return pa.concat_tables(done) if done else schema.empty_table(), len(mine) - len(todo)
