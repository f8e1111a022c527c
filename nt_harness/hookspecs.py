"""The hooks a plugin may implement, in pipeline order.

Every hook is a register-callback (the style of simonw/llm): the plugin calls ``register(obj)`` once per
component; the host owns de-duplication and errors.
"""

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("nt_harness")


@hookspec
def register_sources(register: Callable) -> None:
    """Register question sources (subclasses of ``nt_harness.components.Source``).

    Example::

        @hookimpl
        def register_sources(register):
            register(GymSource)
    """


@hookspec
def register_teachers(register: Callable) -> None:
    """Register teachers that turn questions into traces (``Teacher`` subclasses).

    Example: ``register(HFTeacher)``.
    """


@hookspec
def register_annotators(register: Callable) -> None:
    """Register annotators that add columns to a pool of traces (``Annotator`` subclasses).

    Example: ``register(LengthAnnotator)``.
    """


@hookspec
def register_selectors(register: Callable) -> None:
    """Register selectors that choose traces for a budget (``Selector`` subclasses).

    Example: ``register(RandomSelector)``.
    """


@hookspec
def register_trainers(register: Callable) -> None:
    """Register trainers that fine-tune a student on chosen traces (``Trainer`` subclasses).

    Example: ``register(SFTTrainer)``.
    """


@hookspec
def register_benchmarks(register: Callable) -> None:
    """Register benchmarks that score a checkpoint (``Benchmark`` subclasses).

    Example: ``register(LMEvalBenchmark)``.
    """


@hookspec
def register_executors(register: Callable) -> None:
    """Register executors that build a study's graph of stages (``nt_harness.executors.Executor``
    subclasses; its docstring is the interface), chosen with ``--executor NAME`` or a profile's ``executor``.

    Example: ``register(LocalParallelExecutor)``.
    """


@hookspec
def register_recipes(register: Callable) -> None:
    """Register recipes and profiles (``nt_harness.recipes.Recipe`` / ``Profile`` objects).

    A recipe is a method (annotators, selector, trainer settings); a profile is the setting it runs in
    (source, teacher, student, benchmarks, budget). Example::

        register(Recipe(name="random", description="uniform sample", spec={"selector": {"name": "random"}}))
    """


@hookspec
def register_models(register: Callable) -> None:
    """Register model aliases: ``register(name, build)`` where ``build(folder: Path) -> None`` writes a
    Hugging Face model folder there once; nt-harness caches it. Example: ``register("smollm2", build)``.
    """


@hookspec
def register_commands(cli) -> None:
    """Add commands to the ``nt-harness`` click group. Example::

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                click.echo("hi")
    """
