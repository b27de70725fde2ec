"""What resolving a job's secrets costs at its start: one read of the ciphertexts (one
indexed query) and one AES-GCM decryption per secret, against an empty resolution (a job
that names none), interleaved A, B, A, B.

Runs in-process on a fresh database in a temp dir (no center, no job): the cost measured is
exactly `Secrets.resolve`, which `jobs.launch.launch_spec` calls once per job start. The
load (`os.getloadavg()`) is printed before each round.

Usage:
    python benchmarks/bench_secrets.py [--rounds 4] [--starts 2000] [--secrets 1,4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from kaic.center.admin import add_user
from kaic.center.secrets import Secrets, key_file_path
from kaic.center.store import Store


def _per_start(secrets: Secrets, user_id: int, refs: dict[str, str], starts: int) -> float:
    """Microseconds per resolution of `refs`, over `starts` resolutions."""
    begin = time.perf_counter()
    for _ in range(starts):
        secrets.resolve(user_id, refs)
    return (time.perf_counter() - begin) / starts * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--starts", type=int, default=2000)
    parser.add_argument("--secrets", default="1,4", help="how many secrets a job names")
    args = parser.parse_args()
    counts = [int(n) for n in args.secrets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        add_user(state, "alice", password=None, enable_otp=False, unix_account=None)
        store = Store(state)
        try:
            secrets = Secrets.open(store, key_file_path(state, None))
            user = store.get_user("alice")
            assert user is not None
            for i in range(max(counts)):
                secrets.set(user.id, f"s{i}", f"value-{i}-" + "x" * 40)
            cases = {"none": {}}
            cases.update({f"{n} secret(s)": {f"V{i}": f"s{i}" for i in range(n)} for n in counts})
            results: dict[str, list[float]] = {name: [] for name in cases}
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}: load {os.getloadavg()}")
                for name, refs in cases.items():  # interleaved: every case each round
                    results[name].append(_per_start(secrets, user.id, refs, args.starts))
            for name, values in results.items():
                shown = ", ".join(f"{v:.1f}" for v in values)
                print(f"{name:>12}: {min(values):7.1f} µs per job start (rounds: {shown})")
        finally:
            store.close()


if __name__ == "__main__":
    main()
