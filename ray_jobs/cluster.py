"""Connecting to Ray: join a cluster when one is given, otherwise start a local one.

Credentials never travel with a job. Whatever goes into a job's ``runtime_env`` is stored by the
cluster and shown with the job and with each of its actors and tasks (``ray job list``, ``ray list
actors --detail``: ``serialized_runtime_env``), so only the non-secret S3 settings in
:data:`FORWARDED_ENV` are passed on. Each node's workers take their credentials the way the node was
given them (``docs/cloud.md``): the environment of its ``ray start``, ``~/.aws/credentials``, the
instance role, the pod's service account (IRSA). A local Ray started here is one of those nodes: its
raylet, and so every worker, inherits this process' environment.
"""

from __future__ import annotations

import os

#: the only environment variables a job passes to its workers: where S3 is, not who may use it
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "AWS_EC2_METADATA_DISABLED")


def forwarded_env() -> dict[str, str]:
    """The non-secret S3 settings of this process (endpoint, region) that its workers should share."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to Ray once per process.

    * Inside ``ray job submit`` (``RAY_ADDRESS`` is set by the job runner) or with ``address``:
      join that cluster.
    * Otherwise start a new local Ray on this machine (the embedded default), limited to
      ``num_cpus`` when given, without the dashboard.

    The S3 endpoint and region of the calling process (:func:`forwarded_env`) are passed to the
    workers; credentials are not (see the module docstring).
    """
    import ray

    if ray.is_initialized():
        return
    env = forwarded_env()
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, runtime_env={"env_vars": env} if env else None)
        return
    # a local Ray is one machine that nobody preempts: skip Ray Train's preemption watcher (one
    # more actor process per trainer); on a cluster it stays on
    env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env})
