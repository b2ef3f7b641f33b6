"""``imgdb serve``: the local web app (imgdb.serve) over a store."""

from __future__ import annotations

from typing import Annotated

import typer

from imgdb.cli.app import Db, Model, _errors, command


@command()
def serve(
    db: Db = None,
    port: Annotated[int, typer.Option(min=1, max=65535, metavar="N", help="Port to listen on.")] = 8765,
    host: Annotated[
        str,
        typer.Option(metavar="ADDR", help="Address to listen on; anything but 127.0.0.1 lets other machines in."),
    ] = "127.0.0.1",
    model: Model = None,
) -> None:
    """Browse, search and review the collection in a local web app.

    Thumbnails with filters, each image's nearest neighbours, search by dropping an image,
    clusters, the duplicates review and a read-only SQL box, on 127.0.0.1.

    \b
    Example:
      imgdb serve --db shop --port 8765
    """
    from imgdb import serve as web

    if not web.is_loopback(host):
        typer.echo(
            f"warning: listening on {host}: anyone who can reach this machine can browse the store "
            "and record dupes decisions (imgdb serve has no login)",
            err=True,
        )
    with _errors():
        web.run(
            db,
            host=host,
            port=port,
            model=model,
            ready=lambda url, store: typer.echo(f"imgdb serve: {url} (store {store}); Ctrl-C stops it"),
        )
