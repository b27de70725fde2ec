"""A rendezvous of a multi-node job's ranks in plain Python, using only kaic's variables.

Rank 0 listens on `KAIC_MASTER_ADDR:KAIC_MASTER_PORT`, every other rank connects (retrying
until rank 0 listens, as torchrun's rendezvous does); each sends its value and prints the one
it received, with the times (Unix seconds) it started and met, for `bench_multinode.py`.
Run by the multi-node Slurm tests and benchmark as a job's `run` (torch is not installed).
"""

from __future__ import annotations

import os
import socket
import time

TIMEOUT = 60.0


def main() -> None:
    started = time.time()
    rank = int(os.environ["KAIC_NODE_RANK"])
    nnodes = int(os.environ["KAIC_NNODES"])
    addr, port = os.environ["KAIC_MASTER_ADDR"], int(os.environ["KAIC_MASTER_PORT"])
    print(
        f"rank {rank} of {nnodes}: nodelist={os.environ['KAIC_NODELIST']} master={addr}:{port}"
        f" gpus_per_node={os.environ['KAIC_GPUS_PER_NODE']}",
        flush=True,
    )
    mine = f"value-of-rank-{rank}".encode()
    received: list[bytes] = []
    if rank == 0:
        with socket.create_server((addr, port)) as server:
            server.settimeout(TIMEOUT)
            for _ in range(nnodes - 1):
                conn, _ = server.accept()
                with conn:
                    received.append(conn.recv(256))
                    conn.sendall(mine)
    else:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                conn = socket.create_connection((addr, port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with conn:
            conn.sendall(mine)
            received.append(conn.recv(256))
    met = time.time()
    for value in received:
        print(f"rank {rank} got {value.decode()}", flush=True)
    print(f"rank {rank} started={started:.3f} met={met:.3f}", flush=True)


if __name__ == "__main__":
    main()
