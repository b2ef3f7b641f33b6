"""A run's plots (PNG, matplotlib's Agg canvas: no display, no pyplot state) and its score table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from imgdb.clustering.results import ClusterRun
from imgdb.clustering.select_k import PEAK_TOL, peak_window, smooth_curve
from imgdb.errors import UsageError


def plot(run: ClusterRun, out_dir: Path | str) -> list[Path]:
    """PNG files: distortion over k (elbow marked), silhouette over k, and the 2-D map.

    The curves need a k sweep (k = "auto"); the map needs ``map_xy`` (``fit`` and
    ``load_run`` fill it). Files are ``run-<id>-distortion.png``, ``-silhouette.png`` and
    ``-map.png`` in ``out_dir`` (``run-...`` for an unsaved run); returns those written.
    """
    out = Path(out_dir)
    stem = f"run-{run.run_id}" if run.run_id is not None else "run"
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        if len(run.scores) > 1:
            written.append(_plot_distortion(run, out / f"{stem}-distortion.png"))
            written.append(_plot_silhouette(run, out / f"{stem}-silhouette.png"))
        if run.map_xy is not None and run.map_labels is not None and len(run.map_xy):
            written.append(_plot_map(run, out / f"{stem}-map.png"))
    except OSError as exc:  # an unwritable folder, a full disk: one line, and the run is kept
        saved = f" (run {run.run_id} is saved: `imgdb clusters show {run.run_id}`)" if run.run_id is not None else ""
        raise UsageError(f"cannot write the plots to {out}: {exc.strerror or exc}{saved}") from None
    return written


def scores_table(run: ClusterRun) -> list[dict[str, Any]]:
    """Per-k scores with the rules that pick each k (for the CLI's table or --json)."""
    picked: dict[int, list[str]] = {}
    for rule, k in run.choices.items():
        picked.setdefault(k, []).append(rule)
    return [
        {"k": s.k, "distortion": s.distortion, "silhouette": s.silhouette, "picked_by": sorted(picked.get(s.k, []))}
        for s in run.scores
    ]


def _figure(width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _title(run: ClusterRun) -> str:
    pca = f"PCA {run.pca}" if run.pca else "no PCA"
    name = f"run {run.run_id}" if run.run_id is not None else "unsaved run"
    return f"{name}: {run.method}, {pca}, {len(run.ids)} images"


def _plot_distortion(run: ClusterRun, path: Path) -> Path:
    fig, ax = _figure()
    ks = [s.k for s in run.scores]
    ax.plot(ks, [s.distortion for s in run.scores], "o-", ms=3, color="#1f77b4", label="distortion (within-cluster SS)")
    by_k = {s.k: s for s in run.scores}
    elbow = run.choices.get("elbow")
    if elbow in by_k:
        ax.plot(
            [elbow],
            [by_k[elbow].distortion],
            "s",
            ms=10,
            mfc="none",
            mec="#d62728",
            mew=2,
            label=f"elbow (Kneedle): k = {elbow}",
        )
    return _finish_k_plot(fig, ax, run, "distortion", path)


def _plot_silhouette(run: ClusterRun, path: Path) -> Path:
    fig, ax = _figure()
    pts = [(s.k, s.silhouette) for s in run.scores if s.silhouette is not None]
    if pts:
        ks, sil = zip(*pts)
        ax.plot(ks, sil, "o-", ms=3, color="#ff7f0e", label="silhouette (sample)")
        tol = float(run.params.get("peak_tol", PEAK_TOL))
        window = peak_window(len(run.scores))
        sm = smooth_curve(np.asarray(sil, dtype=np.float64), window)
        ax.plot(ks, sm, "-", lw=1, color="#8c564b", alpha=0.7, label=f"smoothed ({window} k)")
        ax.axhline(float(np.max(sm)) - tol, color="#7f7f7f", ls=":", lw=1, label=f"peak floor (max - {tol:g})")
        for rule, marker in (("silhouette", "^"), ("peak", "o")):
            k = run.choices.get(rule)
            if k in ks:
                ax.plot([k], [sil[ks.index(k)]], marker, ms=11, mfc="none", mew=2, label=f"{rule}: k = {k}")
    return _finish_k_plot(fig, ax, run, "mean silhouette", path)


def _finish_k_plot(fig: Any, ax: Any, run: ClusterRun, ylabel: str, path: Path) -> Path:
    """The chosen k, labels, legend; then save."""
    if run.k in {s.k for s in run.scores}:
        ax.axvline(run.k, color="#2ca02c", ls="--", lw=1, label=f"chosen ({run.select_rule}): k = {run.k}")
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.set_title(_title(run), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _colours(k: int) -> list[Any]:
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, hsv_to_rgb

    if k <= 20:
        tab20 = colormaps["tab20"]
        assert isinstance(tab20, ListedColormap)
        base = cast("Sequence[tuple[float, float, float]]", tab20.colors)
        return [base[(2 * i) % 20 + (2 * i) // 20] for i in range(k)]  # dark shades first
    # Golden-ratio hue steps: clusters with neighbouring numbers get distant hues.
    return [tuple(hsv_to_rgb(((i * 0.618034) % 1.0, 0.85, 0.55 + 0.4 * (i % 2)))) for i in range(k)]


def _plot_map(run: ClusterRun, path: Path) -> Path:
    assert run.map_xy is not None and run.map_labels is not None
    fig, ax = _figure(7.5, 6.5)
    colours = _colours(run.k)
    xy, lab = run.map_xy, run.map_labels
    ax.scatter(
        xy[:, 0], xy[:, 1], c=[colours[int(c)] for c in lab], s=6 if len(xy) < 2000 else 3, alpha=0.7, linewidths=0
    )
    for c in range(run.k):
        pts = xy[lab == c]
        if len(pts):
            cx, cy = np.median(pts, axis=0)
            ax.text(
                cx,
                cy,
                str(c),
                fontsize=8,
                weight="bold",
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colours[c], "alpha": 0.8},
            )
    shown = f"{len(xy)} of {len(run.ids)} images" if len(xy) < len(run.ids) else f"{len(xy)} images"
    ax.set_title(f"{_title(run)}\nk = {run.k}; {shown}, on the two main axes of the cluster means", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    return path
