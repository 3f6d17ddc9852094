"""Connecting to Ray: join a cluster when one is given, otherwise start a local one."""

from __future__ import annotations

import os


def init_ray(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> None:
    """Connect to Ray once per process.

    * Inside ``ray job submit`` (``RAY_ADDRESS`` is set by the job runner) or with ``address``:
      join that cluster.
    * Otherwise start a local Ray on this machine (the embedded default), limited to ``num_cpus``
      when given, without the dashboard.
    """
    import ray

    if ray.is_initialized():
        return
    kwargs: dict = {"log_to_driver": not quiet or True, "configure_logging": True}
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address or None, **kwargs)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
