"""What a finished run's readers trust: a head's stored reward statistics, checked before any reward is
standardized with them."""
import math

import numpy as np
import pytest

from lens_ray.core.heads import standardize
from lens_ray.data.finished_run import checked_scale
from lens_ray.store.storage import StorageError


@pytest.mark.parametrize("norm,why", [
    (None, "no stored reward statistics"),
    ({"mean": 1.0}, "not a finite mean and std"),
    ({"mean": math.nan, "std": 1.0}, "not a finite mean and std"),
    ({"mean": 0.0, "std": math.inf}, "not a finite mean and std"),
    ({"mean": 0.0, "std": -1.0}, "not a finite mean and std"),
    ({"mean": "1", "std": 1.0}, "not a finite mean and std"),
    ({"mean": True, "std": 1.0}, "not a finite mean and std"),
    ({"mean": 2.0, "std": 0.0}, "all equal"),                       # a constant head: nothing to divide by
])
def test_bad_reward_statistics_are_refused_naming_the_head(norm, why):
    with pytest.raises(StorageError, match=f"head h1: .*{why}"):
        checked_scale("h1", norm)


def test_standardized_rewards_have_mean_0_and_std_1_on_what_made_the_statistics():
    r = np.array([300.0, 420.0, 510.0, 380.0])
    scale = checked_scale("h1", {"mean": float(r.mean()), "std": float(r.std())})
    z = standardize(r, scale)
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-12
    assert np.all(standardize(np.array([5.0, 6.0]), {"mean": 5.0, "std": 0.0}) == [0.0, 1e12])   # floored, finite
