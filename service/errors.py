"""The one exception root of the service, split by who is at fault.

* :class:`ClientError` - the caller sent something invalid (unknown root, path escaping
  the root, bad state transition). The API answers 4xx.
* :class:`ConfigError` - the operator's configuration is invalid (found at start-up).
* :class:`NotFound` / :class:`Conflict` - specific client faults (404, 409).
* :class:`EnvironmentFault` - Redis unreachable, a host without a worker. The API answers 503.
* :class:`LostLease` - this execution no longer owns its job (another took over); it must
  stop without touching the job record.
* :class:`InternalFault` - a bug in the service.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Root of every error the service raises on purpose."""

    #: HTTP status the API maps this class to.
    status = 500
    #: Stable machine-readable code (the tail of the problem ``type`` URI).
    code = "service_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def to_dict(self) -> dict[str, str]:
        """``{type, title, detail}`` as stored on a job's ``error`` (a human title)."""
        from service.problems import title_for
        return {"type": self.code, "title": title_for(self.code, type(self).__name__),
                "detail": self.detail}


# --- the caller is at fault -------------------------------------------------------------


class ClientError(ServiceError):
    """The request is invalid."""

    status = 422
    code = "invalid_request"


class ConfigError(ClientError):
    """The service's own configuration is invalid (a malformed ``VHDMEND_REDIS_URL``, a
    Sentinel URL without a master name): the operator's fault, found at start-up."""

    code = "invalid_config"


class PathRefused(ClientError):
    """A path escapes its root (``..``, absolute, symlink, parent locator) or is a device."""

    code = "path_refused"


class UnknownRoot(ClientError):
    """The named storage root is not configured on that host."""

    code = "unknown_root"


class NotFound(ClientError):
    """No such job (or it expired under the retention policy)."""

    status = 404
    code = "not_found"


class Conflict(ClientError):
    """The job's state does not allow the transition asked for."""

    status = 409
    code = "conflict"


class CallbackRefused(ClientError):
    """A callback the service would never deliver: its host is off the webhook allow-list,
    or its secret is not a valid Standard Webhooks ``whsec_<base64>`` secret."""

    code = "callback_refused"


class IdempotencyMismatch(ClientError):
    """An Idempotency-Key was reused with another request body."""

    status = 422
    code = "idempotency_key_reused"


# --- the environment is at fault --------------------------------------------------------


class EnvironmentFault(ServiceError):
    """Something the service depends on is unavailable (Redis, a host's worker)."""

    status = 503
    code = "unavailable"


class NoLiveWorker(EnvironmentFault):
    """No worker of the storage host is heartbeating: a synchronous call cannot be answered."""

    code = "no_live_worker"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.headers = {"Retry-After": str(retry_after)}


class LostLease(ServiceError):
    """This execution's lease on a job or chain lock is gone; another owner may run."""

    status = 409
    code = "lost_lease"


# --- the service is at fault ------------------------------------------------------------


class InternalFault(ServiceError):
    """An invariant of the service failed: a bug."""

    code = "internal"
