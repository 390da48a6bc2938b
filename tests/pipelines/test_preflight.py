"""Checks before Ray starts create nothing: a local output is checked writable where it would be made."""
import pytest

from lens_ray.pipelines.preflight import check_writable
from lens_ray.store.storage import Storage, StorageError


def test_a_local_output_is_checked_without_creating_it(tmp_path):
    check_writable(Storage(str(tmp_path / "a" / "b" / "c")))
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="a file, not a folder"):
        check_writable(Storage(str(tmp_path / "file" / "run")))


def test_an_s3_output_is_probed(s3_server):
    check_writable(Storage(f"s3://{s3_server['bucket']}/probe-here"))
    with pytest.raises(StorageError, match="does the bucket exist"):
        check_writable(Storage("s3://no-such-bucket-lens/run"))


def test_the_plan_is_said_before_ray_starts_and_a_huge_one_refused():
    from lens_ray.config import ConfigError, load_config
    from lens_ray.pipelines.preflight import MAX_HEADS, check_plan
    said = []
    check_plan(load_config(None, {"methods": "original,lens", "factors": "4,8", "seeds": 3, "reward.heads": "mlp"}),
               said.append)
    # original: 3 heads (factor 1); lens: 2 factors x 3 seeds = 6 heads and 6 sets; one VAE per seed
    assert said == ["plan: 9 heads, 6 synthetic sets, 3 VAEs over 3 seeds, then a 5-fold selection"]
    check_plan(load_config(None, {"methods": "original", "seeds": 2, "selection.enabled": False}), said.append)
    assert said[-1] == "plan: 2 heads, 0 synthetic sets, 0 VAEs over 2 seeds"
    big = load_config(None, {"factors": ",".join(str(f) for f in range(2, 65)), "seeds": 100})
    with pytest.raises(ConfigError, match=rf"the plan has [\d,]+ heads to fit .* at most {MAX_HEADS:,}"):
        check_plan(big, said.append)
    assert len(said) == 2                                        # the refused plan said nothing
