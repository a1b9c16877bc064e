#!/usr/bin/env python3
"""Issue 12 measurement: a market-node with `ulimit -n 128` while a client
holds 200 idle TCP connections (no HTTP/2 preface) on loopback.

Reports the CPU seconds the market uses per 5 s, whether a fresh
`market-node health` check answers (at once, and after the handshake
deadline), the refusal metrics and the warning lines of its log.

usage: scripts/fd_exhaustion.py [--bin DIR] [--nofile 128] [--idle 200] [--market-arg ARG ...]
DIR defaults to $PEERGRID_BIN_DIR. Bounded: about 30 s, loopback only.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        body = b"".join(chunks).decode()
        return [l for l in body.splitlines() if l.startswith("peergrid_connections")]
    except OSError as e:
        return [f"(metrics unavailable: {e})"]


def health(binary, port, timeout):
    started = time.monotonic()
    try:
        r = subprocess.run(
            [binary, "health", "--addr", f"http://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        outcome = "SERVING" if r.returncode == 0 else f"exit {r.returncode}: {(r.stderr or r.stdout).strip()[-160:]}"
    except subprocess.TimeoutExpired:
        outcome = f"no answer within {timeout} s"
    return f"{outcome} ({time.monotonic() - started:.2f} s)"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.environ.get("PEERGRID_BIN_DIR", "target/debug"))
    p.add_argument("--nofile", type=int, default=128)
    p.add_argument("--idle", type=int, default=200)
    p.add_argument("--market-arg", action="append", default=[])
    a = p.parse_args()
    binary = os.path.join(a.bin, "market-node")
    port, metrics_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="fd-exhaustion-", suffix=".log", delete=False)
    args = [binary, "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"]
    args += ["--dataset", "synthetic", "--insecure-no-auth", *a.market_arg]
    market = subprocess.Popen(
        ["sh", "-c", f'ulimit -n {a.nofile} && exec "$@"', "sh", *args], stdout=log, stderr=subprocess.STDOUT
    )
    idle = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or market.poll() is not None:
                    sys.exit(f"market-node did not start (log: {log.name})")
                time.sleep(0.1)
        print(f"market-node pid {market.pid}, ulimit -n {a.nofile}, {a.idle} idle connections")
        print(f"  health before:              {health(binary, port, 5)}")
        for _ in range(a.idle):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(1)
        before = cpu_seconds(market.pid)
        time.sleep(5)
        used = cpu_seconds(market.pid) - before
        print(f"  CPU seconds per 5 s:        {used:.2f}")
        print(f"  health while held:          {health(binary, port, 5)}")
        time.sleep(max(0.0, 12 - 5))
        print(f"  health 12 s+ after opening: {health(binary, port, 5)}")
        for line in scrape(metrics_port):
            print(f"  {line}")
    finally:
        for s in idle:
            s.close()
        market.terminate()
        try:
            market.wait(timeout=20)
        except subprocess.TimeoutExpired:
            market.kill()
    with open(log.name) as f:
        warnings = [l.strip() for l in f if "WARN" in l]
    print(f"  warning lines in the log:   {len(warnings)}")
    for line in warnings[:3]:
        print(f"    {line[:220]}")


if __name__ == "__main__":
    main()
