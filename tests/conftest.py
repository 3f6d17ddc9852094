"""Shared fixtures: a real Ray head on 127.0.0.1 and a real S3-compatible server (moto) on loopback.

Both are started by the tests and stopped when the session ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: the moto server's credentials, given to the Ray head when it starts (as a cluster's nodes get
#: theirs), never to a job: the secret is distinctive so that tests can look for it in Ray's metadata
S3_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "interceptor-test",
                       "AWS_SECRET_ACCESS_KEY": "interceptor-test-secret-5f1c9a7e",
                       "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_AUTH_MODE": "token", "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    """The synthetic benchmark at ``tiny`` scale (all three layouts), generated once per session."""
    from data_pipeline import synthetic

    root = tmp_path_factory.mktemp("synth_tiny")
    synthetic.generate(root, synthetic.config_for_scale("tiny"), progress=None)
    return root


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """``ray start --head`` on 127.0.0.1 (token auth on, as on a real cluster); yields addresses.

    The head starts with :data:`S3_TEST_CREDENTIALS` in its environment, which its workers inherit:
    the way a cluster's nodes get credentials (``docs/cloud.md``); jobs pass none."""
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("ray CLI not installed in this environment")
    gcs_port = free_port()
    dashboard_port = 8265 if _port_free(8265) else free_port()
    env = subprocess_env(**S3_TEST_CREDENTIALS)
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    cmd = [str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--num-cpus", "2",
           "--disable-usage-stats", "--include-dashboard", "true"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"ray start failed: {out.stderr[-2000:]}")
    _wait_port(dashboard_port, 120)
    try:
        yield {"gcs": f"127.0.0.1:{gcs_port}", "dashboard": f"http://127.0.0.1:{dashboard_port}", "env": env}
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True, timeout=120)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 with a bucket; yields endpoint, bucket and credentials env."""
    pytest.importorskip("moto")
    import boto3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 60)
        creds = dict(S3_TEST_CREDENTIALS)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"],
                              region_name=creds["AWS_DEFAULT_REGION"])
        client.create_bucket(Bucket="interceptor")
        yield {"endpoint": endpoint, "bucket": "interceptor", "env": creds, "client": client}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
