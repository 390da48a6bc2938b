"""Where artifacts live: storage over a local path, file:// or s3:// (storage.py), checksummed manifests and
atomic writes, one job per output folder (lease.py), embeddings as Arrow columns (columns.py), the formats of
embedding tables, synthetic sets and trained models (artifacts.py), the content-addressed embedding cache
(embedding_cache.py), and a search's results (search_results.py). A new storage backend goes in storage.py
(`resolve` maps a URI to a pyarrow filesystem).

What it may import: `lens_ray.config`, `lens_ray.core` and itself; no Ray.
"""
