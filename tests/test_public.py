"""The package's public face: `lens_ray.<name>` for what docs and users import, each the object its home module
defines, loaded on first use (importing lens_ray pulls in neither torch nor Ray)."""
import subprocess
import sys

import pytest

import lens_ray


def test_public_names_are_their_homes_objects():
    from lens_ray.config import LensConfig, load_config
    from lens_ray.pipelines.job import run_job
    from lens_ray.scoring.export import export
    from lens_ray.scoring.reward_model import RewardModel
    assert set(lens_ray.__all__) == {"__version__", "LensConfig", "load_config", "run", "RewardModel", "export"}
    assert (lens_ray.LensConfig, lens_ray.load_config, lens_ray.run, lens_ray.RewardModel, lens_ray.export) == (
        LensConfig, load_config, run_job, RewardModel, export)
    assert set(dir(lens_ray)) == set(lens_ray.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lens_ray.nope


def test_importing_lens_ray_is_light():
    code = ("import sys, lens_ray; print('torch' in sys.modules, 'ray' in sys.modules); "
            "lens_ray.LensConfig; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    assert out == ["False", "False", "False"], out
