"""``peergrid.Trainer`` against a real ``trainer`` binary (it links
libtorch: ``scripts/python-env.sh`` puts torch's ``lib/`` on
LD_LIBRARY_PATH, and the binary carries an rpath to it)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import AGENT_TOKEN, OPERATOR_TOKEN, Proc, free_port, wait_until

import peergrid


@pytest.fixture(scope="module")
def trainer(log_dir: Path) -> Iterator[tuple[str, Proc]]:
    port = free_port()
    args = [f"--listen=127.0.0.1:{port}", f"--run-dir={log_dir / 'trainer-run'}", "--seed=7"]
    proc = Proc("trainer", args, log_dir)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.kill()


def test_trainer_status_before_any_experience(trainer: tuple[str, Proc]) -> None:
    url, proc = trainer
    with peergrid.Trainer(url, OPERATOR_TOKEN) as t:
        status = wait_until("the trainer answers Status", t.status, lambda s: True, [proc])
    assert isinstance(status, peergrid.TrainerStatus)
    assert (status.version, status.updates_done, status.samples_total) == (1, 0, 0)
    assert (status.mode, status.subscribers, status.batches_stale) == ("sync", 0, 0)
    assert math.isnan(status.mean_episode_return)


def test_trainer_status_with_the_agent_token_and_a_wrong_one(trainer: tuple[str, Proc]) -> None:
    url, proc = trainer
    with peergrid.Trainer(url, AGENT_TOKEN) as t:
        assert wait_until("the trainer answers Status", t.status, lambda s: True, [proc]).version == 1
    with peergrid.Trainer(url, "not-a-token-of-this-trainer") as t:
        with pytest.raises(peergrid.Unauthenticated):
            t.status()
