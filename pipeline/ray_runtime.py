"""Starting or joining Ray the same way from every command."""
from __future__ import annotations

import os


def init_ray(address: str | None = "local", num_cpus: int | None = None):
    """``local`` starts a private local Ray (dashboard on 127.0.0.1 only); ``auto`` or a
    ``ray://`` / ``host:port`` address joins a running cluster. Under ``ray job submit``
    (RAY_ADDRESS set) the job's cluster is joined whatever ``address`` says."""
    import ray
    if ray.is_initialized():
        return
    # workers import model plugins (--model module:factory) from where the driver does
    path = os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)
    env = {"RAY_DEDUP_LOGS": "1", "PYTHONPATH": path}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address in (None, "local") and not os.environ.get("RAY_ADDRESS"):
        # address="local" always starts a private instance, even beside a `ray start` head
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, dashboard_host="127.0.0.1",
                 log_to_driver=True, runtime_env={"env_vars": env})
    else:
        ray.init(address=None if address in (None, "local") else address, log_to_driver=True)
