"""No secret reaches a job's metadata: credentials come from each node, only the endpoint and region
travel with a job (``ray_jobs/cluster.py``, ``docs/cloud.md``).

The session's Ray head starts with the moto test credentials in its environment
(``tests.conftest.S3_TEST_CREDENTIALS``), as a cluster node is given its own. A tiny job
(``tests/ray_jobs/secret_probe.py``) is submitted with ``ray job submit``; its task and actor must
see the node's credentials and the driver's endpoint, and neither the job's record nor its actors'
and tasks' runtime environments, as Ray's state API lists them, may hold the secret key.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from ray_jobs.cluster import forwarded_env
from tests.conftest import BIN, REPO, S3_TEST_CREDENTIALS, subprocess_env
from tests.ray_jobs.secret_probe import digest

SECRET = S3_TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
ENDPOINT = "http://127.0.0.1:9"  # never contacted: it only has to travel

STATE_SCRIPT = """
import json, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_tasks
address, submission_id = sys.argv[1:3]
client = JobSubmissionClient(address)
info = client.get_job_info(submission_id)
where = [("job_id", "=", info.job_id)]
print("STATE " + json.dumps({
    "job": repr(info), "jobs": repr(client.list_jobs()),
    "actors": [repr(a) for a in list_actors(address=address, filters=where, detail=True, limit=1000)],
    "tasks": [repr(t) for t in list_tasks(address=address, filters=where, detail=True, limit=1000)]}))
"""


def _line(text: str, prefix: str) -> dict:
    return json.loads(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix):])


def test_only_the_endpoint_and_region_are_forwarded(monkeypatch):
    for key, value in {**S3_TEST_CREDENTIALS, "AWS_SESSION_TOKEN": "token-1", "AWS_ENDPOINT_URL": ENDPOINT,
                       "AWS_PROFILE": "team"}.items():
        monkeypatch.setenv(key, value)
    assert forwarded_env() == {"AWS_ENDPOINT_URL": ENDPOINT, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.mark.ray
def test_submitted_job_metadata_holds_no_secret(ray_head):
    submission_id = f"secret-probe-{uuid.uuid4().hex[:8]}"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["dashboard"], "--submission-id", submission_id,
           "--working-dir", ".", "--", "env", f"AWS_ENDPOINT_URL={ENDPOINT}", "python", "-m",
           "tests.ray_jobs.secret_probe"]
    out = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    probe = _line(out.stdout, "PROBE ")
    # the workers have the credentials their node started with, and the endpoint the driver had
    for who in ("driver", "task", "actor"):
        assert probe[who]["AWS_SECRET_ACCESS_KEY"] == digest(SECRET), (who, probe)
        assert probe[who]["endpoint"] == ENDPOINT, (who, probe)

    state = subprocess.run([sys.executable, "-c", STATE_SCRIPT, ray_head["dashboard"], submission_id], cwd=REPO,
                           env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert state.returncode == 0, state.stdout[-2000:] + state.stderr[-3000:]
    listed = _line(state.stdout, "STATE ")
    actors, tasks = listed["actors"], listed["tasks"]
    assert any("ProbeActor" in a for a in actors) and any("probe_task" in t for t in tasks), listed
    # what was listed does carry the job's runtime environment: the endpoint, forwarded by init_ray
    assert any(ENDPOINT in a for a in actors) and any(ENDPOINT in t for t in tasks), listed
    for what, text in [("job", listed["job"]), ("ray job list", listed["jobs"]),
                       *[("actor", a) for a in actors], *[("task", t) for t in tasks]]:
        assert SECRET not in text, f"the secret key is in the {what}'s metadata: {text[:2000]}"


@pytest.mark.ray
def test_a_local_ray_s_workers_inherit_the_driver_s_credentials():
    """Without a cluster, ``init_ray`` starts Ray in the driver: its workers get the driver's
    credentials from the environment they inherit, not from the runtime env."""
    own = {"AWS_ACCESS_KEY_ID": "local-key", "AWS_SECRET_ACCESS_KEY": "local-secret-0b7d", "AWS_ENDPOINT_URL": ENDPOINT}
    out = subprocess.run([sys.executable, "-m", "tests.ray_jobs.secret_probe"], cwd=REPO,
                         env=subprocess_env(**own), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    probe = _line(out.stdout, "PROBE ")
    for who in ("task", "actor"):
        assert probe[who]["AWS_SECRET_ACCESS_KEY"] == digest(own["AWS_SECRET_ACCESS_KEY"]), (who, probe)
        assert probe[who]["pid"] != probe["driver"]["pid"]
