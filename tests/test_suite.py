"""The suite's own guards: under CI a missing real-data folder fails instead of skipping the 70-odd tests that
need it."""
import pytest

from tests.conftest import _real_data


def test_missing_real_data_fails_under_ci_and_skips_elsewhere(tmp_path, monkeypatch):
    missing = tmp_path / "nope.jsonl.gz"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have it"):
        _real_data(missing)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="real data not found"):
        _real_data(missing)
    there = tmp_path / "there.jsonl.gz"
    there.write_bytes(b"")
    assert _real_data(there) == there
