"""The `sft` trainer as a script for ``accelerate launch``: one process per GPU (or CPU rank), any number of
machines. The train stage starts it itself when ``num_processes`` > 1; by hand, for a multi-node run:

    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_machines 2 --machine_rank 0 \\
        --main_process_ip HOST0 --main_process_port 29500 -m nt_sft.launch \\
        --examples examples.parquet --student /models/Qwen2.5-7B-Instruct --out run/out --scratch run/scratch \\
        --settings '{"lr": 1e-5, "max_length": 16384, "packing": true}' --stats run/stats.json

``--examples`` is a parquet file of nt_harness.records.EXAMPLES rows. ``--settings`` is JSON text or a
JSON file of ``sft`` settings. The main process writes the model into ``--out``/model and the run's
statistics into ``--stats``; checkpoints go to ``--scratch``/checkpoint, and a relaunch resumes from them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    import pyarrow.parquet as pq

    from nt_harness.components import Context
    from nt_sft.trainer import SFTTrainer, train

    parser = argparse.ArgumentParser(description="the sft trainer, one process of an accelerate launch")
    parser.add_argument("--examples", required=True, help="parquet file of EXAMPLES rows")
    parser.add_argument("--student", required=True, help="a local Hugging Face model folder")
    parser.add_argument("--out", required=True, help="the model is written to OUT/model")
    parser.add_argument("--scratch", help="checkpoints (resume); default: OUT/../scratch")
    parser.add_argument("--settings", default="{}", help="sft settings: JSON text or a .json file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--stats", help="write the run's statistics here (JSON)")
    args = parser.parse_args(argv)

    text = Path(args.settings).read_text() if args.settings.endswith(".json") else args.settings
    # this process is already one of the launched ones; grad_accum was derived from global_batch by the parent
    settings = {**json.loads(text), "num_processes": 1, "global_batch": None}
    settings = SFTTrainer.Settings(**settings)
    out = Path(args.out)
    scratch = Path(args.scratch) if args.scratch else out.parent / "scratch"
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    ctx = Context(out=out, scratch=scratch, workdir=scratch, threads=args.threads)
    stats = train(pq.read_table(args.examples), args.student, ctx, settings)

    from accelerate import PartialState

    if PartialState().is_main_process and args.stats:
        Path(args.stats).write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
