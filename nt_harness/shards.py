"""Resumable batch runs: each finished batch is a Parquet shard in the stage's scratch folder, so a run
killed after batch k redoes only the batches after k. Batches are fixed before the run starts and each
is seeded from its own index, so a resumed run writes exactly what an uninterrupted one would."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq


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
) -> tuple[pa.Table, int]:
    """Run ``run_batch(i)`` for every batch whose shard is missing; return all rows in batch order and how
    many batches were reused. ``batches[i]`` lists the ``trace_id`` values batch i must produce: a shard
    holding other ids (left by different batching) is redone, not trusted."""
    scratch.mkdir(parents=True, exist_ok=True)
    tables, reused = [], 0
    for i, ids in enumerate(batches):
        shard = scratch / f"batch-{i:06d}.parquet"
        table = read_shard(shard, schema)
        if table is not None and table.column("trace_id").to_pylist() == ids:
            reused += 1
        else:
            table = run_batch(i).cast(schema)
            tmp = shard.with_name(shard.name + ".tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, shard)
        tables.append(table)
        advance(len(ids))
    return pa.concat_tables(tables) if tables else schema.empty_table(), reused
