"""Ray job entry point of `lens-ray run`: the whole LENS pipeline.

    python jobs/run.py --data ../shared/data/hh_harmless_dev.jsonl.gz
    ray job submit --working-dir . -- python jobs/run.py --config cfg.yaml --storage s3://bucket/lens
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("run", __file__)
