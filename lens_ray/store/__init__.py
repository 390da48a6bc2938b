"""Where artifacts live: the storage backends, each with its lease primitive (backends.py: `BACKENDS`, local and
S3), storage over any of them with checksummed manifests and atomic writes (storage.py), one job per output
folder (lease.py), embeddings as Arrow columns (columns.py), the formats of
embedding tables, synthetic sets and trained models (artifacts.py), the content-addressed embedding cache
(embedding_cache.py), and a search's results (search_results.py). A new storage backend is one entry of
`backends.BACKENDS` (its filesystem, its root path, its lease file).

What it may import: `lens_ray.config`, `lens_ray.core` and itself; no Ray.
"""
