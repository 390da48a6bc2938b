"""Ray job entry point: the Tune search of the synthesis hyperparameters on a finished run's embeddings
(`lens-ray tune`).

    python jobs/tune.py --from-run runs/lens-hh --num-samples 24
    ray job submit --working-dir . -- python jobs/tune.py --from-run s3://bucket/lens/lens-hh
    python jobs/full.py --from-tune runs/lens-hh-tune      # a full run with the chosen settings
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from lens_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    main(["tune", *sys.argv[1:]], prog="jobs/tune.py")
