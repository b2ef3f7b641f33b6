"""A clustering run's 2-D map as an SVG the page draws: a dot for each mapped image, coloured
by cluster, and a thumbnail wherever the map has images, so a user sees which kinds of
picture lie next to which.

The points are ``ClusterRun.map_xy`` (the images projected on the two main axes of the
cluster means, as in the run's ``map.png``). Thumbnails go on a grid of cells: in each cell
that holds points, the point nearest the cell's centre shows its image, so the thumbnails
never pile up and every part of the map shows one. Only SVG attributes position and colour
anything: the app's content-security policy allows no inline style.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from imgdb.clustering import ClusterRun

WIDTH, HEIGHT = 1000, 660  # the SVG's viewBox
MARGIN = 28  # room for half a thumbnail at the edges
THUMB = 44  # a thumbnail's side in viewBox units
COLUMNS, ROWS = 18, 12  # the grid of cells that each show at most one thumbnail


@dataclass
class Dots:
    cluster: int
    colour: str
    path: str  # "M x y h0" per point: a round-capped stroke draws each as a dot
    count: int


@dataclass
class Thumb:
    image_id: str
    cluster: int
    colour: str  # its cluster's, for the frame
    x: float  # top-left corner in viewBox units
    y: float


@dataclass
class Label:
    cluster: int
    colour: str
    x: float
    y: float


@dataclass
class ClusterMap:
    run_id: int
    k: int
    shown: int  # images on the map
    total: int  # images in the run
    dots: list[Dots]
    thumbs: list[Thumb]
    labels: list[Label]
    width: int = WIDTH
    height: int = HEIGHT
    thumb: int = THUMB


def colour(cluster: int) -> str:
    """A cluster's colour: golden-ratio hue steps, so neighbouring numbers differ."""
    r, g, b = colorsys.hsv_to_rgb((cluster * 0.618034) % 1.0, 0.8, 0.55 + 0.35 * (cluster % 2))
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def layout(run: ClusterRun) -> ClusterMap:
    """Where each dot, thumbnail and cluster number of ``run``'s map goes."""
    assert run.run_id is not None
    if run.map_xy is None or run.map_labels is None or not len(run.map_ids):
        return ClusterMap(run.run_id, run.k, 0, len(run.ids), [], [], [])
    xy = _fit(run.map_xy.astype(np.float64))
    labels = run.map_labels
    dots = []
    for c in range(run.k):
        pts = xy[labels == c]
        if len(pts):
            path = "".join(f"M{x:.1f} {y:.1f}h0" for x, y in pts)
            dots.append(Dots(c, colour(c), path, len(pts)))
    return ClusterMap(
        run.run_id, run.k, len(xy), len(run.ids), dots, _thumbs(run.map_ids, labels, xy), _labels(labels, xy, run.k)
    )


def _fit(xy: np.ndarray) -> np.ndarray:
    """The points scaled into the viewBox inside MARGIN, y pointing up, aspect kept."""
    low, high = xy.min(0), xy.max(0)
    span = np.maximum(high - low, 1e-12)
    scale = min((WIDTH - 2 * MARGIN) / span[0], (HEIGHT - 2 * MARGIN) / span[1])
    offset = (np.array([WIDTH, HEIGHT]) - span * scale) / 2
    out = (xy - low) * scale + offset
    out[:, 1] = HEIGHT - out[:, 1]
    return out


def _thumbs(ids: list[str], labels: np.ndarray, xy: np.ndarray) -> list[Thumb]:
    cell_w, cell_h = WIDTH / COLUMNS, HEIGHT / ROWS
    col = np.minimum((xy[:, 0] / cell_w).astype(int), COLUMNS - 1)
    row = np.minimum((xy[:, 1] / cell_h).astype(int), ROWS - 1)
    centre = np.stack([(col + 0.5) * cell_w, (row + 0.5) * cell_h], axis=1)
    off = np.linalg.norm(xy - centre, axis=1)
    cell = row * COLUMNS + col
    order = np.lexsort((off, cell))  # by cell, nearest its centre first
    firsts = order[np.r_[True, cell[order][1:] != cell[order][:-1]]]
    return [
        Thumb(ids[n], int(labels[n]), colour(int(labels[n])), centre[n, 0] - THUMB / 2, centre[n, 1] - THUMB / 2)
        for n in firsts
    ]


def _labels(labels: np.ndarray, xy: np.ndarray, k: int) -> list[Label]:
    out = []
    for c in range(k):
        pts = xy[labels == c]
        if len(pts):
            x, y = np.median(pts, axis=0)
            out.append(Label(c, colour(c), float(x), float(y)))
    return out
