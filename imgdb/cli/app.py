"""The ``imgdb`` command line: parse, make one library call, present.

Nothing heavy is imported at module level, so ``imgdb --help`` is instant; each command
imports what it needs when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from imgdb.errors import ImgdbError

app = typer.Typer(
    help="Turn web pages or folders of images into a searchable, deduplicated, clustered local collection.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Db = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="IMGDB_DB",
        show_default=False,
        help="Store directory [default: $IMGDB_DB or ~/.local/share/imgdb].",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Csv = Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")]
Model = Annotated[
    Path | None,
    typer.Option(
        "--model", help="An ONNX model with its JSON spec beside it [default: the bundled EfficientNet-Lite0]."
    ),
]


@contextmanager
def _errors() -> Iterator[None]:
    """ImgdbError -> one line on stderr and exit 1; Ctrl-C -> exit 130. Never a traceback."""
    try:
        yield
    except ImgdbError as exc:
        from imgdb.cli.present import error

        error(str(exc))
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        from imgdb.cli.present import error

        error("interrupted; run the same command again to finish the work")
        raise typer.Exit(130) from None


@app.command()
def ingest(
    targets: Annotated[
        list[str], typer.Argument(help="Listing-page URLs, folders or image files.", show_default=False)
    ],
    db: Db = None,
    pages: Annotated[int, typer.Option(min=1, help="Listing pages to follow through pagination.")] = 10,
    depth: Annotated[
        int, typer.Option(min=0, max=3, help="1 = also crawl the same-site pages the listings link to.")
    ] = 0,
    max_pages: Annotated[
        int, typer.Option(min=1, help="Pages to crawl per --depth level, per start URL (default 500).")
    ] = 500,
    max_images: Annotated[int | None, typer.Option(min=1, help="Stop after this many images.")] = None,
    refresh: Annotated[bool, typer.Option(help="Re-download pages and images already known.")] = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Retry URLs that could not connect last time (skipped otherwise).")
    ] = False,
    ignore_robots: Annotated[
        bool, typer.Option(help="Ignore robots.txt and X-Robots-Tag (only for sites you own).")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, help="Downloads in flight in total.")] = 16,
    per_host: Annotated[int, typer.Option(min=1, help="Downloads in flight per host.")] = 4,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request may take in all: connecting and the whole answer.")
    ] = 20.0,
    model: Model = None,
    json: Json = False,
) -> None:
    """Crawl a listing page (and its pagination), or walk folders, and store every image."""
    import imgdb
    from imgdb.acquire.fetch import FetchPolicy
    from imgdb.acquire.ingest import IngestOptions
    from imgdb.cli.present import RichProgress, ingest_summary, print_json

    policy = FetchPolicy(max_connections=concurrency, per_host=per_host, timeout=timeout)
    options = IngestOptions(
        pages=pages,
        depth=depth,
        max_pages=max_pages,
        max_images=max_images,
        refresh=refresh,
        retry_failed=retry_failed,
        respect_robots=not ignore_robots,
        fetch_policy=policy,
    )
    with _errors(), RichProgress(enabled=not json) as progress, imgdb.open(db, "w", model=model) as images:
        summary = images.ingest(targets, options=options, progress=progress)
    print_json(summary.as_dict()) if json else ingest_summary(summary)


@app.command()
def info(db: Db = None, json: Json = False) -> None:
    """What the store holds: images, sources, sites, formats, models, size on disk."""
    import imgdb
    from imgdb.cli.present import print_json, store_info

    with _errors(), imgdb.open(db) as images:
        data = images.info()
    print_json(data) if json else store_info(data)


@app.command()
def similar(
    query: Annotated[str, typer.Argument(help="An image file, an image URL, or a stored image id (or its prefix).")],
    db: Db = None,
    limit: Annotated[int, typer.Option("-k", "--limit", min=1, help="How many neighbours.")] = 10,
    where: Annotated[
        str | None,
        typer.Option(help="SQL filter over image and source columns, e.g. \"width >= 500 AND site = 'shop.example'\"."),
    ] = None,
    add: Annotated[bool, typer.Option(help="Also store the query image.")] = False,
    model: Model = None,
    json: Json = False,
    csv: Csv = False,
) -> None:
    """The stored images nearest to an image, as a table (or --json / --csv)."""
    import imgdb
    from imgdb.cli.present import rows, similar_table

    fmt = _fmt(json, csv)
    with _errors():
        if add:
            with imgdb.open(db, "w", model=model) as images:
                images.add_query(query)
        with imgdb.open(db, model=model) as images:
            query_info, matches = images.similar(query, k=limit, where=where)
    if fmt == "table":
        similar_table(matches, f"nearest to {query_info.label}" + (" (stored)" if query_info.id else ""))
    else:
        data = [m.as_dict() for m in matches]
        rows(list(data[0]) if data else [], [tuple(d.values()) for d in data], fmt=fmt)


@app.command()
def verify(
    db: Db = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Restore damaged or missing blobs from their files or URLs, rebuild damaged vectors, "
            "drop orphan vectors, re-embed missing ones.",
        ),
    ] = False,
    model: Model = None,
    json: Json = False,
) -> None:
    """Check every blob's sha256 and that DuckDB and LanceDB agree; exit 1 while a problem remains."""
    import imgdb
    from imgdb.cli.present import print_json, verify_report

    with _errors(), imgdb.open(db, "w" if repair else "r", model=model) as images:
        report = images.verify(repair=repair)
    print_json(report.as_dict()) if json else verify_report(report)
    if not report.ok:
        raise typer.Exit(1)


clusters_app = typer.Typer(
    help="Cluster the collection (PCA + KMeans or agglomerative), show and export clusters.", no_args_is_help=True
)
app.add_typer(clusters_app, name="clusters")
Run = Annotated[int | None, typer.Argument(help="Clustering run id [default: the latest].", show_default=False)]


@clusters_app.command("fit")
def clusters_fit(
    db: Db = None,
    method: Annotated[str, typer.Option(help="kmeans, agglomerative or minibatch.")] = "kmeans",
    pca: Annotated[int, typer.Option(min=0, help="PCA components before clustering; 0 = off.")] = 100,
    k: Annotated[str, typer.Option("--k", help="Number of clusters, or 'auto'.")] = "auto",
    k_range: Annotated[str, typer.Option(help="Range of k tried by --k auto, as LO..HI.")] = "2..30",
    select: Annotated[
        str,
        typer.Option(
            help="How --k auto picks: peak (finest well-supported silhouette peak), silhouette (best score), elbow (Kneedle)."
        ),
    ] = "peak",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same clusters.")] = 0,
    plots: Annotated[Path | None, typer.Option(help="Folder for the PNG plots [default: <store>/plots/run-N].")] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Print the silhouette of every method and k instead of fitting one run.")
    ] = False,
    json: Json = False,
) -> None:
    """Cluster every image and save the run (parameters, scores per k, assignments) in the store."""
    import imgdb
    from imgdb.cli.present import cluster_compare, cluster_fit, print_json

    lo_hi = _k_range(k_range)
    if compare:
        with _errors(), imgdb.open(db) as images:
            result = images.compare_clusters(pca=pca, k_range=lo_hi, seed=seed)
        print_json(_asdict(result)) if json else cluster_compare(result)
        return
    with _errors(), imgdb.open(db, "w") as images:
        run = images.fit_clusters(method=method, pca=pca, k=_k_value(k), k_range=lo_hi, select=select, seed=seed)
        paths = images.plot_clusters(run, plots)
    if json:
        print_json(
            {
                "run_id": run.run_id,
                "k": run.k,
                "select": run.select_rule,
                "choices": run.choices,
                "silhouette": run.silhouette,
                "sizes": run.sizes,
                "scores": run.scores_json(),
                "plots": [str(p) for p in paths],
                "warnings": run.warnings,
            }
        )
    else:
        cluster_fit(run, paths)


@clusters_app.command("show")
def clusters_show(run: Run = None, db: Db = None, json: Json = False) -> None:
    """A table of a run's clusters: size, representative image (medoid), top sites."""
    import imgdb
    from imgdb.cli.present import cluster_show, print_json

    with _errors(), imgdb.open(db) as images:
        run_id, clusters = images.clusters(run)
    print_json({"run_id": run_id, "clusters": [_asdict(c) for c in clusters]}) if json else cluster_show(
        run_id, clusters
    )


@clusters_app.command("export")
def clusters_export(
    to: Annotated[Path, typer.Option("--to", help="Folder to write (one sub-folder per cluster, index.html).")],
    run: Run = None,
    db: Db = None,
    mode: Annotated[str, typer.Option(help="copy, hardlink or symlink.")] = "copy",
) -> None:
    """One folder per cluster, a contact sheet per cluster and a browsable index.html."""
    import imgdb
    from imgdb.cli.present import say

    with _errors(), imgdb.open(db) as images:
        index = images.export_clusters(to, run, mode)
    say("wrote", index)


def _k_range(text: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("..")
    if not sep or not lo.strip().isdigit() or not hi.strip().isdigit() or int(lo) > int(hi):
        raise typer.BadParameter(f"--k-range wants LO..HI, e.g. 2..30, not {text!r}")
    return int(lo), int(hi)


def _k_value(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise typer.BadParameter(f"--k wants a positive number or 'auto', not {text!r}")
    return int(text)


dupes_app = typer.Typer(
    help="Near-duplicate groups: renditions, crops and re-encodes of one photograph, each pair verified."
)
app.add_typer(dupes_app, name="dupes")
Html = Annotated[Path | None, typer.Option(help="Also write a browsable gallery of the groups to this folder.")]


@dupes_app.callback(invoke_without_command=True)
def dupes(
    ctx: typer.Context,
    db: Db = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            help="Stage proposing pairs, repeatable: exact, pixels, phash, square, dhash, embedding "
            "[default: all but dhash]."
        ),
    ] = None,
    phash_distance: Annotated[
        int | None,
        typer.Option(
            min=0, max=32, show_default=False, help="Most differing pHash bits for a candidate [default: 12]."
        ),
    ] = None,
    cosine: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, show_default=False, help="Least embedding cosine for a candidate [default: 0.8]."
        ),
    ] = None,
    keep: Annotated[
        str, typer.Option(help="Which member to mark as kept: largest, smallest, earliest, latest.")
    ] = "largest",
    recolours: Annotated[
        bool, typer.Option("--recolours", help="Also group recolours (one photo, the product's colour changed).")
    ] = False,
    html: Html = None,
    json: Json = False,
    csv: Csv = False,
) -> None:
    """Find near-duplicate groups and save the run (nothing is deleted); an unchanged store shows its last run.

    `imgdb dupes show` shows a saved run; `imgdb dupes reject A B` overrules a pair.
    """
    if ctx.invoked_subcommand:
        return
    import imgdb
    from imgdb.dedup import COSINE_MIN, DEFAULT_METHODS, PHASH_MAX_DISTANCE

    fmt = _fmt(json, csv)
    with _errors(), imgdb.open(db, "w") as images:
        result = images.find_dupes(
            methods=method or DEFAULT_METHODS,
            keep=keep,
            recolours=recolours,
            phash_max_distance=PHASH_MAX_DISTANCE if phash_distance is None else phash_distance,
            cosine_min=COSINE_MIN if cosine is None else cosine,
        )
        gallery = images.dupes_gallery(result, html) if html is not None else None
    _show_dupes(result, fmt, gallery)


@dupes_app.command("show")
def dupes_show(
    run: Annotated[int | None, typer.Argument(help="Dupes run id [default: the latest].", show_default=False)] = None,
    db: Db = None,
    html: Html = None,
    json: Json = False,
    csv: Csv = False,
) -> None:
    """Show a saved dupes run: its groups, its recolours and every pair's evidence."""
    import imgdb

    fmt = _fmt(json, csv)
    with _errors(), imgdb.open(db) as images:
        result = images.dupes(run)
        gallery = images.dupes_gallery(result, html) if html is not None else None
    _show_dupes(result, fmt, gallery)


def _show_dupes(result: Any, fmt: str, gallery: Path | None) -> None:
    from imgdb.cli.present import console, dupe_groups, dupe_rows, print_json, rows, say

    if fmt == "json":
        print_json(
            {
                "run_id": result.run_id,
                "reused": result.reused,
                "groups": [_asdict(g) for g in result.groups],
                "pairs": [_asdict(p) for p in result.pairs],
            }
        )
    elif fmt == "csv":
        rows(*dupe_rows(result), fmt="csv")
    else:
        if result.reused:
            console.print(f"unchanged since run {result.run_id}; showing it")
        dupe_groups(result)
    if gallery is not None:
        say("wrote gallery to", gallery)


@dupes_app.command("reject")
def dupes_reject(
    a: Annotated[str, typer.Argument(help="Image id (or prefix), path or URL.")],
    b: Annotated[str, typer.Argument(help="Image id (or prefix), path or URL.")],
    db: Db = None,
) -> None:
    """Remember that two images are not duplicates; every later run respects it."""
    import imgdb
    from imgdb.cli.present import console

    with _errors(), imgdb.open(db, "w") as images:
        ids = images.reject(a, b)
    console.print(f"{ids[0][:12]} and {ids[1][:12]} will never be grouped as duplicates")


def _asdict(obj: object) -> object:
    from dataclasses import asdict

    return asdict(obj)  # type: ignore[call-overload]


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="One SQL statement, run read-only.")],
    db: Db = None,
    json: Json = False,
    csv: Csv = False,
) -> None:
    """SQL over the metadata: images, sources, image_sources, pages, runs, failures, clusters, dupes."""
    import imgdb
    from imgdb.cli.present import rows

    with _errors(), imgdb.open(db) as images:
        columns, data = images.sql(query)
    rows(columns, data, fmt=_fmt(json, csv))


def _fmt(json: bool, csv: bool) -> str:
    if json and csv:
        raise typer.BadParameter("choose one of --json and --csv")
    return "json" if json else "csv" if csv else "table"


@app.command()
def demo(
    db: Annotated[Path, typer.Option("--db", help="Where to build the demo store (recreated each run).")] = Path(
        "imgdb-demo"
    ),
) -> None:
    """Serve a small generated shop on 127.0.0.1 and ingest it (no internet needed)."""
    from imgdb import demo as shop
    from imgdb.cli.present import RichProgress, ingest_summary, say, store_info

    with _errors(), RichProgress() as progress:
        summary, data, url = shop.run(db, progress=progress)
    say(f"Crawled the demo shop at {url} with --depth 1 into", db)
    ingest_summary(summary)
    store_info(data)
