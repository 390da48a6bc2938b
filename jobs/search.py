"""Ray job entry point of `lens-ray search`: the search of the synthesis settings on a finished run's embeddings.

    python jobs/search.py --from-run runs/lens-hh --num-samples 24
    python jobs/run.py --from-search runs/lens-hh-tune      # a full run with the chosen settings
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("search", __file__)
