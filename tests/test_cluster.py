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
    assert any("pip install -q -c /home/ubuntu/lens-ray/requirements-lock.txt -e" in c for c in cfg["setup_commands"])


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


def test_cluster_processes_use_token_auth_from_a_secret():
    """The dashboard listens beyond loopback on a cluster: every Ray process runs with token auth, the token
    comes from a secret store at start-up, and no file holds it."""
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    for cmd in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]:
        assert "RAY_AUTH_MODE=token ray" in cmd
    assert any("secretsmanager get-secret-value" in c and "~/.ray/auth_token" in c for c in cfg["setup_commands"])
    from lens_ray.distributed.proxy_guard import CALLBACK
    guard = f"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH={CALLBACK}"
    assert guard in cfg["head_start_ray_commands"][1]          # Serve's proxy, on the head, bounds its connections
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in (CLUSTER / "aws.yaml").read_text()   # would bind loopback only
    doc = yaml.safe_load((CLUSTER / "kuberay-rayjob.yaml").read_text())
    spec = doc["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]] + \
        [doc["spec"]["submitterPodTemplate"]]
    for pod in pods:
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "lens-ray-auth"


def test_serve_config_builds_the_reward_application(local_run, monkeypatch):
    """cluster/serve.yaml passes Ray Serve's own schema, and its import path and args build the reward
    application (on a finished run), with the replicas, batching, normalization and token it names."""
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.deployment import Application
    from ray.serve.schema import ServeDeploySchema

    from lens_ray.config import ServeConfig
    _, _, run = local_run
    doc = yaml.safe_load((CLUSTER / "serve.yaml").read_text())
    app = ServeDeploySchema.parse_obj(doc).applications[0]
    assert app.import_path == "lens_ray.distributed.serving:app_builder" and app.route_prefix == "/"
    monkeypatch.setenv(app.args["token_env"], "a-token")
    built = call_user_app_builder_with_args_if_necessary(import_attr(app.import_path), {**app.args, "run": run.uri})
    assert isinstance(built, Application)
    deployment = built._bound_deployment                               # what Serve would deploy
    assert deployment.num_replicas == int(app.args["replicas"]) == 2
    sc = ServeConfig(**deployment.init_args[1])
    assert (sc.normalize, sc.max_batch_size, sc.batch_wait_ms) == (True, 32, 10.0)
    import hashlib
    assert deployment.init_args[2] == hashlib.sha256(b"a-token").hexdigest()   # only the token's digest travels
    assert deployment.max_ongoing_requests == sc.max_waiting_bodies + 4 * sc.max_batch_size
