"""The `ray` executor: each node one Ray task, handed the ObjectRefs of the nodes it reads so that Ray itself
starts it once they are built (and fails it when one of them failed); this process only waits."""

from __future__ import annotations

import os

from pydantic import Field, field_validator

from nt_harness import UserError
from nt_harness.components import Settings
from nt_harness.executors import Executor, Study, run_node
from nt_harness.pipeline import Node
from nt_cluster.common import bytes_of, check_stages, needs, worker_env


class RayStage(Settings):
    """A stage's Ray resources (``.options()`` of its tasks); unset: Ray's default, one CPU."""

    num_cpus: float | None = Field(None, ge=0, description="also the stage's torch threads (at least 1)")
    num_gpus: float | None = Field(None, ge=0)
    memory: int | str | None = Field(None, description="bytes or e.g. 64G: Ray's memory resource")

    @field_validator("memory")
    @classmethod
    def _memory(cls, value):
        return None if value is None else bytes_of(value)

    def options(self) -> dict:
        return self.model_dump(exclude_none=True)


class RayExecutor(Executor):
    name = "ray"
    description = "each stage a Ray task on a cluster (executor.address) or a local one, resources per stage"

    class Settings(Settings):
        address: str | None = Field(None, description="ray.init's address: 'auto', 'ray://head:10001', ... "
                                                      "Unset: RAY_ADDRESS, else a local cluster for this command")
        local_cpus: int | None = Field(None, ge=1, description="CPUs of that local cluster (default: all)")
        stages: dict[str, RayStage] = Field(default_factory=dict,
                                            description="per stage name: num_cpus, num_gpus, memory")
        runtime_env: dict = Field(default_factory=dict, description="Ray's runtime_env for the tasks (pip, "
                                  "working_dir, env_vars, ...); NT_HARNESS_* and PYTHONPATH are passed along")

        @field_validator("stages")
        @classmethod
        def _stages(cls, value):
            return check_stages(value)

    # where and with what the stages run changes how fast, never what they store
    execution = ("address", "local_cpus", "stages", "runtime_env")

    def run(self, nodes: list[Node], study: Study) -> None:
        ray = needs("ray", "ray")
        settings = self.settings
        runtime_env = {**settings.runtime_env,
                       "env_vars": {**worker_env(), **settings.runtime_env.get("env_vars", {})}}
        started = not ray.is_initialized()
        if started:
            ray.init(address=settings.address, num_cpus=settings.local_cpus, runtime_env=runtime_env,
                     include_dashboard=False)
        build = ray.remote(_build)
        refs: dict[str, object] = {}  # node key -> the ObjectRef of its task
        owner: dict[object, Node] = {}
        try:
            for node in nodes:
                if study.stored(node):
                    continue
                options = (settings.stages.get(node.stage) or RayStage()).options()
                threads = max(1, int(options.get("num_cpus") or study.threads))
                deps = [refs[d] for d in node.deps if d in refs]  # a dep not in refs is stored already
                ref = build.options(name=f"nt-harness {node.stage} {node.key[:8]}", **options).remote(
                    study.workdir, node, threads, *deps)
                refs[node.key], owner[ref] = ref, node
                study.log(f"[dim]→ {node} ({'base student' if node.base else node.recipe}, ray task "
                          f"{', '.join(f'{k}={v}' for k, v in options.items()) or 'num_cpus=1'})[/]")
            pending = list(owner)  # in the nodes' order: of two failures, the one a dependent inherited first
            while pending:
                (ref,), pending = ray.wait(pending, num_returns=1)
                try:
                    ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # the node's own error, raised in its task
                    cause = e.cause if e.cause is not None else e
                    why = (str(cause).strip().splitlines() or [""])[0]
                    raise UserError(f"{owner[ref]} of {owner[ref].recipe} failed in its Ray task: "
                                    f"{type(cause).__name__}: {why}") from e
                except ray.exceptions.RayError as e:  # its worker died, the cluster went away, ...
                    raise UserError(f"{owner[ref]} of {owner[ref].recipe} failed in Ray: {type(e).__name__}; "
                                    f"it stored nothing, a rerun builds it") from e
        except BaseException:
            # a failure or Ctrl-C: the others stop, storing nothing. Only those not finished: force-cancelling a
            # task whose reply is arriving can abort the driver inside Ray ("Tried to complete task that was not
            # pending", seen once with Ray 2.60 in CI)
            running = ray.wait(list(owner), num_returns=len(owner), timeout=0)[1] if owner else []
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()


def _build(workdir: str, node: Node, threads: int, *deps) -> str:
    """A Ray task: build one node (``deps``: the keys of the nodes it reads, passed only so Ray waits)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    return run_node(workdir, node, threads)
