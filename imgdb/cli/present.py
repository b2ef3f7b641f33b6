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
import unicodedata
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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


def error(message: str) -> None:
    """One line on stderr, no traceback."""
    err_console.print(
        Text.assemble(("imgdb: error:", "bold red"), " ", visible(message)), highlight=False, soft_wrap=True
    )


def warning(message: str) -> None:
    """One line on stderr that does not stop anything."""
    err_console.print(
        Text.assemble(("imgdb: warning:", "yellow"), " ", visible(message)), highlight=False, soft_wrap=True
    )


def say(*parts: object) -> None:
    """A line of plain text on stdout (paths and names in it shown as they are)."""
    console.print(Text(" ".join(visible(p) for p in parts)), highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


class RichProgress:
    """``progress.Progress`` drawn as rich bars, fed from the crawler and the processor threads."""

    def __init__(self, enabled: bool = True):
        self.progress = Progress(
            TextColumn("{task.description:<7}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _task(self, kind: str) -> Any:
        if kind not in self._tasks:
            self._tasks[kind] = self.progress.add_task(kind, total=0)
        return self._tasks[kind]

    def found(self, kind: str, n: int = 1) -> None:
        task = self._task(kind)
        self.progress.update(task, total=(self.progress.tasks[task].total or 0) + n)

    def done(self, kind: str, n: int = 1) -> None:
        self.progress.advance(self._task(kind), n)


def ingest_summary(summary: Any) -> None:
    table = Table(
        title=plain(f"ingest run {summary.run_id}: {summary.status} in {summary.seconds:.1f} s"), show_header=False
    )
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
    console.print(table)


def store_info(info: dict[str, Any]) -> None:
    table = Table(title=plain(f"imgdb store {info['store']}"), show_header=False)
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
    console.print(table)
    for m in info["models"]:
        if m.get("problem"):
            warning(m["problem"])


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def rows(columns: list[str], data: list[tuple[Any, ...]], *, fmt: str = "table", title: str | None = None) -> None:
    """Rows as a rich table, CSV or JSON (a list of objects)."""
    if fmt == "json":
        print_json([dict(zip(columns, row)) for row in data])
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        if sys.stdout.isatty():  # a terminal gets no raw escape sequences; a pipe gets the data as it is
            writer.writerow([visible(c) for c in columns])
            writer.writerows([[v if v is None else visible(v) for v in row] for row in data])
        else:
            writer.writerow(columns)
            writer.writerows(data)
    else:
        table = Table(title=plain(title) if title is not None else None)
        for name in columns:
            table.add_column(plain(name), overflow="fold")
        for row in data:
            table.add_row(*(plain(v) for v in row))
        console.print(table)


def similar_table(matches: list[Any], title: str) -> None:
    table = Table(title=plain(title))
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
    console.print(table)


def dupe_groups(result: Any) -> None:
    """One row per group (kept member first, each other with its evidence), then the recolours."""
    from imgdb.dedup.results import evidence_line

    evidence = {(p.a, p.b): p for p in result.pairs}
    table = Table(title=f"{len(result.groups)} duplicate groups (run {result.run_id})")
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
                pair = evidence.get((min(m.image_id, g.keep_id), max(m.image_id, g.keep_id)))
                lines.append(f"       {visible(evidence_line(pair, m.kind or 'duplicate'))}")
        table.add_row(str(g.group_id), str(g.size), Text("\n".join(lines)))
    if result.groups:
        console.print(table)
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
    evidence = {(p.a, p.b): p for p in result.pairs}
    data = []
    for g in result.groups:
        for m in g.members:
            pair = evidence.get((min(m.image_id, g.keep_id), max(m.image_id, g.keep_id)))
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
    table = Table(
        title=f"clustering run {run.run_id}: {run.method}, PCA {run.pca or 'off'}, k = {run.k} ({run.select_rule})"
    )
    for name in ("k", "distortion", "silhouette", "picked by"):
        table.add_column(name, justify="right" if name != "picked by" else "left")
    by_k: dict[int, list[str]] = {}
    for rule, k in run.choices.items():
        by_k.setdefault(k, []).append(rule)
    for s in run.scores:
        sil = "" if s.silhouette is None else f"{s.silhouette:.3f}"
        table.add_row(str(s.k), f"{s.distortion:.1f}", sil, ", ".join(sorted(by_k.get(s.k, []))))
    if run.scores:
        console.print(table)
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
    table = Table(title="silhouette per method and k (best in bold)")
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
    console.print(table)
    console.print(
        f"winner (best silhouette): {result.winner.method}, k = {result.winner.k}; "
        + "imgdb's peak rule: "
        + ", ".join(f"{m} k = {k}" for m, k in sorted(result.peak.items()))
    )


def cluster_show(run_id: int, clusters: list[Any]) -> None:
    table = Table(title=f"clusters of run {run_id}")
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
    console.print(table)


def verify_report(report: Any) -> None:
    """What ``imgdb verify`` found, and what ``--repair`` did about it."""
    if report.problems:
        table = Table(title=plain(f"imgdb verify {report.store}" + (" --repair" if report.repair else "")))
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
        console.print(table)
    vectors = ", ".join(f"{k}: {'unreadable' if n is None else n}" for k, n in report.vectors.items()) or "-"
    left = len(report.unresolved)
    verdict = "all intact" if not report.problems else f"{len(report.problems) - left} repaired, {left} remain"
    say(f"{report.images} images, {report.blobs_checked} blobs checked, vectors {vectors}: {verdict}")
