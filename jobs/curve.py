"""Ray job entry point of `lens-ray curve`: every method x head at several seed-pair counts, from a finished
run's embeddings.

    python jobs/curve.py --from-run runs/lens-hh --sizes 50,100,250,500,1000,all --heads mlp,linear \
        --factors 2,4,8 --seeds 5
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("curve", __file__)
