"""The `slurm` executor: each node one Slurm job through submitit, submitted once the jobs of the nodes it reads
have finished.

Why wait on the jobs here rather than submit everything at once with ``--dependency=afterok``: it works the
same on every submitit executor (``cluster = "local"`` runs the jobs as local processes: a laptop, the
tests), a failed job stops the study at once with its error instead of leaving its dependents pending forever
(DependencyNeverSatisfied), and a stage that another command stored meanwhile is skipped. The cost: a stage
enters the queue only when its inputs are built. This command waits for the leaderboard anyway."""

from __future__ import annotations

import re
import time
from pathlib import Path

from pydantic import Field, field_validator

from nt_harness import UserError
from nt_harness.components import Settings
from nt_harness.executors import Executor, Study, run_node
from nt_harness.pipeline import Node
from nt_cluster.common import check_stages, needs, one_line

SUBMITIT_OWN = ("output", "error", "open-mode", "signal", "wckey")  # in every job; not shown by --dry-run


class SlurmStage(Settings):
    """A stage's job: sbatch's --partition, --gpus-per-node, --cpus-per-task, --time, --mem; unset: the
    executor's own value of that key, else Slurm's default."""

    partition: str | None = None
    gpus: int | None = Field(None, ge=0, description="GPUs per node")
    cpus: int | None = Field(None, ge=1, description="CPUs per task; also the stage's torch threads")
    time: str | int | None = Field(None, description="Slurm's time limit: minutes, H:MM:SS or D-HH:MM:SS")
    mem: str | None = Field(None, description="memory per node, Slurm's units: 64G, 500M")
    sbatch: dict[str, str | int] = Field(default_factory=dict,
                                         description="other sbatch options, e.g. {constraint = 'h100'}")

    @field_validator("time")
    @classmethod
    def _time(cls, value):
        if value is not None:
            minutes(value)
        return value


class SlurmExecutor(Executor):
    name = "slurm"
    description = "each stage a Slurm job through submitit (executor.stages: partition, gpus, cpus, time, mem)"

    class Settings(SlurmStage):
        time: str | int = "24:00:00"  # submitit's own default, 5 minutes, would end most stages
        account: str | None = None
        folder: str | None = Field(None, description="submitit's folder: job scripts, pickles and logs "
                                                     "(default: <workdir>/slurm/%j)")
        setup: list[str] = Field(default_factory=list, description="shell lines run before each job "
                                 "(module load ..., source .venv/bin/activate)")
        stages: dict[str, SlurmStage] = Field(default_factory=dict, description="per stage name")
        cluster: str | None = Field(None, description="submitit's cluster: slurm, or local (jobs as local "
                                                      "processes, to try a study); default: detected")
        poll_s: float = Field(10.0, gt=0, description="how often to look for finished jobs")

        @field_validator("stages")
        @classmethod
        def _stages(cls, value):
            return check_stages(value)

    execution = ("partition", "gpus", "cpus", "time", "mem", "sbatch", "account", "folder", "setup", "stages",
                 "cluster", "poll_s")

    def parameters(self, node: Node) -> dict:
        """The node's job as submitit's SlurmExecutor parameters (sbatch's names, submitit's spelling)."""
        s = self.settings
        stage = s.stages.get(node.stage) or SlurmStage()
        pick = {**s.model_dump(include=set(SlurmStage.model_fields), exclude_none=True),
                **stage.model_dump(exclude_none=True)}
        params = {"job_name": f"nt-{node.stage}-{node.key[:8]}", "time": minutes(pick["time"]),
                  "partition": pick.get("partition"), "account": s.account, "gpus_per_node": pick.get("gpus"),
                  "cpus_per_task": pick.get("cpus"), "mem": pick.get("mem"), "setup": list(s.setup) or None,
                  "additional_parameters": {**s.sbatch, **stage.sbatch} or None}
        return {k: v for k, v in params.items() if v is not None}

    def folder(self, study: Study) -> Path:
        return Path(self.settings.folder or Path(study.workdir) / "slurm" / "%j")

    def sbatch_flags(self, node: Node, study: Study) -> list[str]:
        """The ``#SBATCH`` lines of the node's job, from submitit's own script builder (what
        ``SlurmExecutor._make_submission_file_text`` writes), less those submitit puts in every job."""
        needs("submitit", "slurm")
        from submitit.slurm.slurm import _make_sbatch_string

        script = _make_sbatch_string(command="", folder=self.folder(study), **self.parameters(node))
        flags = [line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH ")]
        return [f for f in flags if f.lstrip("-").split("=")[0] not in SUBMITIT_OWN]

    def describe(self, nodes: list[Node], study: Study) -> list[str]:
        """``--dry-run``: a line per job it would submit (stage, recipe, key, sbatch parameters)."""
        return [f"{n.stage}\t{n.recipe}\t{n.key}\t{' '.join(self.sbatch_flags(n, study))}"
                for n in nodes if not study.stored(n)]

    def executor(self, node: Node, study: Study):
        """A submitit AutoExecutor for the node's job: time and name for any cluster, the rest Slurm's."""
        submitit = needs("submitit", "slurm")
        params = self.parameters(node)
        executor = submitit.AutoExecutor(folder=self.folder(study), cluster=self.settings.cluster)
        executor.update_parameters(name=params.pop("job_name"), timeout_min=params.pop("time"),
                                   **{f"slurm_{k}": v for k, v in params.items()})
        return executor

    def run(self, nodes: list[Node], study: Study) -> None:
        pending = [n for n in nodes if not study.stored(n)]
        keys = {n.key for n in pending}
        done: set[str] = set()
        running: dict = {}  # key -> (job, node)
        try:
            while pending or running:
                for node in [n for n in pending if all(d in done or d not in keys for d in n.deps)]:
                    pending.remove(node)
                    threads = self.parameters(node).get("cpus_per_task") or study.threads
                    job = self.executor(node, study).submit(run_node, study.workdir, node, threads)
                    running[node.key] = (job, node)
                    study.log(f"[dim]→ {node} ({'base student' if node.base else node.recipe}, job {job.job_id}, "
                              f"log {job.paths.stderr})[/]")
                finished = [key for key, (job, _) in running.items() if job.done()]
                if not finished:
                    time.sleep(self.settings.poll_s)
                for key in finished:
                    job, node = running.pop(key)
                    error = job.exception()
                    if error is not None:
                        raise UserError(f"{node} of {node.recipe} failed in job {job.job_id}: {one_line(error)} "
                                        f"(log: {job.paths.stderr})") from error
                    done.add(key)
        finally:
            for job, _ in running.values():  # a failure or Ctrl-C: the others are cancelled
                job.cancel(check=False)


def minutes(limit: str | int) -> int:
    """Slurm's time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in whole minutes, as submitit wants them."""
    if isinstance(limit, int):
        return limit
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", limit.strip())
    if not match:
        raise ValueError(f"time {limit!r}: minutes, H:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(g) if g else None for g in match.groups())
    if days is not None:  # D-H, D-H:M, D-H:M:S
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    else:  # M or M:S
        seconds = a * 60 + (b or 0)
    return max(1, -(-seconds // 60))
