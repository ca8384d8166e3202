"""The problem catalogue: every problem ``type`` slug the service answers or stores on a job,
with a human title and a description (served at ``/problems/<slug>``).

Titles are phrases for people (RFC 9457 section 3.1.3), never class names; the slug is the
stable machine-readable part.
"""

from __future__ import annotations

import re
from typing import Any

#: slug -> (title, description)
CATALOGUE: dict[str, tuple[str, str]] = {
    "bad_request": ("Bad request", "The request could not be understood."),
    "unauthorized": ("Authentication required",
                     "Send 'Authorization: Bearer <token>' with a configured token."),
    "forbidden": ("Permission denied", "The token lacks the scope this operation needs."),
    "not_found": ("Not found", "No such resource (or the job expired under retention)."),
    "method_not_allowed": ("Method not allowed", "The resource does not accept this method."),
    "not_acceptable": ("Not acceptable", "No representation matches the Accept header."),
    "conflict": ("Not possible in the job's state",
                 "The job's state does not allow the transition asked for."),
    "too_large": ("Request too large", "The body exceeds the 1 MiB limit."),
    "unsupported_media_type": ("Unsupported media type", "Send application/json."),
    "invalid_request": ("Invalid request", "The request does not match the schema."),
    "too_many_requests": ("Too many requests", "Retry after the indicated delay."),
    "path_refused": ("Path refused", "A path escapes its root (.., absolute, symlink, "
                     "parent locator) or names a device."),
    "invalid_config": ("Invalid service configuration", "A setting of the service itself "
                       "(e.g. VHDMEND_REDIS_URL) is invalid; the operator must fix it."),
    "unknown_root": ("Unknown storage root", "The host has no storage root of that name."),
    "idempotency_key_reused": ("Idempotency key reused with another body",
                               "The same Idempotency-Key was sent with a different request."),
    "callback_refused": ("Callback refused", "The callback's host is not on the webhook "
                         "allow-list, or its secret is not a valid whsec_ secret."),
    "unavailable": ("Service unavailable", "Something the service depends on (Redis, the "
                    "host's worker) is not available; retry after the indicated delay."),
    "no_live_worker": ("No live worker for the host", "No worker of that storage host is "
                       "heartbeating; retry after the indicated delay."),
    "lost_lease": ("Lost the job's lease", "Another execution owns the job."),
    "internal": ("Internal error", "An unexpected error; it has been logged."),
    "service_error": ("Service error", "The service could not complete the request."),
    "plan_failed": ("Plan failed", "The worker could not plan the operation."),
    # vhdlib.errors codes (a job's error and a failed plan carry them)
    "vhdlib_error": ("Disk operation failed", "The disk library reported an error."),
    "usage": ("Invalid operation request", "An option, path or combination is invalid."),
    "not_a_disk": ("Not a virtual disk", "The file is missing or not a VHD/VHDX image."),
    "corrupt_image": ("Damaged disk image", "A structure of the image is damaged."),
    "unsupported": ("Unsupported image feature", "The image uses a feature not supported."),
    "checksum": ("Checksum mismatch", "A structure's checksum does not match its bytes."),
    "chain": ("Broken disk chain", "The differencing chain is inconsistent."),
    "parent_not_found": ("Parent disk not found", "A differencing disk's parent is missing."),
    "parent_mismatch": ("Parent disk does not match", "The parent is not the one the child "
                        "was made from."),
    "chain_loop": ("Disk chain loops", "The parent locators form a cycle."),
    "insufficient_space": ("Not enough free space", "A volume lacks the space the plan needs."),
    "refused": ("Refused for safety", "Going on could lose data; nothing was changed."),
    "in_use": ("Disk in use", "Another process holds a file of the chain open."),
    "changed_input": ("Input changed", "An input changed since the operation began."),
    "operation_in_progress": ("Operation already in progress",
                              "Another operation holds the journal."),
    "dependent_children": ("Disk has dependent children", "Other disks depend on this one."),
    "fenced": ("Superseded by a newer execution", "A newer execution owns the operation."),
    "cancelled": ("Cancelled", "The operation was cancelled; the originals are valid."),
}

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def humanize(name: str) -> str:
    """``NotADiskError`` -> ``Not a disk`` (a fallback for a code not catalogued)."""
    words = _CAMEL.sub(" ", name.removesuffix("Error")).split() or ["Error"]
    return " ".join([words[0]] + [w.lower() for w in words[1:]])


def title_for(code: str, fallback: str | None = None) -> str:
    """The human title of problem ``code``."""
    if code in CATALOGUE:
        return CATALOGUE[code][0]
    return humanize(fallback) if fallback else humanize(code.replace("_", " ").title()
                                                         .replace(" ", ""))


def description(code: str) -> str | None:
    entry = CATALOGUE.get(code)
    return entry[1] if entry else None


def humane(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """A job's ``error`` with its title taken from the catalogue (not a class name)."""
    if not error:
        return error
    code = str(error.get("type") or "internal")
    return {**error, "type": code, "title": title_for(code, str(error.get("title") or ""))}


def error_codes(root: type) -> set[str]:
    """Every code of ``root`` (``service.errors.ServiceError``) and its subclasses: the
    catalogue must cover them (see the tests). Passed in: errors imports this module."""
    out: set[str] = set()
    stack: list[type] = [root]
    while stack:
        cls = stack.pop()
        out.add(str(getattr(cls, "code")))  # noqa: B009 (root passed in, untyped here)
        stack.extend(cls.__subclasses__())
    return out
