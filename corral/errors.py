"""The exception hierarchy: one root, each subclass also the builtin it refines."""

from __future__ import annotations

__all__ = (
    "ActorCrashedError",
    "ActorNotRunningError",
    "ActorRestartingError",
    "AlreadyPresentError",
    "AlreadyStartedError",
    "BreakerError",
    "BreakerOpenError",
    "BreakerTimeoutError",
    "CallTimeoutError",
    "CorralError",
    "HandleTimeoutError",
    "MailboxFullError",
    "MaxChildrenError",
    "NoReplyError",
    "NotFoundError",
    "RestartingError",
    "RunningError",
    "SpecError",
    "StartError",
    "SupervisorGaveUpError",
    "UnhealthyError",
    "UnknownBreakerError",
    "UnknownPathError",
    "UnsupportedError",
)


class CorralError(Exception):
    """Root of every error corral raises on purpose."""


class SpecError(CorralError, ValueError):
    """A child or supervisor spec is invalid (caught before anything starts)."""


# -- dynamic child API errors, OTP's error cases -------------------------------------------


class ChildError(CorralError):
    """An operation on a supervisor's child was refused; carries the names involved."""

    def __init__(self, msg: str, *, supervisor: str, child_id: str) -> None:
        super().__init__(msg)
        self.supervisor = supervisor
        self.child_id = child_id


class NotFoundError(ChildError, LookupError):
    """The supervisor has no child with that id (OTP: ``{error, not_found}``)."""


class AlreadyPresentError(ChildError):
    """A child with that id exists but is not running (OTP: ``{error, already_present}``)."""


class AlreadyStartedError(ChildError):
    """A child with that id is running (OTP: ``{error, {already_started, Pid}}``)."""


class RunningError(ChildError):
    """The child is running, so it cannot be restarted or deleted (OTP: ``{error, running}``)."""


class RestartingError(ChildError):
    """The child is waiting to be restarted (OTP: ``{error, restarting}``)."""


class UnsupportedError(ChildError):
    """The operation does not apply to this kind of supervisor.

    OTP: ``{error, simple_one_for_one}``.
    """


class MaxChildrenError(CorralError):
    """A dynamic supervisor already has ``max_children`` children."""

    def __init__(self, msg: str, *, supervisor: str, max_children: int) -> None:
        super().__init__(msg)
        self.supervisor = supervisor
        self.max_children = max_children


class StartError(CorralError):
    """A child failed to start; the cause is chained as ``__cause__``."""

    def __init__(self, msg: str, *, supervisor: str, child_id: str) -> None:
        super().__init__(msg)
        self.supervisor = supervisor
        self.child_id = child_id


class SupervisorGaveUpError(CorralError):
    """A supervisor exceeded its restart intensity and shut down.

    OTP: ``reached_max_restart_intensity``.
    """

    def __init__(
        self,
        msg: str,
        *,
        supervisor: str,
        restarts: int,
        period: float,
        intensity: int | None = None,
        child: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.supervisor = supervisor
        self.restarts = restarts
        self.period = period
        self.intensity = intensity  # the limit it exceeded
        self.child = child  # the path of the child whose exit exceeded it


# -- messaging errors -----------------------------------------------------------------------


class ActorError(CorralError):
    """A message could not be delivered or answered; ``.path`` names the actor."""

    def __init__(self, msg: str, *, path: str) -> None:
        super().__init__(msg)
        self.path = path


class ActorNotRunningError(ActorError):
    """The actor is stopped (or was removed), so nothing would handle the message."""


class ActorRestartingError(ActorNotRunningError):
    """The actor waits in backoff to restart, and the sender asked to fail fast
    (``fail_fast=True``) rather than wait: ``retry_in`` is the time to its next attempt."""

    def __init__(self, msg: str, *, path: str, retry_in: float) -> None:
        super().__init__(msg, path=path)
        self.retry_in = retry_in


class MailboxFullError(ActorError):
    """The mailbox is full and its overflow policy is ``reject`` (or the caller would block)."""


class CallTimeoutError(ActorError, TimeoutError):
    """No reply arrived within the call's timeout."""


class ActorCrashedError(ActorError):
    """The actor crashed while handling this call; the exception is ``__cause__``."""


class NoReplyError(ActorError):
    """A function actor moved on to its next message without replying to a call."""


class HandleTimeoutError(ActorError, TimeoutError):
    """Handling one message took longer than the child's ``handle_timeout``: the handler was
    cancelled, the message kept as a dead letter (``timeout``), and the actor crashed."""


class UnhealthyError(ActorError):
    """The actor's health probes failed ``failures`` times in a row: it crashed with this,
    and its supervisor restarts it as after any crash."""


class UnknownPathError(CorralError, LookupError):
    """No actor or supervisor has that path in the tree."""

    def __init__(self, msg: str, *, path: str) -> None:
        super().__init__(msg)
        self.path = path


# -- circuit breakers ------------------------------------------------------------------------


class BreakerError(CorralError):
    """About one of an actor's breakers: ``.path`` names the actor, ``.breaker`` the breaker."""

    def __init__(self, msg: str, *, path: str, breaker: str) -> None:
        super().__init__(msg)
        self.path = path
        self.breaker = breaker


class BreakerOpenError(BreakerError):
    """The breaker let no call through: it is open (``retry_in``: seconds until its next
    trial, ``inf`` while an operator holds it open) or half-open with its trials under way
    (``retry_in`` 0). Raised at once, without calling the dependency."""

    def __init__(self, msg: str, *, path: str, breaker: str, state: str, retry_in: float) -> None:
        super().__init__(msg, path=path, breaker=breaker)
        self.state = state
        self.retry_in = retry_in


class BreakerTimeoutError(BreakerError, TimeoutError):
    """A call through the breaker ran past the breaker's ``timeout`` and was cancelled."""


class UnknownBreakerError(BreakerError, LookupError):
    """The actor's child declares no breaker of that name."""
