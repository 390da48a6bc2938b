"""Ray job entry point of `lens-ray synthesize`: N synthetic pairs (up to millions) from a finished run's VAE
and embeddings, streamed with Ray Data.

    python jobs/synthesize.py --from-run runs/lens-hh --pairs 1000000 --mode materialized --out runs/pairs-1m
    python jobs/synthesize.py --from-run s3://b/lens-hh --pairs 5000000 --mode seeded --out s3://b/pairs-5m

materialized: each pair's embeddings are written (parquet, fixed-size float lists).
seeded: each pair is stored as (unit, source, slot a, slot b) - 14 bytes - and decoded on the fly
(`lens_ray.core.synth_stream.decode_seeded`) by whoever reads it, e.g. the streaming reward trainer.
Re-running the same command after a kill writes only the shards that are missing.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("synthesize", __file__)
