"""Everything the user sees: the one module that talks rich.

Text from outside (URLs, alt text, file names, SQL results, error messages quoting them)
is never read as rich markup: it goes into ``rich.text.Text`` as it is, through ``plain``,
with control characters made visible (ESC shows as ``\\x1b``), so a crawled page can
neither crash a table with ``[/x]``, restyle it with ``[red]``, nor reach the terminal with
escape sequences.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)

# Invisible characters that reorder what a terminal shows (bidi overrides and isolates).
_BIDI = {0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def visible(value: object) -> str:
    """``value`` as text with control, bidi-override and lone-surrogate characters escaped
    (``\\x1b``, ``\\n``, ``\\u202e``): what is shown is what is there, on one line."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if unicodedata.category(ch) in ("Cc", "Cs") or code in _BIDI:
            out.append(
                {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}.get(code)
                or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
            )
        else:
            out.append(ch)
    return "".join(out)


def plain(value: object, style: str = "") -> Text:
    """Outside text for rich: never markup, control characters visible."""
    return Text(visible(value), style=style)


def error(message: str, hints: tuple[str, ...] = ()) -> None:
    """One line on stderr, no traceback; then the library's hint lines, if any, indented."""
    err_console.print(
        Text.assemble(("imgdb: error:", "bold red"), " ", visible(message)), highlight=False, soft_wrap=True
    )
    for line in hints:
        err_console.print(Text("  " + visible(line)), highlight=False, soft_wrap=True)


def warning(message: str) -> None:
    """One line on stderr that does not stop anything."""
    err_console.print(
        Text.assemble(("imgdb: warning:", "yellow"), " ", visible(message)), highlight=False, soft_wrap=True
    )


def say(*parts: object, err: bool = False) -> None:
    """A line of plain text on stdout (``err``: stderr), paths and names in it shown as they are."""
    (err_console if err else console).print(Text(" ".join(visible(p) for p in parts)), highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class ProgressView:
    """``progress.Progress`` on stderr: bars with counts, rate, ETA and failures on a terminal;
    elsewhere (a log, a pipe) one plain line every ``every`` seconds, so a long run is never silent.

    A task's total is shown as "found so far" (``n/≥N``) until the library fixes it; the ETA
    only then.
    """

    def __init__(self, enabled: bool = True, every: float = 10.0):
        self.enabled = enabled
        self.live = enabled and err_console.is_terminal
        self.every = every
        self._lock = threading.Lock()
        self._tasks: dict[str, _TaskState] = {}
        self._last_line = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.description:<7}"),
            BarColumn(),
            _StatsColumn(self),
            console=err_console,
            transient=True,
            disable=not self.live,
        )

    def __enter__(self) -> ProgressView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _state(self, task: str) -> _TaskState:
        if task not in self._tasks:
            self._tasks[task] = _TaskState(self.progress.add_task(task, total=None))
        return self._tasks[task]

    def found(self, task: str, n: int = 1) -> None:
        with self._lock:
            state = self._state(task)
            if not state.fixed:
                state.found += n

    def total(self, task: str, n: int) -> None:
        with self._lock:
            state = self._state(task)
            state.found, state.fixed = n, True
            self.progress.update(state.id, total=n)

    def done(self, task: str, n: int = 1) -> None:
        with self._lock:
            state = self._state(task)
            self.progress.advance(state.id, n)
            if self.enabled and not self.live and time.monotonic() - self._last_line >= self.every:
                self._last_line = time.monotonic()
                tasks = {t.id: t for t in self.progress.tasks}
                err_console.print(
                    "; ".join(f"{name} {s.line(tasks[s.id])}" for name, s in self._tasks.items()),
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )

    def failed(self, task: str, n: int = 1) -> None:
        with self._lock:
            self._state(task).failed += n


@dataclass
class _TaskState:
    id: Any
    found: int = 0
    fixed: bool = False
    failed: int = 0  # rich counts what is done (task.completed), not what failed

    def line(self, task: Any) -> str:
        """ "1,200/2,485, 113.2/s, ETA 0:00:11, 3 failed": what a bar shows, as text."""
        done = int(task.completed)
        parts = [f"{done:,}/{self.found:,}" if self.fixed else f"{done:,}/≥{self.found:,}"]
        elapsed = task.elapsed or 0.0
        rate = task.speed or (done / elapsed if elapsed > 0 else None)
        if rate:
            parts.append(f"{rate:.1f}/s")
            if self.fixed and self.found > done:
                parts.append(f"ETA {_clock((self.found - done) / rate)}")
        if self.failed:
            parts.append(f"{self.failed:,} failed")
        return ", ".join(parts)


class _StatsColumn(ProgressColumn):
    def __init__(self, view: ProgressView):
        super().__init__()
        self.view = view

    def render(self, task: Any) -> Text:
        state = self.view._tasks.get(task.description)
        return Text(state.line(task) if state else "")


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def ingest_summary(summary: Any) -> None:
    title = f"ingest run {summary.run_id}: {summary.status} in {summary.seconds:.1f} s"
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("pages crawled", summary.pages),
        ("pages failed", summary.pages_failed),
        ("images found", summary.images_found),
        ("downloaded", summary.downloaded),
        ("new", summary.new),
        ("already stored", summary.already_stored),
        ("failed", sum(summary.failed.values())),
    ]
    if getattr(summary, "restored", 0):
        rows.append(("damaged blobs restored", summary.restored))
    for name, value in rows:
        table.add_row(name, str(value))
    for reason, count in sorted(summary.failed.items()):
        table.add_row(plain(f"  failed: {reason}"), str(count))
    show(table, title)


def store_info(info: dict[str, Any]) -> None:
    table = Table(show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("images", str(info["images"]))
    table.add_row("sources", str(info["sources"]))
    table.add_row("pages", str(info["pages"]))
    table.add_row("runs", str(info["runs"]))
    table.add_row("failures", str(info["failures"]))
    table.add_row("sites", plain(", ".join(f"{s['site']} ({s['images']})" for s in info["sites"][:10]) or "-"))
    table.add_row("formats", plain(", ".join(f"{k} ({v})" for k, v in info["formats"].items()) or "-"))
    table.add_row(
        "models",
        plain(
            ", ".join(
                f"{m['key']} ({m['vectors']} vectors, {m['dim']}-d)"
                if m.get("vectors") is not None
                else f"{m['key']} (vectors damaged: run imgdb verify --repair)"
                for m in info["models"]
            )
            or "-"
        ),
    )
    table.add_row("image bytes", _size(info["image_bytes"]))
    table.add_row("size on disk", _size(info["disk_bytes"]))
    show(table, f"imgdb store {info['store']}")
    for m in info["models"]:
        if m.get("problem"):
            warning(m["problem"])


def info_rows(info: dict[str, Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    """``info`` flattened for --nl/--csv/--tsv: one (what, value) row per fact."""
    data: list[tuple[Any, ...]] = [
        (name, info[name])
        for name in ("store", "images", "sources", "pages", "runs", "failures", "image_bytes", "disk_bytes")
    ]
    data += [(f"site:{s['site']}", s["images"]) for s in info["sites"]]
    data += [(f"format:{k}", v) for k, v in info["formats"].items()]
    data += [(f"model:{m['key']}", m.get("vectors")) for m in info["models"]]
    return ["what", "value"], data


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


FORMATS = ("table", "json", "nl", "csv", "tsv")
_WIDE = 1_000_000  # a table printed to a pipe or file is never wrapped


def show(table: Table, title: str | None = None) -> None:
    """A table under a title line of its own (a title inside the table would wrap with it);
    at full width when stdout is not a terminal, so piped paths are never cut mid-word."""
    if title is not None:
        console.print(plain(title, "bold"), soft_wrap=True)
    # rich never prints wider than its console, so a pipe gets a console of its own
    (console if console.is_terminal else Console(width=_WIDE)).print(table)


def print_nl(records: list[dict[str, Any]]) -> None:
    for record in records:
        sys.stdout.write(json.dumps(record, default=str) + "\n")


def rows(
    columns: list[str],
    data: list[tuple[Any, ...]],
    *,
    fmt: str = "table",
    title: str | None = None,
    empty: str | None = None,
) -> None:
    """Rows as a table, JSON (a list of objects), newline-delimited JSON, CSV or TSV (LF line
    endings); in a table, ``empty`` is said when there are no rows."""
    if fmt == "json":
        print_json([dict(zip(columns, row)) for row in data])
    elif fmt == "nl":
        print_nl([dict(zip(columns, row)) for row in data])
    elif fmt in ("csv", "tsv"):
        import csv

        writer = csv.writer(sys.stdout, dialect="excel-tab" if fmt == "tsv" else "excel", lineterminator="\n")
        if sys.stdout.isatty():  # a terminal gets no raw escape sequences; a pipe gets the data as it is
            writer.writerow([visible(c) for c in columns])
            writer.writerows([[v if v is None else visible(v) for v in row] for row in data])
        else:
            writer.writerow(columns)
            writer.writerows(data)
    else:
        if not data and empty:
            say(empty)
            return
        table = Table()
        for name in columns:
            table.add_column(plain(name), overflow="fold")
        for row in data:
            table.add_row(*(plain(v) for v in row))
        show(table, title)


def similar_table(matches: list[Any], title: str, empty: str) -> None:
    if not matches:
        say(empty)
        return
    table = Table()
    for name, justify in (
        ("rank", "right"),
        ("similarity", "right"),
        ("id", "left"),
        ("source", "left"),
        ("size", "right"),
        ("format", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for m in matches:
        table.add_row(
            str(m.rank),
            f"{m.similarity:.3f}",
            plain(m.id[:12]),
            plain(m.source),
            f"{m.width}x{m.height}",
            plain(m.format),
        )
    show(table, title)


def dupe_groups(result: Any) -> None:
    """One row per group (kept member first, each other with its evidence), then the recolours."""
    from imgdb.dedup.results import evidence_line

    table = Table()
    for name in ("group", "size", "members (kept first) and evidence"):
        table.add_column(name, overflow="fold")
    for g in result.groups:
        lines = []
        for m in g.members:
            where = m.source or ""
            more = f" (+{len(m.sources) - 1} more)" if len(m.sources) > 1 else ""
            lines.append(
                f"{'keep ' if m.image_id == g.keep_id else '     '}{m.image_id[:12]} {m.width}x{m.height} "
                f"{visible(where)}{more}"
            )
            if m.image_id != g.keep_id:
                pair = result.pair(m.image_id, g.keep_id)
                lines.append(f"       {visible(evidence_line(pair, m.kind or 'duplicate'))}")
        table.add_row(str(g.group_id), str(g.size), Text("\n".join(lines)))
    if result.groups:
        show(table, f"{len(result.groups)} duplicate groups (run {result.run_id})")
    else:
        console.print(f"no duplicate groups (run {result.run_id})")
    recolours = [p for p in result.pairs if p.kind == "recolour"]
    if recolours and not result.params.get("recolours"):
        console.print(f"{len(recolours)} recolours (one photo, the product's colour changed; --recolours groups them):")
        for p in recolours:
            console.print(f"  {p.a[:12]} ~ {p.b[:12]}: {evidence_line(p, 'recolour')}", highlight=False, markup=False)


def dupe_rows(result: Any) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Flat rows for --csv: one per member and source, with the evidence of its link to the kept one."""
    columns = [
        "group", "keep", "image_id", "kind", "stages", "phash_distance", "square_distance", "cosine", "inliers",
        "matched_area", "changed", "width", "height", "source",
    ]  # fmt: skip
    data = []
    for g in result.groups:
        for m in g.members:
            pair = result.pair(m.image_id, g.keep_id)
            ev = (
                [m.kind, "+".join(pair.stages), pair.phash_distance, pair.square_distance, pair.cosine, pair.inliers,
                 pair.matched_area, pair.changed]
                if pair is not None else [m.kind, m.stage, None, None, None, None, None, None]
            )  # fmt: skip
            for source in m.sources or [""]:
                data.append((g.group_id, m.image_id == g.keep_id, m.image_id, *ev, m.width, m.height, source))
    return columns, data


def cluster_fit(run: Any, plots: list[Any]) -> None:
    """The k sweep, the chosen k and why, and where the plots went."""
    title = f"clustering run {run.run_id}: {run.method}, PCA {run.pca or 'off'}, k = {run.k} ({run.select_rule})"
    table = Table()
    for name in ("k", "distortion", "silhouette", "picked by"):
        table.add_column(name, justify="right" if name != "picked by" else "left")
    by_k: dict[int, list[str]] = {}
    for rule, k in run.choices.items():
        by_k.setdefault(k, []).append(rule)
    for s in run.scores:
        sil = "" if s.silhouette is None else f"{s.silhouette:.3f}"
        table.add_row(str(s.k), f"{s.distortion:.1f}", sil, ", ".join(sorted(by_k.get(s.k, []))))
    if run.scores:
        show(table, title)
    sizes = run.sizes
    console.print(
        f"run {run.run_id}: {len(run.ids)} images in {run.k} clusters (largest {max(sizes)}, smallest {min(sizes)})"
        + (f", silhouette {run.silhouette:.3f}" if run.silhouette is not None else "")
    )
    for warning in run.warnings:
        err_console.print(Text.assemble(("warning:", "yellow"), " ", visible(warning)), highlight=False)
    for path in plots:
        say("plot:", path)


def cluster_compare(result: Any) -> None:
    methods = sorted({r.method for r in result.rows})
    ks = sorted({r.k for r in result.rows})
    table = Table()
    table.add_column("k", justify="right")
    for m in methods:
        table.add_column(m, justify="right")
    cell = {(r.method, r.k): r for r in result.rows}
    for k in ks:
        values = []
        for m in methods:
            r = cell.get((m, k))
            text = "" if r is None or r.silhouette is None else f"{r.silhouette:.3f}"
            if r is result.winner:
                text = f"[bold]{text}[/]"
            values.append(text)
        table.add_row(str(k), *values)
    show(table, "silhouette per method and k (best in bold)")
    console.print(
        f"winner (best silhouette): {result.winner.method}, k = {result.winner.k}; "
        + "imgdb's peak rule: "
        + ", ".join(f"{m} k = {k}" for m, k in sorted(result.peak.items()))
    )


def cluster_show(run_id: int, clusters: list[Any]) -> None:
    table = Table()
    for name, justify in (
        ("cluster", "right"),
        ("size", "right"),
        ("medoid", "left"),
        ("medoid source", "left"),
        ("top sites", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for c in clusters:
        sites = ", ".join(f"{s} ({n})" for s, n in c.top_sites)
        table.add_row(str(c.cluster), str(c.size), plain(c.medoid[:12]), plain(c.medoid_source), plain(sites))
    show(table, f"clusters of run {run_id}")


def dataset_export(result: Any) -> None:
    """ "exported 1,117 images to DIR as parquet: 1 shard, 48.2 MiB; ..." """
    if not result.images:
        say(f"--where matched no images: {result.path} holds one empty shard")
        return
    runs = [f"clusters from run {result.cluster_run}"] if result.cluster_run is not None else []
    runs += [f"duplicate groups from run {result.dupes_run}"] if result.dupes_run is not None else []
    n = len(result.shards)
    shards = f"{n} shard" + ("s" if n != 1 else "")
    say(
        f"exported {result.images:,} images to {visible(result.path)} as {result.format}: {shards}, "
        f"{_size(result.bytes)}; vectors: {result.model} ({result.dim} floats)" + "".join(f", {r}" for r in runs)
    )


def cluster_rows(run_id: int, clusters: list[Any]) -> tuple[list[str], list[tuple[Any, ...]]]:
    columns = ["run_id", "cluster", "size", "medoid", "medoid_source", "top_sites"]
    data = [
        (run_id, c.cluster, c.size, c.medoid, c.medoid_source, ", ".join(f"{s} ({n})" for s, n in c.top_sites))
        for c in clusters
    ]
    return columns, data


def verify_report(report: Any) -> None:
    """What ``imgdb verify`` found, and what ``--repair`` did about it."""
    if report.problems:
        table = Table()
        for name in ("problem", "image / model", "detail", "repair"):
            table.add_column(name, overflow="fold")
        for p in report.problems:
            outcome = ("repaired: " if p.fixed else "not repaired: " if report.repair else "") + (p.how or "")
            table.add_row(
                plain(p.kind),
                plain((p.image_id or "")[:12] or p.model or ""),
                plain(p.detail),
                plain(outcome.strip() or "run imgdb verify --repair"),
            )
        show(table, f"imgdb verify {report.store}" + (" --repair" if report.repair else ""))
    vectors = ", ".join(f"{k}: {'unreadable' if n is None else n}" for k, n in report.vectors.items()) or "-"
    left = len(report.unresolved)
    verdict = "all intact" if not report.problems else f"{len(report.problems) - left} repaired, {left} remain"
    say(f"{report.images} images, {report.blobs_checked} blobs checked, vectors {vectors}: {verdict}")
