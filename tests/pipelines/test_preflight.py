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
