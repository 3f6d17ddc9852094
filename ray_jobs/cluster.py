"""Connecting to Ray: join a cluster when one is given, otherwise start a local one."""

from __future__ import annotations

import os

#: environment variables forwarded to every Ray worker (S3 credentials and endpoint)
FORWARDED_ENV_PREFIXES = ("AWS_",)


def forwarded_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to Ray once per process.

    * Inside ``ray job submit`` (``RAY_ADDRESS`` is set by the job runner) or with ``address``:
      join that cluster.
    * Otherwise start a new local Ray on this machine (the embedded default), limited to
      ``num_cpus`` when given, without the dashboard.

    S3 credentials (``AWS_*``) of the calling process are forwarded to the workers, which on a
    cluster do not inherit the driver's environment.
    """
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": forwarded_env()} if forwarded_env() else None
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, runtime_env=runtime_env)
        return
    # a local Ray is one machine that nobody preempts: skip Ray Train's preemption watcher (one
    # more actor process per trainer); on a cluster it stays on
    env = {**forwarded_env(), "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env})
