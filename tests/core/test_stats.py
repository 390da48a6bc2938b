"""core/stats.py: mean ± std over seeds, standard errors, paired differences - exact values."""
import math

from lens_ray.core.stats import mean_std, paired, standard_error


def test_mean_std_counts_only_values_and_has_no_spread_from_one():
    assert mean_std([]) is None and mean_std([None, None]) is None
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    two = mean_std([1.0, None, 3.0])
    assert two["mean"] == 2.0 and math.isclose(two["std"], math.sqrt(2)) and two["n"] == 2


def test_standard_error_of_the_mean():
    assert math.isnan(standard_error([1.0])) and math.isnan(standard_error([]))
    assert math.isclose(standard_error([1.0, 3.0]), 1.0)
    assert math.isclose(standard_error([1.0, 2.0, 3.0, 4.0]), math.sqrt(5 / 3) / 2)


def test_paired_differences_over_shared_keys():
    rows = {0: {"a": 0.7}, 1: {"a": 0.6}, 2: {"a": None}, 3: {"a": 0.9}}
    base = {0: {"a": 0.5}, 1: {"a": 0.65}, 2: {"a": 0.1}}
    assert [round(d, 6) for d in paired(rows, base, "a")] == [0.2, -0.05]


def test_standard_error_of_one_value_is_nan_without_numpy_warnings():
    """One seed has no spread: nan, said without numpy's 'degrees of freedom' warning in every report."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(standard_error([0.5])) and math.isnan(standard_error([]))
        assert standard_error([1.0, 3.0]) == 1.0


def test_wilson_interval_of_an_accuracy():
    from lens_ray.core.stats import wilson_interval
    low, high = wilson_interval(0.5, 100)                    # by hand: 0.5 ± 1.96 * 0.05 / (1 + 0.0384), centred
    assert math.isclose(low, 0.40383, abs_tol=1e-5) and math.isclose(high, 0.59617, abs_tol=1e-5)
    assert wilson_interval(1.0, 10)[1] == 1.0 and 0.72 < wilson_interval(1.0, 10)[0] < 0.73   # never past 1
    assert wilson_interval(0.0, 10)[0] == 0.0
    assert wilson_interval(0.6, 0) == (0.0, 1.0)                                               # no pairs: no claim
    narrow, wide = wilson_interval(0.6, 1000), wilson_interval(0.6, 100)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
