"""The learning-curve job on the session's local Ray from a finished run, with results on S3 (moto) and a
resume."""
import pytest


@pytest.fixture(scope="module")
def curve(local_run, s3_server):
    from lens_ray.cli import curve_main
    _, _, run = local_run
    out = f"s3://{s3_server['bucket']}/curves/c"
    argv = ["--from-run", run.uri, "--out", out, "--sizes", "20,all", "--seeds", "2", "--heads", "mlp,linear",
            "--methods", "original,mean_diff,lens", "--factors", "2", "--set", "resources.tune_cpus_per_trial=0.5"]
    return argv, curve_main(argv), out


def test_curve_job_fits_every_cell_and_writes_its_report(curve):
    from lens_ray.store.storage import Storage
    _, result, out = curve
    assert {(r["size"], r["seed"]) for r in result["rows"]} == {(20, 0), (20, 1), (60, 0), (60, 1)}
    assert len(result["rows"]) == 4 * (1 + 2 * 2)                 # mean_diff + (original, lens x2) x 2 heads
    assert Storage(out).read_json("curve.json")["summary"] == result["summary"]
    page = Storage(out).read_bytes("report.html").decode()
    assert page.count("data:image/png;base64") == 2 and "Verdict per size" in page
    assert len(result["verdicts"]["accuracy"]) == 2


def test_curve_resumes_only_the_missing_tasks(curve, s3_server, capsys):
    import boto3

    from lens_ray.cli import curve_main
    argv, first, out = curve
    boto3.client("s3").delete_object(Bucket=s3_server["bucket"], Key="curves/c/tasks/20-s1.json")
    capsys.readouterr()
    again = curve_main(argv)
    assert "(3 done before)" in capsys.readouterr().out
    assert sorted(map(str, again["rows"])) == sorted(map(str, first["rows"]))   # the same rows, recomputed alike
