"""The same as jobs/run.py (`lens-ray run`), under the name users have typed since the first release.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("run", __file__)
