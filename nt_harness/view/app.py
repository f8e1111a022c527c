"""`nt-harness view`: a study's leaderboard, selections, traces, answers and training curves in a browser.

Every page is a plain function of the site and its path parameters, returning the page's body. Starlette
serves them (``serve``), and ``write_site`` writes the same functions' output to files, so a published site
and a served one are the same pages. Paths end in ``.html`` and links are relative, so the files work
from disk. Tables are Tabulator's: served, they page, filter and sort on the server (``api/`` answers);
exported, each table's rows are written beside its page and Tabulator does the same work in the browser.
"""

from __future__ import annotations

import functools
import io
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
from jinja2 import Environment, PackageLoader, select_autoescape
from rich.progress import track

from nt_harness import UserError
from nt_harness.leaderboard import notes
from nt_harness.records import RESPONSE_TOKENS, TRAIN_CURVES
from nt_harness.view import tables
from nt_harness.view.data import NO_ANSWER, PARTIAL, RIGHT, WRONG, Run, Study

STATIC = Path(__file__).parent / "static"
MAX_EXPORTED_ROWS = 200_000  # rows of one table written to a static site; the served view pages them all
SELECTION_COLUMNS_HIDDEN = ("question_id",)


@dataclass
class Page:
    body: str | bytes
    media_type: str = "text/html"


class Site:
    def __init__(self, studies: dict[str, Study], static: bool = False):
        self.studies = studies
        self.static = static
        self.env = Environment(loader=PackageLoader("nt_harness.view"), autoescape=select_autoescape())
        self.env.filters["q"] = lambda s: quote(str(s), safe="")

    def render(self, template: str, path: str, **context) -> Page:
        root = "../" * (path.strip("/").count("/"))
        return Page(self.env.get_template(template).render(root=root, static=self.static, path=path, **context))

    def study(self, study: str) -> Study:
        if study not in self.studies:
            raise KeyError(study)
        return self.studies[study]

    # -- pages --------------------------------------------------------------------------------------
    def index(self) -> Page:
        if len(self.studies) == 1:  # straight to the one leaderboard
            return self.render("redirect.html", "/index.html", to=f"{quote(next(iter(self.studies)))}/index.html")
        return self.render("index.html", "/index.html", studies=list(self.studies.values()))

    def leaderboard(self, study: str) -> Page:
        s = self.study(study)
        headers, body = s.summary
        rows = [dict(zip(headers, line), run=i) for i, line in enumerate(body)]
        return self.render("leaderboard.html", f"/{study}/index.html", s=s, headers=headers, rows=rows,
                           notes=notes(s.meta))

    def run(self, study: str, run: int) -> Page:
        r = self.study(study).run(run)
        evals = []
        for task, (metric, filter_) in r.tasks().items():
            try:
                statuses = {c["status"]: c["count_all"] for c in tables.counts(r.samples(task), "status")}
            except LookupError:
                statuses = None
            evals.append({"task": task, "metric": metric, "filter": filter_, "statuses": statuses})
        selection = None
        if r.has_selection:
            try:
                selection = tables.counts(r.selection(), "kept")
            except LookupError as e:
                selection = str(e)
        return self.render("run.html", f"/{study}/r{run}/index.html", s=r.study, r=r, evals=evals,
                           selection=selection, provenance=r.provenance(), training=r.training() is not None,
                           statuses=(RIGHT, WRONG, PARTIAL, NO_ANSWER))

    def selection(self, study: str, run: int) -> Page:
        r = self.study(study).run(run)
        try:
            table = r.selection()
        except LookupError as e:
            return self.render("missing.html", f"/{study}/r{run}/selection.html", s=r.study, r=r, problem=str(e))
        return self.render("selection.html", f"/{study}/r{run}/selection.html", s=r.study, r=r,
                           columns=_columns(table, hidden=SELECTION_COLUMNS_HIDDEN), rows=len(table),
                           reasons=tables.counts(table, "kept", "reason"), data="selection")

    def trace(self, study: str, run: int, qid: str, sample: int) -> Page:
        r = self.study(study).run(run)
        row = r.trace(f"{qid}/{sample}")
        return self.trace_page(r, row)

    def trace_page(self, r: Run, row: dict) -> Page:
        main = {k: row.pop(k, None) for k in ("question", "thinking", "answer", "reference")}
        qid, _, sample = row["trace_id"].partition("/")
        return self.render("trace.html", f"/{r.study.name}/r{r.index}/trace/{qid}/{sample}.html", s=r.study, r=r,
                           main=main, decision={k: row.pop(k, None) for k in ("kept", "reason", "rank", "mode")},
                           rest=row)

    def evaluation(self, study: str, run: int, task: str) -> Page:
        r = self.study(study).run(run)
        path = f"/{study}/r{run}/eval/{task}.html"
        try:
            table = r.samples(task)
        except LookupError as e:
            return self.render("missing.html", path, s=r.study, r=r, problem=str(e))
        metric, filter_ = r.tasks()[task]
        return self.render("evaluation.html", path, s=r.study, r=r, task=task, metric=metric, filter=filter_,
                           columns=_columns(_answers(table), hidden=("question_id",)),
                           rows=len(table), statuses=tables.counts(table, "status"), data=f"eval-{task}")

    def question(self, study: str, task: str, qid: str) -> Page:
        s = self.study(study)
        answers, question = [], None
        for r in s.runs:
            if task not in r.tasks():
                continue
            try:
                found = r.samples(task).filter(pc.field("question_id") == qid).to_pylist()
            except LookupError:
                found = []
            if found:
                question = question or found[0]
                answers.append((r, found[0]))
        if not answers:
            raise KeyError(qid)
        return self.render("question.html", f"/{study}/question/{task}/{qid}.html", s=s, task=task, qid=qid,
                           question=question, answers=answers)

    def training(self, study: str, run: int) -> Page:
        metrics = self.study(study).run(run).training()
        if metrics is None:
            raise KeyError("training")
        return Page(_curves(metrics), "image/svg+xml")

    def figure(self, study: str, name: str) -> Page:
        s = self.study(study)
        if name not in s.figures():
            raise KeyError(name)
        return Page((s.folder / name).read_bytes(), "image/png")

    def rows(self, study: str, run: int, data: str, params) -> Page:
        """A table's rows (the ``api/`` answer): one page of them, or all of them for a static site."""
        r = self.study(study).run(run)
        if data == "selection":
            answer = tables.query(r.selection(), params, r.selection_order(), r.orders)
        else:
            answer = tables.query(_answers(r.samples(data.removeprefix("eval-"))), params)
        return Page(json.dumps(answer), "application/json")


def _answers(samples):
    """The columns of an evaluation's table (the full texts are on the question's page)."""
    return samples.select([c for c in ("question_id", "question_preview", "status", "extracted", "target", "value",
                                       RESPONSE_TOKENS) if c in samples.column_names])


def _columns(table: pa.Table, hidden=()) -> list[dict]:
    """Tabulator's column definitions: a choice list for a column of few values, a text box otherwise."""
    out = []
    for f in table.schema:
        column = {"field": f.name, "title": f.name.replace("_", " "), "visible": f.name not in hidden,
                  "numeric": pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
        if pa.types.is_dictionary(f.type):
            values = table.column(f.name).combine_chunks().dictionary
        elif f.type in (pa.bool_(), pa.string()):
            values = pc.unique(table.column(f.name).slice(0, 100_000))
        else:
            values = None
        if values is not None and len(values) <= 30:
            column["choices"] = sorted(str(v).lower() if isinstance(v, bool) else str(v)
                                       for v in values.to_pylist() if v is not None)
        out.append(column)
    return out


def _curves(metrics) -> bytes:
    """Loss, learning rate, gradient norm and throughput per optimizer step, as small multiples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    shown = [c for c in TRAIN_CURVES if c in metrics.column_names]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 2.8), squeeze=False)
    steps = metrics.column("step").to_pylist()
    for ax, name in zip(axes[0], shown):
        ax.plot(steps, metrics.column(name).to_pylist(), lw=1.4, color="#3465a4",
                marker="o" if len(steps) <= 40 else None, ms=3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name.replace("_", " "), fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    fig.tight_layout()
    out = io.StringIO()
    fig.savefig(out, format="svg", metadata={"Date": None})
    plt.close(fig)
    return out.getvalue().encode()


# -- serving -----------------------------------------------------------------------------------------------
def app(site: Site):
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    @functools.lru_cache(maxsize=1024)
    def render(method, *args) -> Page:  # a page never changes while served: its store entries are immutable
        return getattr(site, method)(*args)

    def page(method, *names):
        def endpoint(request):  # plain def: Starlette runs it in its thread pool, the event loop stays free
            args = [request.path_params[n] for n in names]
            try:
                if method == "rows":
                    out = site.rows(*args, request.query_params)
                else:
                    out = render(method, *args)
            except (KeyError, IndexError) as e:
                raise HTTPException(404, f"not found: {e}") from e
            except UserError as e:
                raise HTTPException(400, str(e)) from e
            return Response(out.body, media_type=out.media_type)
        return endpoint

    routes = [
        Route("/", page("index")),
        Route("/index.html", page("index")),
        Route("/{study}/index.html", page("leaderboard", "study")),
        Route("/{study}/figures/{name}", page("figure", "study", "name")),
        Route("/{study}/question/{task}/{qid}.html", page("question", "study", "task", "qid")),
        Route("/{study}/r{run:int}/index.html", page("run", "study", "run")),
        Route("/{study}/r{run:int}/selection.html", page("selection", "study", "run")),
        Route("/{study}/r{run:int}/training.svg", page("training", "study", "run")),
        Route("/{study}/r{run:int}/trace/{qid}/{sample:int}.html", page("trace", "study", "run", "qid", "sample")),
        Route("/{study}/r{run:int}/eval/{task}.html", page("evaluation", "study", "run", "task")),
        Route("/api/{study}/r{run:int}/{data}.json", page("rows", "study", "run", "data")),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    return Starlette(routes=routes)


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket: on ``port``, or on a free one when none is given."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port or 0))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror} (leave --port out for a free port)") from e
    sock.listen(128)
    return sock


def serve(site: Site, host: str = "127.0.0.1", port: int | None = None, ready=print) -> None:
    import uvicorn

    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    ready(f"nt-harness view: http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app(site), log_level="warning"))
    threading.Thread(target=warm, args=(site,), daemon=True).start()
    server.run(sockets=[sock])


def warm(site: Site) -> None:
    """Read every row's tables while the person is still looking at the leaderboard: a 10^6-trace selection
    takes seconds to read and join, its pages then answer in milliseconds."""
    for s in site.studies.values():
        for r in s.runs:
            try:
                if r.has_selection:
                    r.selection_order()
                for task in r.tasks():
                    r.samples(task)
            except LookupError:
                continue  # the page says what is missing when it is asked for


# -- a static site -------------------------------------------------------------------------------------------
def write_site(site: Site, out: Path) -> int:
    """Write every page under ``out``; returns the number of files written."""
    import shutil

    site.static = True
    shutil.copytree(STATIC, out / "static", dirs_exist_ok=True)
    written = 0

    def write(path: str, page: Page) -> None:
        nonlocal written
        target = out / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(page.body if isinstance(page.body, bytes) else page.body.encode())
        written += 1

    def write_rows(path: str, table) -> None:
        shown = table.slice(0, MAX_EXPORTED_ROWS)
        write(path, Page(f"window.NT_ROWS = {json.dumps(tables.records(shown), default=str)};\n"))

    write("/index.html", site.index())
    for name, s in site.studies.items():
        write(f"/{name}/index.html", site.leaderboard(name))
        for figure in s.figures():
            write(f"/{name}/figures/{figure}", site.figure(name, figure))
        questions: set[tuple[str, str]] = set()
        for r in track(s.runs, description=f"view: exporting {name}"):
            base = f"/{name}/r{r.index}"
            write(f"{base}/index.html", site.run(name, r.index))
            if r.training() is not None:
                write(f"{base}/training.svg", site.training(name, r.index))
            if r.has_selection and not r.missing("select"):
                write(f"{base}/selection.html", site.selection(name, r.index))
                write_rows(f"{base}/selection.data.js", r.selection().take(r.selection_order()))
                for row in r.traces(limit=MAX_EXPORTED_ROWS):
                    qid, _, sample = row["trace_id"].partition("/")
                    write(f"{base}/trace/{qid}/{sample}.html", site.trace_page(r, row))
            for task in r.tasks():
                write(f"{base}/eval/{task}.html", site.evaluation(name, r.index, task))
                try:
                    table = r.samples(task)
                except LookupError:
                    continue
                write_rows(f"{base}/eval/{task}.data.js", _answers(table))
                questions |= {(task, q) for q in table.column("question_id").to_pylist()}
        for task, qid in sorted(questions):
            write(f"/{name}/question/{task}/{qid}.html", site.question(name, task, qid))
    return written
