"""The ``nt-harness`` command line."""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nt_harness import UserError, __version__, leaderboard
from nt_harness.executors import Study, plan_study
from nt_harness.pipeline import STAGES, Pipeline
from nt_harness.plugins import PluginError, Plugins
from nt_harness.progress import Progress
from nt_harness.recipes import (Profile, Recipe, RunSpec, SpecError, at_budget, apply_defaults, apply_sets, is_file,
                                 merge, profile_from_file, recipe_from_file)
from nt_harness.store import Store, StoreLocked, library_versions

console = Console(width=None if sys.stdout.isatty() else 220)  # logs keep the whole table
err = Console(stderr=True)
USER_ERRORS = (PluginError, SpecError, StoreLocked, UserError)
DEFAULT_PROFILE = "embedded"


def plugins() -> Plugins:
    pm = Plugins()
    for e in pm.errors:
        err.print(f"[yellow]warning:[/] {escape(e)}", soft_wrap=True)
    return pm


def resolve_recipe(pm: Plugins, name: str) -> Recipe:
    return recipe_from_file(name) if is_file(name) else pm.recipe(name)


def resolve_profile(pm: Plugins, name: str) -> Profile:
    """A registered profile or a file, with the file's base (a registered name or another file) under it."""
    return profile_from_file(name, pm.profile) if is_file(name) else pm.profile(name)


def parse_budgets(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    try:
        budgets = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise SpecError(f"--budget {text!r}: expected an integer or a comma-separated list, e.g. 16,32,64") from None
    if any(b <= 0 for b in budgets):
        raise SpecError(f"--budget {text!r}: budgets must be positive")
    return budgets


def make_spec(pm: Plugins, recipe: Recipe, opts: dict, budget: int | None) -> RunSpec:
    """Profile, then recipe, then the command line, checked as one ``RunSpec``; each layer's ``by_budget`` entry
    for the run's budget joins its own layer (a recipe's own epochs beat the profile's per-budget ones), so the
    budget is found first."""
    profile_name = recipe.spec.get("profile") or opts["profile"]
    profile = resolve_profile(pm, profile_name).spec
    own = {k: v for k, v in recipe.spec.items() if k != "profile"}
    size = command_line(pm, recipe, opts, budget, merge(profile, own)).get("budget")
    spec = apply_defaults(command_line(pm, recipe, opts, budget,
                                       merge(at_budget(profile, size), at_budget(own, size))))
    for key in RunSpec.required():
        if key not in spec:
            raise SpecError(f"recipe {recipe.name!r} with profile {profile_name!r}: no {key} given; set it in the "
                            f"profile, the recipe or with --set, or give the profile file a base that has one, "
                            f"e.g. base = \"embedded\"")
    return RunSpec.of(spec, f"recipe {recipe.name!r}: ")


def command_line(pm: Plugins, recipe: Recipe, opts: dict, budget: int | None, spec: dict) -> dict:
    """The command line's flags and ``--set`` overrides on ``spec``."""
    spec = dict(spec)
    if budget is not None:
        spec["budget"] = budget
    elif opts.get("native_budget") and recipe.native_budget:
        spec["budget"] = recipe.native_budget
    if opts.get("student"):
        spec["student"] = opts["student"]
    if opts.get("teacher"):
        t = opts["teacher"]
        if t in pm.components["teacher"]:
            spec["teacher"] = {"name": t}
        else:
            spec["teacher"] = {**spec.get("teacher", {}), "model": t}
    if opts.get("benchmarks"):
        benches = []
        for item in opts["benchmarks"].split(","):
            comp, _, task = item.strip().partition(":")
            if comp not in pm.components["benchmark"]:
                raise PluginError(f"--benchmarks: unknown benchmark {comp!r}; available: "
                                  f"{', '.join(sorted(pm.components['benchmark']))} (use NAME or NAME:TASK)")
            benches.append({"name": comp, **({"tasks": [task]} if task else {})})
        spec["benchmarks"] = benches
    if opts.get("seed") is not None:
        spec["seed"] = opts["seed"]
    if opts.get("executor") and (spec.get("executor") or {}).get("name") != opts["executor"]:
        spec["executor"] = {"name": opts["executor"]}  # another executor: the profile's settings were for its own
    return apply_sets(spec, list(opts.get("set") or ()))


WORKDIR = click.option("--workdir", default=lambda: os.environ.get("NT_HARNESS_WORKDIR", ".nt-harness"),
                       show_default=".nt-harness", help="stage store (shared by all runs)")


def run_options(f):
    options = [
        click.option("--profile", default=DEFAULT_PROFILE, show_default=True,
                     help="where questions, teacher, student and benchmarks come from (a name or a TOML/YAML file)"),
        click.option("--budget", help="training examples per recipe; a list (16,32,64) sweeps"),
        click.option("--native-budget", is_flag=True, help="each recipe at its own paper's size"),
        click.option("--student", help="student model: alias, folder or hub id"),
        click.option("--teacher", help="teacher component name or teacher model"),
        click.option("--benchmarks", help="comma-separated NAME or NAME:TASK"),
        click.option("--seed", type=int),
        WORKDIR,
        click.option("--set", "set", multiple=True, metavar="KEY=VALUE",
                     help="override any setting, e.g. trainer.lr=1e-5 or benchmarks.lmeval.limit=8"),
        click.option("--force", multiple=True, type=click.Choice(STAGES + ("all",)),
                     help="recompute this stage even if stored"),
        click.option("--threads", type=click.IntRange(min=1),
                     default=lambda: os.environ.get("NT_HARNESS_THREADS", "2"),
                     show_default="2", help="torch threads"),
        click.option("--quiet", is_flag=True, help="no progress bars"),
        click.option("--executor", help="who builds the stages: local (default; one after another) or "
                                        "local-parallel (executor.workers at once), or a plugin's; see `plugins`"),
        click.option("--dry-run", is_flag=True, help="list the stages the executor would build (and how: a job's "
                                                     "resources); build, submit and store nothing"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _execute(recipes: tuple[str, ...], opts: dict, until: str | None = None, base: bool = False,
             recipes_too: bool = True):
    pm = plugins()
    budgets = parse_budgets(opts.get("budget"))
    aliases = resolve_profile(pm, opts["profile"]).recipes
    chosen = [resolve_recipe(pm, aliases.get(r, r)) for r in recipes]
    specs = [(r, b, make_spec(pm, r, opts, b)) for b in budgets for r in chosen]  # validate all first
    store = Store(opts["workdir"])
    runs = []
    with Progress(err, disable=opts.get("quiet", False)) as progress:
        pipe = Pipeline(pm, store, progress, threads=opts["threads"], force=set(opts.get("force") or ()))
        for _, _, spec in specs:
            pipe.validate(spec)
        executor = pipe.instantiate("executor", specs[0][2].executor or "local", "executor")
        # the study as a graph: the executor builds its nodes (shared ones once), then the runs read them
        planned = [(leaderboard.BASE, specs[0][2], True)] if base else []
        planned += [(recipe.name, spec, False) for recipe, _, spec in specs] if recipes_too else []
        nodes, study = plan_study(pipe, planned, until), Study(pipe, str(store.root), opts["threads"])
        if opts.get("dry_run"):
            for line in executor.describe(nodes, study):
                click.echo(line)
            raise click.exceptions.Exit(0)
        executor.run(nodes, study)
        pipe.force = set()  # forced stages were built again just now
        if base:
            runs.append(pipe.baseline(specs[0][2]))
        for recipe, _, spec in specs if recipes_too else ():
            progress.log(f"[bold]recipe {recipe.name}[/] budget {spec.budget} student {spec.student}")
            runs.append(pipe.run(recipe.name, spec, until=until))
    return runs, specs


def published_args(argv: list[str]) -> list[str]:
    """The command line as a leaderboard shows it: where the store and results went is this machine's business
    (--workdir, --results left out), and a path is shown relative to the current folder, or by its name."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        option = arg.split("=", 1)[0]
        if option in ("--workdir", "--results"):
            skip = "=" not in arg
            continue
        out.append(re.sub(r"(?<![\w.])/[^\s,;'\"=]+", _relative, arg))
    return out


def _relative(match: re.Match) -> str:
    path = Path(match.group(0))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return path.name


def leaderboard_folder(results: str, name: str) -> Path:
    """Where the leaderboard goes, checked before any work: a name is one folder under --results (a name with a
    separator or .. wrote outside it), and that folder can be made."""
    if name in ("", ".", "..") or "/" in name or "\\" in name or os.sep in name:
        raise SpecError(f"--name {name!r}: a leaderboard's name is one folder under --results "
                        f"(no / or \\, not . or ..)")
    folder = Path(results) / name
    nearest = next(p for p in (folder, *folder.parents) if p.exists())
    if not nearest.is_dir() or not os.access(nearest, os.W_OK):
        raise UserError(f"--results {results}: cannot write {folder} there ({nearest} is not a writable folder)")
    return folder


def _publish(runs, specs, opts, folder: Path, started):
    title = "nt-harness leaderboard: " + ", ".join(dict.fromkeys(r.name for r, _, _ in specs))
    meta = {
        "profile": opts["profile"],
        "budget_mode": "native (each recipe's own size)" if opts.get("native_budget") else "equal",
        "seed": specs[0][2].seed,
        "command": "nt-harness " + shlex.join(published_args(sys.argv[1:])),
        "wall_s": time.time() - started,
        "versions": library_versions(),
    }
    folder = leaderboard.write(runs, folder, title, meta)
    console.print(leaderboard.rich_table(runs, title))
    console.print(f"written: {folder}/leaderboard.md, .json, .csv  ({meta['wall_s']:.1f} s)")


class CLI(click.Group):
    """A user's mistake is one line (exit 2) and Ctrl-C one line (exit 130), never a traceback, unless --debug
    or NT_HARNESS_DEBUG=1 asks for it; a bug still shows its traceback."""

    def invoke(self, ctx):
        debug = ctx.params.get("debug") or os.environ.get("NT_HARNESS_DEBUG", "") not in ("", "0")
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            if debug:
                raise
            err.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            if debug:
                raise
            err.print("[red]interrupted:[/] the stage in progress stored nothing; finished stages (and a teacher's "
                      "finished shards, to resume from) are kept", soft_wrap=True)
            sys.exit(130)


@click.group(cls=CLI)
@click.version_option(__version__, prog_name="nt-harness")
@click.option("--debug", is_flag=True, help="show the traceback of an error (also NT_HARNESS_DEBUG=1)")
def cli(debug):
    """Which reasoning traces should a student learn from? Compare trace-selection recipes."""


@cli.command()
@click.argument("recipes", nargs=-1, required=True)
@run_options
@click.option("--results", default="results", show_default=True, help="where leaderboards are written")
@click.option("--name", help="leaderboard folder name (default: the recipes joined)")
@click.option("--no-base", is_flag=True, help="skip the untrained-student reference row")
@click.option("--base-only", is_flag=True,
              help="only the untrained-student row (the first recipe's profile gives student and benchmarks)")
def compare(recipes, name, no_base, base_only, **opts):
    """Run RECIPES at equal budget on the same student and print a leaderboard."""
    if no_base and base_only:
        raise click.UsageError("--no-base and --base-only exclude each other")
    started = time.time()
    folder = leaderboard_folder(opts["results"], name or "-vs-".join(r.replace(":", "_").replace("/", "_")
                                                                      for r in recipes))
    runs, specs = _execute(recipes, opts, base=not no_base, recipes_too=not base_only)
    _publish(runs, specs, opts, folder, started)


@cli.command()
@click.argument("recipe")
@run_options
@click.option("--results", default="results", show_default=True)
@click.option("--name")
def run(recipe, name, **opts):
    """Run one RECIPE end to end."""
    started = time.time()
    folder = leaderboard_folder(opts["results"], name or recipe.replace(":", "_").replace("/", "_"))
    runs, specs = _execute((recipe,), opts)
    _publish(runs, specs, opts, folder, started)


def _stage_command(stage: str, doc: str):
    @run_options
    @click.argument("recipe")
    def command(recipe, **opts):
        runs, _ = _execute((recipe,), opts, until=stage)
        console.print_json(json.dumps(runs[0].stages))

    command.__doc__ = doc
    return cli.command(name={"teacher": "generate", "select": "select", "annotate": "annotate",
                             "source": "questions", "train": "train", "evaluate": "evaluate"}[stage])(command)


for _stage, _doc in [
    ("source", "Load RECIPE's questions (and nothing more)."),
    ("teacher", "Generate RECIPE's pool of traces."),
    ("annotate", "Annotate RECIPE's pool."),
    ("select", "Select RECIPE's training traces."),
    ("train", "Train RECIPE's student."),
    ("evaluate", "Score RECIPE's trained student (same as run, without a leaderboard)."),
]:
    _stage_command(_stage, _doc)


def leaderboard_folders(folders, results: str) -> list[Path]:
    """The folders named, else every leaderboard under ``results``; each must hold a leaderboard.json."""
    paths = [Path(f) for f in folders] or sorted(p.parent for p in Path(results).glob("*/leaderboard.json"))
    if not paths:
        raise SpecError(f"no leaderboards under {results}/ (run `nt-harness compare` first, or name a folder)")
    for folder in paths:
        if not (folder / "leaderboard.json").is_file():
            raise SpecError(f"{folder}: no leaderboard.json here (a folder that `nt-harness compare` wrote)")
    return paths


@cli.command(name="leaderboard")
@click.argument("folders", nargs=-1)
@click.option("--results", default="results", show_default=True)
def show_leaderboard(folders, results):
    """Re-render stored leaderboards (all under --results when none given) without recomputing."""
    for folder in leaderboard_folders(folders, results):
        runs, meta = leaderboard.load(folder)
        leaderboard.write(runs, folder, meta.pop("title"), {k: v for k, v in meta.items() if k != "created"})
        console.print(leaderboard.rich_table(runs, str(folder)))


@cli.command()
@click.argument("folders", nargs=-1)
@click.option("--results", default="results", show_default=True)
@WORKDIR
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535), help="port to listen on (default: a free one)")
@click.option("--export", "export_to", type=click.Path(file_okay=False),
              help="write the pages as a static site into this folder instead of serving them")
def view(folders, results, workdir, host, port, export_to):
    """See studies in a browser: leaderboard, selections, traces, answers, training curves (all under --results
    when no folder is given)."""
    from nt_harness.view.app import Site, serve, write_site
    from nt_harness.view.data import open_studies

    site = Site(open_studies(leaderboard_folders(folders, results), Path(workdir)))
    if export_to:
        n = write_site(site, Path(export_to))
        console.print(f"written: {n} files under {export_to}/ (open {export_to}/index.html)")
    else:
        serve(site, host, port, ready=lambda line: click.echo(line, err=True))


@cli.command(name="export")
@click.argument("run", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--what", required=True, help="selection (the traces trained on), pool (every trace, with this "
                                            "row's decisions) or eval (the student's answers)")
@click.option("--recipe", help="the leaderboard row's recipe (needed when the study has several)")
@click.option("--budget", type=int, help="the row's budget (needed when a recipe ran at several)")
@WORKDIR
def export_cmd(run, out, what, recipe, budget, workdir):
    """Write a leaderboard row's selection, pool or answers as a Hugging Face dataset folder (RUN: the
    study's results folder; OUT: a new folder) that `datasets.load_dataset(OUT)` reads."""
    from nt_harness.view import dataset
    from nt_harness.view.data import open_studies

    if what not in dataset.KINDS:  # before any reading
        raise SpecError(f"unknown export {what!r}: one of {', '.join(dataset.KINDS)}")
    study = next(iter(open_studies(leaderboard_folders([run], ""), Path(workdir)).values()))
    rows = dataset.export(dataset.pick_run(study, recipe, budget), what, Path(out))
    console.print(f"written: {out}/ ({', '.join(f'{k} {v:,} rows' for k, v in rows.items())}); "
                  f"datasets.load_dataset({str(out)!r}) reads it")


@cli.command()
def recipes():
    """List recipes and profiles."""
    pm = plugins()
    table = Table(title="recipes")
    table.add_column("recipe", no_wrap=True)
    table.add_column("native budget")
    table.add_column("from plugin")
    table.add_column("description")
    for name in sorted(pm.recipes):
        r = pm.recipes[name]
        table.add_row(name, str(r.native_budget or ""), pm.owner[("recipe", name)], r.description)
    console.print(table)
    table = Table("profile", "from plugin", "description", title="profiles (--profile)")
    for name in sorted(pm.profiles):
        table.add_row(name, pm.owner[("profile", name)], pm.profiles[name].description)
    console.print(table)


@cli.command(name="plugins")
@click.option("--json", "as_json", is_flag=True)
def plugins_cmd(as_json):
    """Installed plugins and the components each registered."""
    pm = plugins()
    report = pm.report()
    if as_json:
        click.echo(json.dumps({"plugins": report, "errors": pm.errors}, indent=2))
        return
    table = Table("plugin", "distribution", "version", "registered", title="nt-harness plugins")
    for p in report:
        reg = "\n".join(f"{k}: {', '.join(v)}" for k, v in sorted(p["registered"].items())) or "(nothing)"
        table.add_row(p["name"], p["distribution"], p["version"], reg)
    console.print(table)


def main():
    pm_commands = Plugins()  # plugin commands join the group before click parses
    pm_commands.add_commands(cli)
    cli()


if __name__ == "__main__":
    main()
