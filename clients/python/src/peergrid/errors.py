"""The client's errors: one base class, one subclass per thing a caller can do.

Every failed call raises a :class:`PeergridError`. Errors the server sent
carry its gRPC status code (:attr:`PeergridError.code`) and its message
verbatim (:attr:`PeergridError.message`); peergrid servers name the field and
the bound in it (``invalid count: must lie in 1..=100000, got 0``), and
:attr:`InvalidArgument.field` holds that field. Settings the client refuses
before dialling (a short token, ``https://`` without a CA) raise
:class:`ConfigError`, which has no code.

The mapping of gRPC codes to classes lives in :func:`from_rpc_error` and
nowhere else.
"""

from __future__ import annotations

import re

import grpc


class PeergridError(Exception):
    """Base class of every error this package raises.

    Attributes:
        code: the gRPC status code the server (or the gRPC library, e.g. for an
            unreachable server) answered with; ``None`` for client-side errors.
        message: the server's message verbatim (it names the field and the
            bound), or the client's.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message if code is None else f"{code.name}: {message}")
        self.code = code
        self.message = message


class ConfigError(PeergridError, ValueError):
    """A client setting or argument was refused before any call was made
    (token, URL, TLS CA file, scenario file, mode name)."""


class RpcError(PeergridError):
    """The server (or the gRPC library) answered a call with a status that is
    not OK; subclasses name the codes a caller can act on."""


class InvalidArgument(RpcError):
    """A request field is malformed or out of range (``INVALID_ARGUMENT``):
    fix the input. Nothing was changed.

    Attributes:
        field: the request field the server named (``count``,
            ``events[0].at_slot``, ``event.pv_scale``), or ``None`` if the
            message names none.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message, code)
        match = _FIELD.match(message)
        self.field: str | None = match.group(1) if match else None


class FailedPrecondition(RpcError):
    """Well-formed but not valid in the server's current state
    (``FAILED_PRECONDITION``)."""


class Unauthenticated(RpcError):
    """No token, or one that matches neither of the server's tokens
    (``UNAUTHENTICATED``)."""


class PermissionDenied(RpcError):
    """The token's role may not make this call, e.g. a control call with the
    agent token (``PERMISSION_DENIED``)."""


class ResourceExhausted(RpcError):
    """A size or count limit was exceeded (``RESOURCE_EXHAUSTED``), e.g. too
    many scenario events in force."""


class Unavailable(RpcError):
    """The server cannot be reached or is shutting down (``UNAVAILABLE``):
    retry later."""


class DeadlineExceeded(RpcError):
    """The call's timeout passed before the server answered
    (``DEADLINE_EXCEEDED``)."""


# `invalid <field>: <reason>` is how peergrid servers word INVALID_ARGUMENT
# (services/proto/src/error.rs, `WireError::InvalidArgument`).
_FIELD = re.compile(r"invalid (\S+): ")

_BY_CODE: dict[grpc.StatusCode, type[RpcError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def from_rpc_error(error: grpc.RpcError) -> RpcError:
    """The :class:`RpcError` subclass for a failed gRPC call."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else None) or str(error)
    return _BY_CODE.get(code, RpcError)(message, code)
