"""Following logs over a real HTTP server: bytes arrive while the job runs, and many
followers at once are served by the event loop, not by a thread each."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from kaic.center.listen import bind_loopback_socket

from .jobs_support import JobsCenter, jobs_center, wait_for

WAIT_FOR_GO = 'while [ ! -e "$HOME/go" ]; do sleep 0.02; done\n'


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` (whose lifespan already runs in a TestClient) on a loopback port."""
    sock = bind_loopback_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the server to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_follow_streams_while_the_job_runs(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center, serve(center.app) as url:
        job = center.submit("echo first\n" + WAIT_FOR_GO + "echo second")
        path = f"{url}/v1/jobs/{job['id']}/logs"
        params = {"follow": "true"}
        with (
            httpx.Client(headers=center.auth(), timeout=20) as client,
            client.stream("GET", path, params=params) as response,
        ):
            assert response.status_code == 200
            chunks = response.iter_bytes()
            received = next(chunks)
            assert received == b"first\n"
            assert center.job(job["id"])["state"] == "RUNNING"
            (center.home() / "go").touch()
            received += b"".join(chunks)
        assert received == b"first\nsecond\n"
        assert center.job(job["id"])["state"] == "COMPLETED"


def test_a_hundred_followers(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center, serve(center.app) as url:
        job = center.submit("echo start\n" + WAIT_FOR_GO + "seq 1 1000")
        expected = b"start\n" + b"".join(b"%d\n" % i for i in range(1, 1001))
        center.wait_state(job["id"], "RUNNING")
        bodies = follow_all(center, url, job["id"], 100, (center.home() / "go").touch)
        assert all(body == expected for body in bodies)


def test_disconnected_follower_does_not_block_others(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center, serve(center.app) as url:
        job = center.submit("echo hi\n" + WAIT_FOR_GO)
        path = f"{url}/v1/jobs/{job['id']}/logs"
        with httpx.Client(headers=center.auth(), timeout=20) as client:
            for _ in range(5):
                with client.stream("GET", path, params={"follow": "true"}) as response:
                    assert next(response.iter_bytes()) == b"hi\n"
            # The server still answers promptly after the followers went away.
            assert client.get(f"{url}/v1/jobs/{job['id']}").json()["state"] == "RUNNING"
        (center.home() / "go").touch()
        assert center.wait_done(job["id"])["state"] == "COMPLETED"


def follow_all(
    center: JobsCenter, url: str, job_id: str, count: int, while_connected: Callable[[], None]
) -> list[bytes]:
    """`count` followers of the job; once each has its first bytes, `while_connected()` runs
    (in a thread); returns what each received by the end."""
    connected = 0

    async def follow(client: httpx.AsyncClient) -> bytes:
        nonlocal connected
        body = b""
        path = f"/v1/jobs/{job_id}/logs"
        async with client.stream("GET", path, params={"follow": "true"}) as response:
            async for chunk in response.aiter_bytes():
                if not body:
                    connected += 1
                body += chunk
        return body

    async def main() -> list[bytes]:
        limits = httpx.Limits(max_connections=count + 10)
        async with httpx.AsyncClient(
            base_url=url, headers=center.auth(), timeout=30, limits=limits
        ) as client:
            tasks = [asyncio.ensure_future(follow(client)) for _ in range(count)]
            while connected < count:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(while_connected)
            return await asyncio.gather(*tasks)

    return asyncio.run(asyncio.wait_for(main(), 60))
