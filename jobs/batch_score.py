"""Ray job entry point of `lens-ray batch-score`: batch scoring and Best-of-N reranking of a data set with a
run's head.

    python jobs/batch_score.py --run runs/lens-bon --data ../shared/data/alpaca_bon_dev.jsonl.gz --out runs/scored \
        --best-of 16
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("batch-score", __file__)
