"""Ray actors of the explain job. The driver wraps the classes with ``ray.remote`` and sets
restarts, retries, resources and concurrency groups on purpose (see pipeline.driver)."""
from actors.predictor import PROBE_GROUP, PredictorActor

__all__ = ["PROBE_GROUP", "PredictorActor"]
