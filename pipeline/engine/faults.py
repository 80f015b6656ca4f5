"""What a failed Ray call says about the cluster: the only module of the engine that reads
Ray's exception types. The policy sees a :class:`Failure`, never an exception."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """One stage call that raised, as the policy needs it.

    ``infrastructure``: an actor, worker or node died or objects were lost (the cluster
    failed, not the track). ``dead_predictor``: the index of the GPU-stage actor whose death
    the error reports, when it names one. ``dead_elsewhere``: the error names a dead actor
    that is not a GPU-stage actor (a fit or decode worker beside the track).
    """

    infrastructure: bool
    stage: str  # decode | predict | fit
    error_type: str
    message: str  # first line, for the error row
    dead_predictor: int | None = None
    dead_elsewhere: bool = False


def is_infrastructure(err: BaseException | None) -> bool:
    """Actor, worker or node death, or lost objects, anywhere in the cause chain."""
    from ray import exceptions as rx

    infra = (
        rx.RayActorError,
        rx.WorkerCrashedError,
        rx.NodeDiedError,
        rx.ObjectLostError,
        rx.OwnerDiedError,
        rx.LocalRayletDiedError,
        rx.ActorUnavailableError,
    )
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, infra):
            return True
        err = getattr(err, "cause", None) or err.__cause__
    return False


def dead_actor_id(err: BaseException | None) -> str | None:
    """The id (hex) of the actor whose death ``err`` reports, innermost first, or None."""
    from ray import exceptions as rx

    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, rx.RayActorError) and getattr(err, "actor_id", None):
            found = err.actor_id
        err = getattr(err, "cause", None) or err.__cause__
    return found


def stage_of(err: BaseException) -> str:
    """The stage a task error came from, by the remote function's name."""
    name = getattr(err, "function_name", "") or ""
    text = f"{name} {err}"
    for stage, key in (("decode", "decode"), ("predict", "PredictorActor"), ("fit", "fit")):
        if key in text:
            return stage
    return "predict"


def classify(err: BaseException, actor_stage: dict[str, tuple[str, int]]) -> Failure:
    """``err`` as a :class:`Failure`; ``actor_stage`` maps actor ids (hex) to (stage, index)."""
    infra = is_infrastructure(err)
    dead = actor_stage.get(dead_actor_id(err) or "") if infra else None
    return Failure(
        infrastructure=infra,
        stage=dead[0] if dead else stage_of(err),
        error_type=type(err).__name__,
        message=str(err).splitlines()[0] if str(err) else type(err).__name__,
        dead_predictor=dead[1] if dead and dead[0] == "predict" else None,
        dead_elsewhere=dead is not None and dead[0] != "predict",
    )


def init_error(err: BaseException) -> str:
    """The constructor's own error out of Ray's actor-died message (its last line names it)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    own = next((ln for ln in reversed(lines) if "Error" in ln.split(":")[0]), lines[0] if lines else "")
    return own[:300]
