"""Settings the client refuses before dialling, tokens from the environment,
TLS against a real market-node, and an unreachable server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import OPERATOR_TOKEN, TLS_DIR, Proc, free_port, wait_until

import peergrid

URL = "http://127.0.0.1:50051"


@pytest.mark.parametrize(
    ("token", "words"),
    [
        ("short-token", "token: must be at least 16 characters, got 11"),
        ("a token with spaces in it", "token: must be visible ASCII without spaces"),
        ("tökentökentökentöken", "token: must be visible ASCII without spaces"),
    ],
)
def test_bad_tokens_are_refused_without_echoing_them(token: str, words: str) -> None:
    with pytest.raises(peergrid.ConfigError) as raised:
        peergrid.Market(URL, token)
    assert str(raised.value) == words
    assert raised.value.code is None


@pytest.mark.parametrize(
    ("url", "tls_ca", "words"),
    [
        ("127.0.0.1:50051", None, "must be http://HOST:PORT or https://HOST:PORT"),
        ("grpc://127.0.0.1:50051", None, "must be http://HOST:PORT or https://HOST:PORT"),
        ("http://127.0.0.1", None, "needs a port"),
        ("http://127.0.0.1:50051/market", None, "must be http://HOST:PORT"),
        ("https://127.0.0.1:50051", None, "tls_ca: an https:// url needs the PEM CA file"),
        ("http://127.0.0.1:50051", TLS_DIR / "ca.pem", "tls_ca: given for http://127.0.0.1:50051, which is not https://"),
        ("https://127.0.0.1:50051", TLS_DIR / "missing.pem", "tls_ca: cannot read"),
        ("https://127.0.0.1:50051", TLS_DIR / "README.md", "holds no PEM certificate"),
    ],
)
def test_bad_urls_and_ca_files_are_refused(url: str, tls_ca: Path | None, words: str) -> None:
    with pytest.raises(peergrid.ConfigError, match=None) as raised:
        peergrid.Trainer(url, OPERATOR_TOKEN, tls_ca)
    assert words in str(raised.value)


def test_load_token_reads_the_variable_or_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = "PEERGRID_OPERATOR_TOKEN"
    monkeypatch.delenv(env, raising=False)
    monkeypatch.delenv(f"{env}_FILE", raising=False)
    assert peergrid.load_token(env) is None
    monkeypatch.setenv(env, OPERATOR_TOKEN)
    assert peergrid.load_token(env) == OPERATOR_TOKEN
    path = tmp_path / "token"
    path.write_text(OPERATOR_TOKEN + "\n")
    monkeypatch.setenv(f"{env}_FILE", str(path))
    with pytest.raises(peergrid.ConfigError, match="both set"):
        peergrid.load_token(env)
    monkeypatch.delenv(env)
    assert peergrid.load_token(env) == OPERATOR_TOKEN, "one trailing newline is dropped"
    path.write_text("short\n")
    with pytest.raises(peergrid.ConfigError, match=f"^{env}_FILE: must be at least 16 characters"):
        peergrid.load_token(env)


def test_an_unreachable_market_is_unavailable() -> None:
    with peergrid.Market(f"http://127.0.0.1:{free_port()}", OPERATOR_TOKEN, timeout=5.0) as m:
        with pytest.raises(peergrid.Unavailable) as raised:
            m.status()
    assert raised.value.code.name == "UNAVAILABLE"


@pytest.fixture(scope="module")
def tls_market(log_dir: Path) -> Iterator[tuple[str, Proc]]:
    """A market-node serving TLS with the test-only certificate (valid for
    localhost and 127.0.0.1)."""
    port = free_port()
    args = [
        f"--listen=127.0.0.1:{port}",
        f"--tls-cert={TLS_DIR / 'server.pem'}",
        f"--tls-key={TLS_DIR / 'server.key'}",
    ]
    proc = Proc("market-node:tls", args, log_dir)
    try:
        yield f"https://127.0.0.1:{port}", proc
    finally:
        proc.kill()


def test_tls_with_the_ca(tls_market: tuple[str, Proc]) -> None:
    url, proc = tls_market
    with peergrid.Market(url, OPERATOR_TOKEN, TLS_DIR / "ca.pem") as m:
        status = wait_until("the TLS market-node answers Status", m.status, lambda s: True, [proc])
        assert status.prosumers == 0
    port = url.rsplit(":", 1)[1]
    with peergrid.Market(f"https://localhost:{port}", OPERATOR_TOKEN, TLS_DIR / "ca.pem") as m:
        assert m.status().nodes == 0
    with peergrid.Market(url, OPERATOR_TOKEN, TLS_DIR / "ca.pem", tls_domain="localhost") as m:
        assert m.status().nodes == 0


def test_tls_with_another_ca_is_unavailable(tls_market: tuple[str, Proc]) -> None:
    url, proc = tls_market
    with peergrid.Market(url, OPERATOR_TOKEN, TLS_DIR / "ca.pem") as m:
        wait_until("the TLS market-node answers Status", m.status, lambda s: True, [proc])
    with peergrid.Market(url, OPERATOR_TOKEN, TLS_DIR / "other-ca.pem", timeout=5.0) as m:
        with pytest.raises(peergrid.Unavailable):
            m.status()
