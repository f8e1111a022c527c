"""Executors `ray` (each stage a Ray task, on a cluster or a local one) and `slurm` (each stage a Slurm job,
through submitit), with per-stage resources. Both are optional installs: ``pip install 'nt-harness[cluster]'``;
the error for a missing one says so when the executor runs, so listing plugins never needs them."""

from __future__ import annotations

import nt_harness
from nt_cluster.ray_executor import RayExecutor
from nt_cluster.slurm_executor import SlurmExecutor


@nt_harness.hookimpl
def register_executors(register):
    register(RayExecutor)
    register(SlurmExecutor)
