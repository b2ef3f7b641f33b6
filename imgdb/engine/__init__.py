"""Ingest on a Ray cluster (``imgdb ingest --engine ray``; ``pip install 'imgdb[ray]'``).

The driver crawls (or walks folders) exactly as a local ingest does; downloads, hashing,
decoding and embedding run as Ray Data stages on the cluster's workers; every result
comes back to the driver, which is the store's one writer and commits through ``Store``'s
own methods. So the store a Ray ingest leaves is the store a local ingest leaves.

``ingest.py``      the driver: collect the work, run the stages, commit (``run_on_ray``).
``stages.py``      what runs on the workers: the download and the embedding actors.
``politeness.py``  per-host limits and Crawl-delay held across the cluster (a limiter actor).

Nothing here imports ray at module level; ``imgdb`` without the extra never needs it.
"""
