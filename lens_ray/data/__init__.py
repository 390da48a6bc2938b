"""What a run reads: ingest of every data format (formats.py: rows -> pairs; ingest.py: files, folders and hub
sets -> the run's `Datasets`), the embedder that turns (prompt, response) texts into vectors with an LM
(embed.py), the one reader of a finished run (finished_run.py), and whether the hub can be reached (hub.py).
A new data format goes in formats.py; a new way to load a model in embed.py.

What it may import: `lens_ray.config`, `lens_ray.core`, `lens_ray.store` and itself; no Ray.
"""
