"""A tiny Ray job for ``test_secrets``: joins Ray as every job of the project does (``init_ray``),
runs one task and one actor, and prints one ``PROBE {json}`` line saying what the driver, the task
and the actor see of the S3 settings: the endpoint as is, the credentials only as digests (never
the values, which would land in the job's logs).

    python -m tests.ray_jobs.secret_probe            # inside ray job submit, or a local Ray
"""

from __future__ import annotations

import hashlib
import json
import os

import ray

from ray_jobs.cluster import init_ray

SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def digest(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest() if value else None


def seen() -> dict:
    """What this process has of the S3 settings."""
    return {"endpoint": os.environ.get("AWS_ENDPOINT_URL"), "pid": os.getpid(),
            **{k: digest(os.environ.get(k)) for k in SECRETS}}


@ray.remote(num_cpus=0.1)
def probe_task() -> dict:
    return seen()


@ray.remote(num_cpus=0.1)
class ProbeActor:
    def seen(self) -> dict:
        return seen()


def main() -> None:
    init_ray(num_cpus=1)
    actor = ProbeActor.remote()
    report = {"driver": seen(), "task": ray.get(probe_task.remote()), "actor": ray.get(actor.seen.remote()),
              "job_id": ray.get_runtime_context().get_job_id()}
    print("PROBE " + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
