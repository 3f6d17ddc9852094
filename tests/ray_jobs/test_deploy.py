"""The deployment examples in ``deploy/`` (no cluster, no Ray started): the YAMLs parse, the cluster
launcher's passes Ray's own schema, both run ``python -m ray_jobs.<job> --config FILE`` for a job
module that exists, the config file they name loads as a ``TrainConfig`` with S3 data and storage
and GPU workers, credentials come from IRSA / the instance profile, and no key is written anywhere.
"""

from __future__ import annotations

import copy
import importlib.util
import re
from pathlib import Path

import pytest
import yaml

from ray_jobs.cli import COMMANDS
from ray_jobs.config import TrainConfig
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
ENTRYPOINT = re.compile(r"python -m (ray_jobs\.\w+) --config (\S+)")
SECRET_NAMES = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "aws_secret_access_key",
                "SecretAccessKey")


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def _image_root() -> str:
    """Where deploy/Dockerfile puts this checkout in the image (its WORKDIR)."""
    return next(line.split()[1] for line in (DEPLOY / "Dockerfile").read_text().splitlines()
                if line.startswith("WORKDIR "))


def _check_entrypoint(command: str, image_root: str | None = None) -> TrainConfig:
    """The module exists and is a job of ours; the config file, mapped into this checkout, loads."""
    module, config = ENTRYPOINT.search(command).groups()
    assert importlib.util.find_spec(module) is not None, module
    assert module in {m for m, _ in COMMANDS.values()}, module  # an `interceptor <command>` job
    path = Path(config)
    if image_root is not None:
        assert config.startswith(image_root + "/"), (config, image_root)
        path = Path(config[len(image_root) + 1:])
    cfg = TrainConfig.load(REPO / path)  # unknown fields are refused in one line
    assert module == "ray_jobs.train"
    return cfg


def test_every_deploy_yaml_parses_and_holds_no_key():
    files = sorted(DEPLOY.glob("*.yaml"))
    assert {f.name for f in files} >= {"kuberay-rayjob.yaml", "cluster-aws.yaml", "run-s3.yaml"}
    for f in [*files, DEPLOY / "Dockerfile"]:
        if f.suffix == ".yaml":
            assert _docs(f.name), f
        text = f.read_text()
        assert not [s for s in SECRET_NAMES if s in text], f
        assert not re.search(r"\bAKIA[0-9A-Z]{16}\b", text), f  # an access key id


def test_run_config_streams_from_s3_on_gpus():
    cfg = TrainConfig.load(DEPLOY / "run-s3.yaml")
    assert set(cfg.shards) == {"ffpp", "celebdf", "dfdc"}
    assert all(v.startswith("s3://") for v in cfg.shards.values()) and cfg.storage_path.startswith("s3://")
    assert cfg.use_gpu and cfg.num_workers >= 1
    assert cfg.model.backbone == "efficientnet_b4" and (cfg.model.pretrained or cfg.model.weights_file)


def test_kuberay_rayjob_runs_the_train_entrypoint_with_irsa_and_gpus():
    docs = {d["kind"]: d for d in _docs("kuberay-rayjob.yaml")}
    job, account = docs["RayJob"], docs["ServiceAccount"]
    assert job["apiVersion"] == "ray.io/v1"
    cfg = _check_entrypoint(job["spec"]["entrypoint"], _image_root())
    assert cfg.storage_path.startswith("s3://")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    spec = job["spec"]["rayClusterSpec"]
    pods = [spec["headGroupSpec"]["template"]["spec"], *[g["template"]["spec"] for g in spec["workerGroupSpecs"]]]
    assert all(p["serviceAccountName"] == account["metadata"]["name"] for p in pods)
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu") for g in spec["workerGroupSpecs"]
            for c in g["template"]["spec"]["containers"]]
    assert gpus and all(int(n) >= 1 for n in gpus)
    images = {c["image"] for p in pods for c in p["containers"]}
    assert len(images) == 1  # head and workers run the same image: this project's (deploy/Dockerfile)


def test_cluster_launcher_yaml_passes_ray_s_schema_and_uses_instance_profiles():
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.commands import prepare_config
    from ray.autoscaler._private.util import validate_config

    (cluster,) = _docs("cluster-aws.yaml")
    validate_config(prepare_config(copy.deepcopy(cluster)))
    # how it is run (its header): `ray job submit ... -- python -m ray_jobs.train --config ...`
    commands = ENTRYPOINT.findall((DEPLOY / "cluster-aws.yaml").read_text())
    assert commands
    for module, config in commands:
        _check_entrypoint(f"python -m {module} --config {config}")
    nodes = cluster["available_node_types"]
    assert all(n["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::") for n in nodes.values())
    workers = [n for k, n in nodes.items() if k != cluster["head_node_type"]]
    assert workers and all(n["node_config"]["InstanceType"].startswith(("g", "p")) for n in workers)  # GPU types
    assert any("pip install" in c and "/home/ray/interceptor" in c for c in cluster["setup_commands"])
    assert cluster["file_mounts"]["/home/ray/interceptor"] == "."
