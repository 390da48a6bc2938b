"""The same as jobs/search.py (`lens-ray search`), under its earlier name.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too
from lens_ray.cli import job  # noqa: E402

if __name__ == "__main__":
    job("search", __file__)
