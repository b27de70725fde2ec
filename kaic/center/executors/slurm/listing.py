"""When and how the Slurm executor lists Slurm's jobs (`Listing`): its one batched
`GET /jobs` per poll, asking only for a change since the previous one.

A center holding 10,000 pending jobs made every poll fetch, parse and reconcile every job's
record (3.6 kB each in v0.0.38: 36 MB, ~0.4 s of the center's CPU), though none had changed.
Slurm's "changed since" (`update_time`) is all or nothing — slurmctld answers "no change"
when no job changed since then (slurmrestd: 304, no body), else lists every job — so a quiet
poll costs one small answer. What keeps it safe:

- the time asked about reaches `LISTING_OVERLAP` seconds before the previous poll's start
  (the center's clock), so slurmctld's clock may lag the center's by that much;
- a whole listing comes at least every `WHOLE_LISTING_EVERY` seconds regardless (a bound on
  what a clock further off could hide), and whenever the last whole listing lacked a job the
  executor tracks (its second absence is what makes the executor look it up);
- a listing that took W seconds (slurmrestd lists 10,000 jobs in seconds) is not asked for
  again sooner than `LISTING_SPACING` × W after it came: the scheduler's thread that waits for
  it has hand-overs and cancels to pass on in between (at most a third of its time listing).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kaic.center.executors.slurm.api import SlurmRestClient
from kaic.center.executors.slurm.records import SlurmJob

#: seconds a poll's "changed since" reaches back before the previous poll's start
LISTING_OVERLAP = 10
#: seconds between whole listings however quiet Slurm says it is
WHOLE_LISTING_EVERY = 60.0
#: a listing that took W seconds is not asked for again sooner than this many W after it came
LISTING_SPACING = 2.0


class Listing:
    """The executor's listings of Slurm's jobs; `clock` is the executor's (monotonic)."""

    def __init__(self, client: SlurmRestClient, clock: Callable[[], float]) -> None:
        self.client = client
        self.clock = clock
        #: when (`time.time()`) the last listing that reached Slurm was asked for
        self._asked_at: float | None = None
        #: when (`clock`) the last whole listing came
        self._listed_at = 0.0
        #: whether the last whole listing lacked a job the executor tracks
        self.missing = False
        #: the earliest `clock` time the next listing may be asked for
        self.not_before = 0.0

    def fetch(self, now: float) -> list[SlurmJob] | None:
        """Slurm's jobs, or None when none changed since the previous listing (with
        `LISTING_OVERLAP` to spare). Raises what the client raises."""
        since: int | None = None
        recent = now - self._listed_at < WHOLE_LISTING_EVERY
        if self._asked_at is not None and recent and not self.missing:
            since = int(self._asked_at) - LISTING_OVERLAP
        asked_at, started = time.time(), self.clock()
        records = self.client.jobs(changed_since=since)
        came = self.clock()
        self.not_before = came + LISTING_SPACING * (came - started)
        self._asked_at = asked_at
        if records is not None:
            self._listed_at = now
        return records
