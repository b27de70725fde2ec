"""A connection times a round trip to its host (`ClientTransport.probe_round_trip`), and a
pull from a near host runs one worker per connection (`LocalDestination.channels`), against
a real sshd, straight and through the latency proxy. These tests count and compare with the
proxy's delay; they do not time the transfer (benchmarks/bench_wan.py does)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from kaic.staging import engine
from kaic.staging.connect import open_sftp
from kaic.staging.options import CHANNELS_PER_CONNECTION
from kaic.staging.transfer import SyncOptions, pull, push
from kaic.staging.transport import NEAR_RTT_S, PROBE_WAIT_S, ClientTransport
from kaic.staging.workers import SMALL_FILE
from tests.staging.conftest import SshEnv
from tests.staging.faults import LatencyProxy

Remote = tuple[str, Path]
RTT_MS = 20.0


def _probed(transport: ClientTransport) -> float:
    """The round trip once the last probe was answered (`near` waits for it)."""
    transport.near(wait_s=10.0)
    assert transport.round_trip is not None, "no probe was answered"
    return transport.round_trip


def test_a_connection_times_a_round_trip_near_on_loopback_and_far_through_a_slow_link(
    ssh_env: SshEnv,
) -> None:
    conn = open_sftp(ssh_env.target())
    try:
        transport = conn.transport
        assert isinstance(transport, ClientTransport)
        first = _probed(transport)
        if first >= NEAR_RTT_S:  # a busy machine: the shortest of a few more is what counts
            transport.probe_round_trip(times=5)
            _probed(transport)
        assert conn.near(), transport.round_trip
        assert transport.round_trip is not None and transport.round_trip < NEAR_RTT_S
        # the connection works on after its probes: their answers were not taken for others
        assert conn.sftp.stat(".").st_mode is not None
        assert transport.global_request("keepalive@openssh.com", wait=True) is None
    finally:
        conn.close()
    with LatencyProxy(ssh_env.sshd.port, rtt_ms=RTT_MS) as proxy:
        conn = open_sftp(ssh_env.target(port=proxy.port))
        try:
            transport = conn.transport
            assert isinstance(transport, ClientTransport)
            assert _probed(transport) >= RTT_MS / 1000 * 0.9
            assert not conn.near()
        finally:
            conn.close()


def _counted_workers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """(destination, connections, workers on each) of every `run_workers` from now on."""
    workers: list[tuple[str, int, int]] = []
    real_run_workers = engine.run_workers

    def counted(*args: Any, **kwargs: Any) -> None:
        workers.append((type(args[5]).__name__, len(args[1]), args[2].channels))
        real_run_workers(*args, **kwargs)

    monkeypatch.setattr(engine, "run_workers", counted)
    return workers


def test_a_pull_from_a_near_host_runs_one_worker_a_far_one_or_a_push_all(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On loopback a pull's workers only take turns on the interpreter's lock and the
    cores: one worker on one connection, for small files and a striped one alike. Through a
    slow link and for any push, every channel of every connection works."""
    name, view = remote_dir
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02d}.bin").write_bytes(bytes([i]) * (1000 + i))
    workers = _counted_workers(monkeypatch)
    assert push(ssh_env.target(), [str(src)], name).files_transferred == 40
    assert pull(ssh_env.target(), [name], str(tmp_path / "near")).files_transferred == 40
    with LatencyProxy(ssh_env.sshd.port, rtt_ms=RTT_MS) as proxy:
        far = pull(ssh_env.target(port=proxy.port), [name], str(tmp_path / "far"), SyncOptions())
        assert far.files_transferred == 40
    big = view / "big.bin"
    big.write_bytes(os.urandom(SMALL_FILE + 1))
    ssh_env.own(view)
    assert pull(ssh_env.target(), [f"{name}/big.bin"], str(tmp_path / "big.bin")).verified
    assert (tmp_path / "big.bin").read_bytes() == big.read_bytes()
    big.unlink()
    assert workers == [  # (destination, connections, workers on each)
        ("RemoteDestination", 2, CHANNELS_PER_CONNECTION),
        ("LocalDestination", 1, 1),
        ("LocalDestination", 2, CHANNELS_PER_CONNECTION),
        ("LocalDestination", 1, 1),  # (striped: its streams are the workers)
    ]
    for got in ("near", "far"):
        assert sorted(p.read_bytes() for p in (tmp_path / got).iterdir()) == sorted(
            p.read_bytes() for p in src.iterdir()
        )
    assert sorted(p.name for p in view.iterdir()) == sorted(p.name for p in src.iterdir())


def test_a_host_that_never_answers_the_probe_is_far_after_a_moment(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that does not answer global requests (RFC 4254 says it must) costs a pull
    at most `PROBE_WAIT_S` once, and the pull runs as from a far host."""
    name, view = remote_dir
    view.mkdir(parents=True)
    for i in range(5):
        (view / f"f{i}.txt").write_text(f"{i}\n")
    ssh_env.own(view)

    def unanswered(self: ClientTransport) -> None:  # (the probe is "sent", never answered)
        self._probes_left = 0
        self._probe_sent = time.monotonic()

    monkeypatch.setattr(ClientTransport, "_send_probe", unanswered)
    conn = open_sftp(ssh_env.target())
    try:
        started = time.monotonic()
        assert not conn.near()
        assert PROBE_WAIT_S * 0.9 <= time.monotonic() - started < PROBE_WAIT_S + 2.0
        assert conn.transport.round_trip is None  # type: ignore[attr-defined]
    finally:
        conn.close()
    workers = _counted_workers(monkeypatch)
    got = pull(ssh_env.target(), [name], str(tmp_path / "got"))
    assert got.files_transferred == 5
    assert workers == [("LocalDestination", 2, CHANNELS_PER_CONNECTION)]
