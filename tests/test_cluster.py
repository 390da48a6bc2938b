"""Cluster YAMLs, checked offline with Ray's own autoscaler schema and defaults (no cloud call)."""
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def test_aws_yaml_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = prepare_config(yaml.safe_load((CLUSTER / "aws.yaml").read_text()))
    validate_config(cfg)
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["min_workers"] == 0 and types["gpu_worker"]["max_workers"] >= 1
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["cpu_worker"]["min_workers"] == 0
    assert any("pip install -q -e" in c for c in cfg["setup_commands"])


def test_schema_check_is_real():
    from ray.autoscaler._private.util import prepare_config, validate_config
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    del cfg["available_node_types"]["gpu_worker"]["node_config"]
    with pytest.raises(Exception, match="node_config"):
        validate_config(prepare_config(cfg))


def test_kuberay_rayjob_manifest():
    doc = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    assert doc["kind"] == "RayJob" and doc["apiVersion"] == "ray.io/v1"
    assert "jobs/full.py" in doc["spec"]["entrypoint"]
    spec = doc["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0" and spec["enableInTreeAutoscaling"]
    gpu = [g for g in spec["workerGroupSpecs"]
           if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
    assert gpu and gpu[0]["minReplicas"] == 0


@pytest.mark.parametrize("name", ["aws.yaml", "kuberay-rayjob.yaml"])
def test_no_credentials_in_cluster_files(name):
    text = (CLUSTER / name).read_text().lower()
    for secret in ("aws_access_key_id", "aws_secret_access_key", "secretaccesskey", "akia"):
        assert secret not in text
