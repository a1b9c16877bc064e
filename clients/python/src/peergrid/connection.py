"""Dialling a peergrid server: URL, TLS, bearer token — the client's edge.

The rules are those of the Rust clients (``services/runtime``): a server is
``http://HOST:PORT`` or ``https://HOST:PORT``; ``https`` needs a PEM CA file
(there is no system root store in peergrid's TLS setup) and ``http`` must not
have one; a token is at least 16 visible ASCII characters and travels as
``authorization: Bearer <token>`` on every call. Anything else is a
:class:`~peergrid.errors.ConfigError` naming the setting, raised before a
connection is made. Tokens never appear in an error or a ``repr``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import grpc

from peergrid.errors import ConfigError

#: Shortest accepted token, characters (``MIN_TOKEN_LEN`` of the Rust runtime).
MIN_TOKEN_LEN = 16
#: Largest message either way, bytes: the servers' limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def check_token(token: str, name: str = "token") -> str:
    """Returns ``token`` if it is at least :data:`MIN_TOKEN_LEN` visible
    ASCII characters; otherwise raises :class:`ConfigError` naming ``name``
    (never the token)."""
    if not isinstance(token, str):
        raise ConfigError(f"{name}: must be a str, got {type(token).__name__}")
    if len(token) < MIN_TOKEN_LEN:
        raise ConfigError(f"{name}: must be at least {MIN_TOKEN_LEN} characters, got {len(token)}")
    if not all("!" <= c <= "~" for c in token):
        raise ConfigError(f"{name}: must be visible ASCII without spaces")
    return token


def load_token(env: str) -> str | None:
    """Reads a token the way every peergrid binary does: from the variable
    ``env`` (e.g. ``PEERGRID_OPERATOR_TOKEN``) or from the file named by
    ``env + "_FILE"`` (one trailing newline dropped). Both set is an error;
    neither set returns ``None``."""
    file_env = f"{env}_FILE"
    value, path = os.environ.get(env), os.environ.get(file_env)
    if value is not None and path is not None:
        raise ConfigError(f"{env} and {file_env} are both set: set one")
    if path is not None:
        try:
            value = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"{file_env}: cannot read {path}: {e.strerror}") from None
        value = value.removesuffix("\n")
    return None if value is None else check_token(value, file_env if path is not None else env)


@dataclass(frozen=True)
class Target:
    """Where and how to dial: the validated settings of one server."""

    #: ``host:port`` as gRPC wants it.
    address: str
    secure: bool
    #: PEM bytes of the CA to trust (``https`` only).
    ca_pem: bytes | None = field(default=None, repr=False)
    #: Name to verify in the server's certificate instead of the host.
    tls_domain: str | None = None

    @classmethod
    def parse(cls, url: str, tls_ca: str | os.PathLike[str] | None, tls_domain: str | None = None) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ConfigError(f"url {url!r}: must be http://HOST:PORT or https://HOST:PORT")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            raise ConfigError(f"url {url!r}: needs a port (http://HOST:PORT)")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        secure = parts.scheme == "https"
        if secure and tls_ca is None:
            raise ConfigError(f"tls_ca: an https:// url needs the PEM CA file its certificate chains to ({url})")
        if not secure and tls_ca is not None:
            raise ConfigError(f"tls_ca: given for {url}, which is not https://")
        if not secure and tls_domain is not None:
            raise ConfigError(f"tls_domain: given for {url}, which is not https://")
        ca_pem = None
        if tls_ca is not None:
            try:
                ca_pem = Path(tls_ca).read_bytes()
            except OSError as e:
                raise ConfigError(f"tls_ca: cannot read {os.fspath(tls_ca)}: {e.strerror}") from None
            if b"-----BEGIN CERTIFICATE-----" not in ca_pem:
                raise ConfigError(f"tls_ca: {os.fspath(tls_ca)} holds no PEM certificate")
        return cls(address=f"{host}:{port}", secure=secure, ca_pem=ca_pem, tls_domain=tls_domain)

    def channel(self) -> grpc.Channel:
        """A channel to the server (gRPC connects lazily, on the first call)."""
        options: list[tuple[str, int | str]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if not self.secure:
            return grpc.insecure_channel(self.address, options=options)
        if self.tls_domain is not None:
            options.append(("grpc.ssl_target_name_override", self.tls_domain))
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca_pem)
        return grpc.secure_channel(self.address, credentials, options=options)


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The call metadata carrying ``token`` (none for ``None``: servers
    started with ``--insecure-no-auth``)."""
    if token is None:
        return ()
    return (("authorization", f"Bearer {check_token(token)}"),)
