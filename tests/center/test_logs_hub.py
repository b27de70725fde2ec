"""The log hub on its own, over real files and a real event loop: one watcher per log,
every follower gets exactly the bytes from its offset, and the job's end is learned once —
from the ledger's announcement (confirmed by one read), from the sweep, or, for a job that
ended before anyone watched, from the watcher's first question."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from kaic.center.jobs.logs import CHUNK, LogHub

DEADLINE = 20.0


class Jobs:
    """What the hub asks the database, answered from a set, with every question counted."""

    def __init__(self) -> None:
        self.ended: set[str] = set()
        self.questions = 0
        self.lock = threading.Lock()

    def is_terminal(self, job_id: str) -> bool:
        with self.lock:
            self.questions += 1
            return job_id in self.ended

    def ended_among(self, job_ids: list[str]) -> set[str]:
        with self.lock:
            self.questions += 1
            return self.ended & set(job_ids)


def run(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(main(), DEADLINE))


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.01)


def test_every_follower_gets_exactly_its_bytes(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    jobs = Jobs()
    hub = LogHub(jobs.is_terminal, jobs.ended_among, poll=0.01, sweep=3600)
    # Lines, and a block larger than a chunk, so that followers read across chunks.
    pieces = [b"line %d\n" % i for i in range(200)] + [b"x" * (3 * CHUNK + 17), b"tail\n"]
    whole = b"".join(pieces)
    offsets = [0, 1, 7, 100, len(whole) - 5, len(whole), len(whole) + 10]

    async def main() -> list[bytes]:
        followers = [asyncio.ensure_future(collect(hub.follow("7", log, o))) for o in offsets]
        await until(lambda: hub.watchers == 1)
        with log.open("ab") as handle:
            for piece in pieces:
                handle.write(piece)
                handle.flush()
                await asyncio.sleep(0)
        jobs.ended.add("7")
        # From the scheduler's thread, as the ledger calls it.
        announcer = threading.Thread(target=hub.job_ended, args=("7",))
        announcer.start()
        announcer.join()
        bodies = await asyncio.gather(*followers)
        assert hub.watchers == 0
        return bodies

    bodies = run(main)
    for offset, body in zip(offsets, bodies, strict=True):
        assert body == whole[offset:], offset


def test_an_announced_end_is_confirmed_before_it_counts(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_bytes(b"one\n")
    jobs = Jobs()
    hub = LogHub(jobs.is_terminal, jobs.ended_among, poll=0.01, sweep=3600)

    async def main() -> None:
        follower = asyncio.ensure_future(collect(hub.follow("7", log, 0)))
        await until(lambda: jobs.questions >= 1)  # the watcher's first question
        # Announced, but the transaction rolled back: the job is not terminal.
        hub.job_ended("7")
        await until(lambda: jobs.questions >= 2)
        await asyncio.sleep(0.05)
        assert not follower.done()
        with log.open("ab") as handle:
            handle.write(b"two\n")
        jobs.ended.add("7")
        hub.job_ended("7")
        assert await follower == b"one\ntwo\n"

    run(main)


def test_the_sweep_ends_jobs_no_announcement_reached(tmp_path: Path) -> None:
    jobs = Jobs()
    hub = LogHub(jobs.is_terminal, jobs.ended_among, poll=0.01, sweep=0.05)
    logs = {job_id: tmp_path / job_id for job_id in ("1", "2", "3")}

    async def main() -> None:
        followers = {
            job_id: asyncio.ensure_future(collect(hub.follow(job_id, path, 0)))
            for job_id, path in logs.items()
        }
        await until(lambda: hub.watchers == 3)
        logs["2"].write_bytes(b"done\n")
        jobs.ended.add("2")  # ended on another center process: no announcement here
        assert await followers["2"] == b"done\n"
        assert not followers["1"].done() and not followers["3"].done()
        jobs.ended.update({"1", "3"})
        assert await asyncio.gather(followers["1"], followers["3"]) == [b"", b""]

    run(main)


def test_a_job_that_ended_before_it_was_watched(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_bytes(b"all of it\n")
    jobs = Jobs()
    jobs.ended.add("7")
    hub = LogHub(jobs.is_terminal, jobs.ended_among, poll=0.01, sweep=3600)
    assert run(lambda: collect(hub.follow("7", log, 4))) == b"of it\n"


def test_many_followers_one_watcher_one_question(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    jobs = Jobs()
    hub = LogHub(jobs.is_terminal, jobs.ended_among, poll=0.01, sweep=3600)

    async def main() -> list[bytes]:
        followers = [asyncio.ensure_future(collect(hub.follow("7", log, 0))) for _ in range(300)]
        await until(lambda: jobs.questions >= 1)
        for i in range(20):
            with log.open("ab") as handle:
                handle.write(b"%d\n" % i)
            await asyncio.sleep(0.02)
        assert hub.watchers == 1
        # Waiting costs the database nothing: one question when the log was first watched.
        assert jobs.questions == 1
        jobs.ended.add("7")
        hub.job_ended("7")
        return await asyncio.gather(*followers)

    expected = b"".join(b"%d\n" % i for i in range(20))
    assert run(main) == [expected] * 300


def test_a_follower_that_leaves_releases_the_log(tmp_path: Path) -> None:
    log = tmp_path / "stdout"
    log.write_bytes(b"hello\n")
    jobs = Jobs()
    hub = LogHub(jobs.is_terminal, jobs.ended_among, poll=0.01, sweep=3600)

    async def main() -> None:
        stream = hub.follow("7", log, 0)
        assert await anext(stream) == b"hello\n"
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.05)
        assert hub.watchers == 1
        waiting.cancel()  # the client went away while the follower waited
        await asyncio.gather(waiting, return_exceptions=True)
        assert hub.watchers == 0

    run(main)
