"""Ray actors of the explain job. The classes are plain Python; the driver wraps them with
``ray.remote`` and sets restarts, retries and resources on purpose (see pipeline.driver)."""
from actors.predictor import PredictorActor
from actors.surrogate import SurrogateActor

__all__ = ["PredictorActor", "SurrogateActor"]
