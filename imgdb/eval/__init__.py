"""Evaluation helpers for ``scripts/``: ground-truth labels and the metrics that use them.

:mod:`imgdb.eval.labels` reads a labels CSV for a folder of images;
:mod:`imgdb.eval.metrics` scores groupings, clusterings and retrieval results against
labels. Nothing in the rest of the package imports these.
"""
