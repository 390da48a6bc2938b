"""OpenRLHF reward file: `--reward.remote_url /path/to/lens_ray/scoring/openrlhf_reward.py` with LENS_RAY_RUN=<run URI>
(and optionally LENS_RAY_HEAD, LENS_RAY_NORMALIZE=0 for raw rewards) scores in the trainer's own process."""
from lens_ray.scoring.integrations import openrlhf_reward_func as reward_func  # noqa: F401
