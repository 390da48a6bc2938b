"""Ray job entry point: the whole LENS pipeline (`lens-ray run`).

    python jobs/full.py --data ../shared/data/hh_harmless_dev.jsonl.gz
    ray job submit --working-dir . -- python jobs/full.py --config cfg.yaml --storage s3://bucket/lens
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from lens_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["run", *sys.argv[1:]], prog="jobs/full.py")
