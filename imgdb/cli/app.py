"""The ``imgdb`` command line: parse, make one library call, present.

Nothing heavy is imported at module level, so ``imgdb --help`` is instant; each command
imports what it needs when it runs. Help is plain text (click's layout, as sqlite-utils and
llm print it): every option shows its default, every command an example.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from imgdb.errors import ImgdbError


class Command(TyperCommand):
    """Arguments shown by their metavar ("TARGET...") in the usage line and the help, rather
    than Typer's "{targets}... <list[str]>"."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_name(p) for p in self.get_params(ctx) if p.param_type_name == "argument"]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments = [(_argument_name(p), p.help or "") for p in self.get_params(ctx) if p.param_type_name == "argument"]  # type: ignore[attr-defined]
        options = [r for p in self.get_params(ctx) if p.param_type_name == "option" and (r := p.get_help_record(ctx))]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        if options:
            with formatter.section("Options"):
                formatter.write_dl(options)


def _argument_name(param: Any) -> str:
    name = param.metavar or (param.name or "").upper()
    name += "..." if param.nargs != 1 else ""
    return name if param.required else f"[{name}]"


_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _typer(text: str | None, **kwargs: Any) -> typer.Typer:
    if text is not None:  # else Typer takes the help from the callback's docstring
        kwargs["help"] = text
    return typer.Typer(
        cls=TyperGroup,
        rich_markup_mode=None,
        context_settings=_SETTINGS,
        pretty_exceptions_enable=False,
        **kwargs,
    )


app = _typer(
    "Turn web pages or folders of images into a searchable, deduplicated, clustered local collection.\n\n"
    "\b\nStart with:\n  imgdb demo                  a generated shop, ingested into ./imgdb-demo\n"
    "  imgdb ingest URL|DIR --db DIR\n  imgdb similar FILE|URL|ID --db DIR",
    no_args_is_help=True,
)


def command(*args: Any, **kwargs: Any) -> Any:
    return app.command(*args, cls=Command, **kwargs)


def _version(value: bool) -> None:
    if value:
        from imgdb import __version__

        typer.echo(f"imgdb {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


Db = Annotated[
    Path | None,
    typer.Option(
        "--db",
        envvar="IMGDB_DB",
        show_envvar=False,
        show_default=False,
        metavar="DIR",
        help="Store directory [default: $IMGDB_DB or ~/.local/share/imgdb].",
    ),
]
# The one set of output options every query verb takes.
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Nl = Annotated[bool, typer.Option("--nl", help="Print newline-delimited JSON, one object per row.")]
Csv = Annotated[bool, typer.Option("--csv", help="Print CSV.")]
Tsv = Annotated[bool, typer.Option("--tsv", help="Print tab-separated values.")]
Where = Annotated[
    str | None,
    typer.Option(
        metavar="SQL",
        show_default=False,
        help="Only images matching this SQL predicate over image and source columns, "
        "e.g. \"width >= 500 AND site = 'shop.example'\" [default: all].",
    ),
]
Model = Annotated[
    Path | None,
    typer.Option(
        "--model",
        metavar="FILE",
        show_default=False,
        help="An ONNX model with its JSON spec beside it [default: the bundled EfficientNet-Lite0].",
    ),
]


def _fmt(json: bool = False, nl: bool = False, csv: bool = False, tsv: bool = False) -> str:
    chosen = [name for name, on in (("json", json), ("nl", nl), ("csv", csv), ("tsv", tsv)) if on]
    if len(chosen) > 1:
        raise typer.BadParameter(f"choose one output format, not --{' and --'.join(chosen)}")
    return chosen[0] if chosen else "table"


@contextmanager
def _errors() -> Iterator[None]:
    """ImgdbError -> one line on stderr (and the library's hints) and exit 1; Ctrl-C -> exit 130.
    Never a traceback."""
    try:
        yield
    except ImgdbError as exc:
        from imgdb.cli.present import error

        error(str(exc) + _demo_hint(exc), exc.hints)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        from imgdb.cli.present import error

        error("interrupted; run the same command again to finish the work")
        raise typer.Exit(130) from None


def _demo_hint(exc: ImgdbError) -> str:
    from imgdb.demo import DEMO_DB, DEMO_MARKER
    from imgdb.errors import NoStore

    if isinstance(exc, NoStore) and (DEMO_DB / DEMO_MARKER).exists():
        return f"; the demo store is here: --db {DEMO_DB}"
    return ""


@command()
def ingest(
    targets: Annotated[
        list[str],
        typer.Argument(metavar="TARGET", help="Listing-page URLs, folders or image files.", show_default=False),
    ],
    db: Db = None,
    pages: Annotated[int, typer.Option(min=1, metavar="N", help="Listing pages to follow through pagination.")] = 10,
    depth: Annotated[
        int, typer.Option(min=0, max=3, metavar="N", help="1 = also crawl the same-site pages the listings link to.")
    ] = 0,
    max_pages: Annotated[
        int, typer.Option(min=1, metavar="N", help="Pages to crawl per --depth level, per start URL.")
    ] = 500,
    max_images: Annotated[
        int | None,
        typer.Option(min=1, metavar="N", show_default=False, help="Stop after this many images [default: no limit]."),
    ] = None,
    min_size: Annotated[
        str | None,
        typer.Option(
            metavar="WxH",
            show_default=False,
            help="Skip images smaller than this (recorded as too-small); 0x0 keeps all "
            "[default: 64x64 for images from web pages, none for files].",
        ),
    ] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Re-download pages and images already known.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry URLs that could not connect last time (skipped otherwise).")
    ] = False,
    ignore_robots: Annotated[
        bool, typer.Option("--ignore-robots", help="Ignore robots.txt and X-Robots-Tag (only for sites you own).")
    ] = False,
    concurrency: Annotated[int, typer.Option(min=1, metavar="N", help="Downloads in flight in total.")] = 16,
    per_host: Annotated[int, typer.Option(min=1, metavar="N", help="Downloads in flight per host.")] = 4,
    timeout: Annotated[
        float,
        typer.Option(
            min=0.1, metavar="SECONDS", help="Seconds a request may take in all: connecting and the whole answer."
        ),
    ] = 20.0,
    engine: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="local, or ray: fetch, decode and embed on a Ray cluster (pip install 'imgdb[ray]')."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            metavar="ADDR", show_default=False, help="Address of a running Ray cluster [default: start one here]."
        ),
    ] = None,
    model: Model = None,
    json: Json = False,
) -> None:
    """Crawl web pages or walk folders, and store every image.

    A URL is read as a listing page: its images, its pagination (--pages) and, with --depth 1,
    the same-site pages it links to. Re-running adds only what is new; an interrupted run
    resumes.

    \b
    Examples:
      imgdb ingest https://shop.example/category/shoes --pages 5 --db shop
      imgdb ingest ~/Pictures --db photos
    """
    import imgdb
    from imgdb.acquire.fetch import FetchPolicy
    from imgdb.acquire.ingest import IngestOptions, check_targets
    from imgdb.cli.present import ProgressView, ingest_summary, print_json

    with _errors():
        check_targets(targets)  # before the store is opened, so a typo creates no store

    policy = FetchPolicy(max_connections=concurrency, per_host=per_host, timeout=timeout)
    options = IngestOptions(
        pages=pages,
        depth=depth,
        max_pages=max_pages,
        max_images=max_images,
        min_size=_size(min_size, "--min-size") if min_size is not None else None,
        refresh=refresh,
        retry_failed=retry_failed,
        respect_robots=not ignore_robots,
        fetch_policy=policy,
        engine=engine,
        ray_address=ray_address,
    )
    with _errors(), ProgressView(enabled=not json) as progress, imgdb.open(db, "w", model=model) as images:
        summary = images.ingest(targets, options=options, progress=progress)
    print_json(summary.as_dict()) if json else ingest_summary(summary)


def _size(text: str, option: str) -> tuple[int, int]:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise typer.BadParameter(f"{option} wants WIDTHxHEIGHT in pixels, e.g. 64x64, not {text!r}")
    return int(w), int(h)


@command()
def info(db: Db = None, json: Json = False, nl: Nl = False, csv: Csv = False, tsv: Tsv = False) -> None:
    """What the store holds: images, sites, formats, models, size.

    \b
    Example:
      imgdb info --db shop
    """
    import imgdb
    from imgdb.cli.present import info_rows, print_json, rows, store_info

    fmt = _fmt(json, nl, csv, tsv)
    with _errors(), imgdb.open(db) as images:
        data = images.info()
    if fmt == "json":
        print_json(data)
    elif fmt == "table":
        store_info(data)
    else:
        rows(*info_rows(data), fmt=fmt)


@command()
def similar(
    query: Annotated[
        str, typer.Argument(metavar="QUERY", help="An image file, an image URL, or a stored image id (or its prefix).")
    ],
    db: Db = None,
    limit: Annotated[int, typer.Option("-k", "--limit", min=1, metavar="N", help="How many neighbours.")] = 10,
    where: Where = None,
    add: Annotated[bool, typer.Option("--add", help="Also store the query image.")] = False,
    model: Model = None,
    json: Json = False,
    nl: Nl = False,
    csv: Csv = False,
    tsv: Tsv = False,
) -> None:
    """The stored images nearest to an image.

    \b
    Examples:
      imgdb similar photo.jpg -k 5 --db shop
      imgdb similar 3fa2c1 --where "width >= 500" --db shop
    """
    import imgdb
    from imgdb.cli.present import rows, similar_table

    fmt = _fmt(json, nl, csv, tsv)
    with _errors():
        if add:
            with imgdb.open(db, "w", model=model) as images:
                images.add_query(query)
        with imgdb.open(db, model=model) as images:
            query_info, matches = images.similar(query, k=limit, where=where)
    if fmt == "table":
        empty = "no stored image matches --where" if where else "the store holds no other image"
        similar_table(matches, f"nearest to {query_info.label}" + (" (stored)" if query_info.id else ""), empty)
    else:
        data = [m.as_dict() for m in matches]
        rows(list(data[0]) if data else [], [tuple(d.values()) for d in data], fmt=fmt)


@command()
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
    """Check every blob and that DuckDB and LanceDB agree.

    Every blob's sha256 is checked; the exit status is 1 while a problem remains.

    \b
    Example:
      imgdb verify --db shop --repair
    """
    import imgdb
    from imgdb.cli.present import print_json, verify_report

    with _errors(), imgdb.open(db, "w" if repair else "r", model=model) as images:
        report = images.verify(repair=repair)
    print_json(report.as_dict()) if json else verify_report(report)
    if not report.ok:
        raise typer.Exit(1)


clusters_app = _typer(
    "Cluster the collection, show and export clusters.\n\nPCA, then KMeans, MiniBatch KMeans or agglomerative "
    "clustering, with k chosen by silhouette and elbow.\n\n\b\nExamples:\n  imgdb clusters fit --db shop\n"
    "  imgdb clusters show --db shop"
)
app.add_typer(clusters_app, name="clusters", no_args_is_help=True)
Run = Annotated[
    int | None,
    typer.Argument(metavar="RUN", help="Clustering run id [default: the latest].", show_default=False),
]


@clusters_app.command("fit", cls=Command)
def clusters_fit(
    db: Db = None,
    method: Annotated[str, typer.Option(metavar="NAME", help="kmeans, agglomerative or minibatch.")] = "kmeans",
    pca: Annotated[int, typer.Option(min=0, metavar="N", help="PCA components before clustering; 0 = off.")] = 100,
    k: Annotated[str, typer.Option("--k", metavar="K", help="Number of clusters, or 'auto'.")] = "auto",
    k_range: Annotated[str, typer.Option(metavar="LO..HI", help="Range of k tried by --k auto.")] = "2..30",
    select: Annotated[
        str,
        typer.Option(
            metavar="RULE",
            help="How --k auto picks: peak (the finest well-supported silhouette peak), silhouette (the best "
            "score), elbow (the Kneedle knee of the distortion curve).",
        ),
    ] = "peak",
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed; the same seed gives the same clusters.")] = 0,
    plots: Annotated[
        Path | None,
        typer.Option(metavar="DIR", show_default=False, help="Folder for the plots [default: <store>/plots/run-N]."),
    ] = None,
    compare: Annotated[
        bool, typer.Option("--compare", help="Print the silhouette of every method and k instead of fitting one run.")
    ] = False,
    json: Json = False,
) -> None:
    """Cluster every image and save the run in the store.

    The run keeps its parameters, the scores per k and every image's cluster.

    \b
    Examples:
      imgdb clusters fit --db shop
      imgdb clusters fit --k 12 --method agglomerative --db shop
    """
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


@clusters_app.command("show", cls=Command)
def clusters_show(
    run: Run = None, db: Db = None, json: Json = False, nl: Nl = False, csv: Csv = False, tsv: Tsv = False
) -> None:
    """A run's clusters: size, representative image (medoid), top sites.

    \b
    Example:
      imgdb clusters show --db shop --csv
    """
    import imgdb
    from imgdb.cli.present import cluster_rows, cluster_show, print_json, rows

    fmt = _fmt(json, nl, csv, tsv)
    with _errors(), imgdb.open(db) as images:
        run_id, clusters = images.clusters(run)
    if fmt == "json":
        print_json({"run_id": run_id, "clusters": [_asdict(c) for c in clusters]})
    elif fmt == "table":
        cluster_show(run_id, clusters)
    else:
        rows(*cluster_rows(run_id, clusters), fmt=fmt)


@clusters_app.command("export", cls=Command)
def clusters_export(
    to: Annotated[
        Path, typer.Option("--to", metavar="DIR", help="Folder to write (one sub-folder per cluster, index.html).")
    ],
    run: Run = None,
    db: Db = None,
    mode: Annotated[str, typer.Option(metavar="MODE", help="copy, hardlink or symlink.")] = "copy",
) -> None:
    """Write one folder per cluster and an HTML gallery.

    Each cluster gets a folder of its images and a contact sheet; index.html links them.

    \b
    Example:
      imgdb clusters export --to shop-clusters --db shop
    """
    import imgdb
    from imgdb.cli.present import say

    with _errors(), imgdb.open(db) as images:
        index = images.export_clusters(to, run, mode)
    say("wrote gallery to", index)


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


dupes_app = _typer(None)  # its help is the callback's docstring
app.add_typer(dupes_app, name="dupes")
Html = Annotated[
    Path | None,
    typer.Option(
        metavar="DIR",
        show_default=False,
        help="Also write a browsable gallery of the groups to this folder [default: no gallery].",
    ),
]


@dupes_app.callback(invoke_without_command=True)
def dupes(
    ctx: typer.Context,
    db: Db = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            metavar="STAGE",
            show_default=False,
            help="Stage proposing pairs, repeatable: exact, pixels, phash, square, dhash, embedding "
            "[default: all but dhash].",
        ),
    ] = None,
    phash_distance: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=32,
            metavar="BITS",
            show_default=False,
            help="Most differing pHash bits for a candidate [default: 12].",
        ),
    ] = None,
    cosine: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="X",
            show_default=False,
            help="Least embedding cosine for a candidate [default: 0.8].",
        ),
    ] = None,
    keep: Annotated[
        str, typer.Option(metavar="RULE", help="Which member to mark as kept: largest, smallest, earliest, latest.")
    ] = "largest",
    recolours: Annotated[
        bool, typer.Option("--recolours", help="Also group recolours (one photo, the product's colour changed).")
    ] = False,
    html: Html = None,
    json: Json = False,
    nl: Nl = False,
    csv: Csv = False,
    tsv: Tsv = False,
) -> None:
    """Find near-duplicate groups, each pair with its evidence.

    The run is saved (nothing is deleted); an unchanged store shows its last run.
    `imgdb dupes show` shows a saved run; `imgdb dupes reject A B` overrules a pair.

    \b
    Examples:
      imgdb dupes --db shop --html shop-dupes
      imgdb dupes --db shop --csv > pairs.csv
    """
    if ctx.invoked_subcommand:
        return
    import imgdb
    from imgdb.dedup import COSINE_MIN, DEFAULT_METHODS, PHASH_MAX_DISTANCE

    fmt = _fmt(json, nl, csv, tsv)
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


@dupes_app.command("show", cls=Command)
def dupes_show(
    run: Annotated[
        int | None, typer.Argument(metavar="RUN", help="Dupes run id [default: the latest].", show_default=False)
    ] = None,
    db: Db = None,
    html: Html = None,
    json: Json = False,
    nl: Nl = False,
    csv: Csv = False,
    tsv: Tsv = False,
) -> None:
    """Show a saved dupes run with every pair's evidence.

    \b
    Example:
      imgdb dupes show --db shop --json
    """
    import imgdb

    fmt = _fmt(json, nl, csv, tsv)
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
    elif fmt == "table":
        if result.reused:
            console.print(f"unchanged since run {result.run_id}; showing it")
        dupe_groups(result)
    else:
        rows(*dupe_rows(result), fmt=fmt)
    if gallery is not None:  # on stderr when the data goes to stdout, so a pipe gets the data only
        say("wrote gallery to", gallery, err=fmt != "table")


@dupes_app.command("reject", cls=Command)
def dupes_reject(
    a: Annotated[str, typer.Argument(metavar="A", help="Image id (or prefix), path or URL.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Image id (or prefix), path or URL.")],
    db: Db = None,
) -> None:
    """Remember that two images are not duplicates.

    Every later run respects it.

    \b
    Example:
      imgdb dupes reject 3fa2c1 9bd07e --db shop
    """
    import imgdb
    from imgdb.cli.present import console

    with _errors(), imgdb.open(db, "w") as images:
        ids = images.reject(a, b)
    console.print(f"{ids[0][:12]} and {ids[1][:12]} will never be grouped as duplicates")


def _asdict(obj: object) -> object:
    from dataclasses import asdict

    return asdict(obj)  # type: ignore[call-overload]


@command()
def sql(
    query: Annotated[str, typer.Argument(metavar="SQL", help="One SQL statement, run read-only.")],
    db: Db = None,
    json: Json = False,
    nl: Nl = False,
    csv: Csv = False,
    tsv: Tsv = False,
) -> None:
    """Run one read-only SQL statement over the metadata.

    Tables and views: images, sources, image_sources, pages, runs, failures, clusters, dupes.

    \b
    Example:
      imgdb sql "SELECT site, count(*) AS images FROM image_sources GROUP BY site" --db shop
    """
    import imgdb
    from imgdb.cli.present import rows

    fmt = _fmt(json, nl, csv, tsv)
    with _errors(), imgdb.open(db) as images:
        columns, data = images.sql(query)
    rows(columns, data, fmt=fmt, empty="no rows")


@command("export")
def export_dataset(
    to: Annotated[
        Path, typer.Option("--to", metavar="DIR", help="Folder to write (new, empty, or an earlier export).")
    ],
    db: Db = None,
    format: Annotated[  # noqa: A002 - the option users type
        str,
        typer.Option("--format", metavar="FORMAT", help="parquet, or webdataset (tar shards, as img2dataset writes)."),
    ] = "parquet",
    where: Where = None,
    paths: Annotated[
        bool, typer.Option("--paths", help="Parquet: the blob's path in the store instead of the image bytes.")
    ] = False,
    shard_size: Annotated[int, typer.Option(min=1, metavar="N", help="Images per shard.")] = 10_000,
    json: Json = False,
) -> None:
    """Export images, metadata, vectors and labels for training.

    One row per image: its bytes (or path), every metadata column, its sources, its vector,
    and its cluster and duplicate group from the latest runs. Parquet shards, or WebDataset
    tar shards with a Parquet of the metadata beside each.

    \b
    Examples:
      imgdb export --to shop-dataset --db shop
      imgdb export --format webdataset --to shop-wds --where "width >= 256" --db shop
    """
    import imgdb
    from imgdb.cli.present import ProgressView, dataset_export, print_json

    if format not in ("parquet", "webdataset"):
        raise typer.BadParameter(f"--format is parquet or webdataset, not {format!r}")
    with _errors(), ProgressView(enabled=not json) as progress, imgdb.open(db) as images:
        result = images.export_dataset(
            to,
            format=format,  # type: ignore[arg-type]
            where=where,
            images="paths" if paths else "bytes",
            shard_size=shard_size,
            progress=progress,
        )
    print_json(result.as_dict()) if json else dataset_export(result)


@command()
def demo(
    db: Annotated[
        Path, typer.Option("--db", metavar="DIR", help="Where to build the demo store (recreated each run).")
    ] = Path("imgdb-demo"),
) -> None:
    """Ingest a generated shop served on 127.0.0.1 (no internet).

    \b
    Example:
      imgdb demo && imgdb info --db imgdb-demo
    """
    import imgdb
    from imgdb import demo as shop
    from imgdb.cli.present import ProgressView, ingest_summary, say, store_info

    with _errors(), ProgressView() as progress:
        summary, data, url = shop.run(db, progress=progress)
    with _errors(), imgdb.open(db) as images:
        example = images.sql("SELECT id FROM images ORDER BY id LIMIT 1")[1][0][0]
    say(f"Crawled the demo shop at {url} with --depth 1 into", db)
    ingest_summary(summary)
    store_info(data)
    say("")
    say("Next, try:")
    for line in (
        f"imgdb similar {example[:12]} --db {db}",
        f"imgdb dupes --db {db}",
        f"imgdb clusters fit --db {db}",
    ):
        say("  " + line)


# Commands that live in their own module register themselves on ``app``.
from imgdb.cli import serve as _serve  # noqa: E402, F401
