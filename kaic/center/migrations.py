"""The center database's schema, as the ordered list of its migrations (one module for all).

The database (`kaic.center.db.Database`) applies the ones a database has not seen yet, in
order, in one transaction when it opens the database, and records the version reached in SQLite's
`user_version`. Each entry names the tables it touches and the module that reads and
writes their rows: `kaic/center/store.py` (users, projects, memberships, tokens) and
`kaic/center/jobs/` (jobs in `store.py`, job events in `events.py`, idempotency keys in
`idempotency.py`).

Append new migrations; never edit one that has shipped (a database that ran it would not
run it again).
"""

from __future__ import annotations

#: Entry i migrates the schema from version i to i+1 (PRAGMA user_version).
MIGRATIONS: tuple[str, ...] = (
    # 1: users, projects, memberships, tokens (rows in kaic/center/store.py)
    """
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        unix_account  TEXT NOT NULL,
        password_hash TEXT,
        totp_secret   TEXT,
        created_at    TEXT NOT NULL
    );
    CREATE TABLE projects (
        id                INTEGER PRIMARY KEY,
        name              TEXT NOT NULL UNIQUE,
        gpu_hours_granted REAL NOT NULL,
        gpu_hours_used    REAL NOT NULL DEFAULT 0,
        created_at        TEXT NOT NULL
    );
    CREATE TABLE memberships (
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role       TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'owner')),
        PRIMARY KEY (project_id, user_id)
    );
    CREATE TABLE access_tokens (
        id           TEXT PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL CHECK (kind IN ('session', 'api', 'local')),
        scopes       TEXT NOT NULL,
        name         TEXT,
        family_id    TEXT,
        created_at   TEXT NOT NULL,
        expires_at   TEXT NOT NULL,
        last_used_at TEXT,
        revoked      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX access_tokens_user ON access_tokens(user_id, kind);
    CREATE INDEX access_tokens_family ON access_tokens(family_id);
    CREATE TABLE refresh_tokens (
        id         INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        family_id  TEXT NOT NULL,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at    TEXT,
        revoked    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
    """,
    # 2: jobs, job events, idempotency keys (rows in kaic/center/jobs/store.py, events.py,
    # idempotency.py)
    """
    CREATE TABLE jobs (
        id                 TEXT PRIMARY KEY,
        seq                INTEGER NOT NULL,
        kind               TEXT NOT NULL CHECK (kind IN ('job', 'array', 'task')),
        array_job_id       TEXT,
        array_task_id      INTEGER,
        array_limit        INTEGER,
        user_id            INTEGER NOT NULL REFERENCES users(id),
        project_id         INTEGER NOT NULL REFERENCES projects(id),
        name               TEXT NOT NULL,
        partition          TEXT NOT NULL,
        spec               TEXT NOT NULL,
        workdir            TEXT NOT NULL,
        time_limit_seconds INTEGER,
        gpus               INTEGER NOT NULL,
        depends_on         TEXT NOT NULL DEFAULT '',
        state              TEXT NOT NULL,
        reason             TEXT,
        exit_code          INTEGER,
        submitted_at       TEXT NOT NULL,
        started_at         TEXT,
        ended_at           TEXT,
        deadline_epoch     REAL,
        gpu_ids            TEXT NOT NULL DEFAULT '',
        external_id        TEXT,
        pid                INTEGER,
        pgid               INTEGER,
        proc_start         INTEGER,
        end_cause          TEXT,
        gpu_hours          REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_user ON jobs(user_id, kind, seq);
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_array ON jobs(array_job_id);
    CREATE TABLE job_events (
        id      INTEGER PRIMARY KEY,
        job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at      TEXT NOT NULL,
        state   TEXT,
        message TEXT NOT NULL
    );
    CREATE INDEX job_events_job ON job_events(job_id, id);
    CREATE TABLE idempotency_keys (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        key        TEXT NOT NULL,
        body_hash  TEXT NOT NULL,
        job_id     TEXT NOT NULL REFERENCES jobs(id),
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    """,
    # 3: one-time codes are single use: the last TOTP time step accepted per user
    # (kaic/center/store.py, `claim_totp_step`).
    """
    ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT -1;
    """,
    # 4: a job's kind as the user submitted it (`batch`, or `interactive`: an allocation for
    # interactive sessions) — not `kind`, which says job, array or task
    # (kaic/center/jobs/store.py).
    """
    ALTER TABLE jobs ADD COLUMN job_kind TEXT NOT NULL DEFAULT 'batch'
        CHECK (job_kind IN ('batch', 'interactive'));
    """,
    # 5: indexes for a long history (kaic/center/jobs/store.py; the queries and their plans
    # are in docs/benchmarks.md): what the API and the scheduler read costs in proportion to
    # what they return or to the active jobs, never to the finished ones.
    # - the next job number, MAX(seq), without reading every row;
    # - a user's jobs and arrays (not tasks) newest first, all of them or by state, and the
    #   ones that ended recently (the default listing), each an index range;
    # - an array's tasks by state and index (its derived state: any running? the first
    #   pending task's reason), which also serves "the tasks of an array";
    # - the queue: the active jobs and tasks in queue order, holding every column the
    #   scheduler decides with, so that its pass reads this small index alone (it holds
    #   the active rows only: a row leaves it when it ends).
    # The two indexes dropped are prefixes of these.
    """
    CREATE INDEX jobs_seq ON jobs(seq);
    CREATE INDEX jobs_user_seq ON jobs(user_id, seq) WHERE kind != 'task';
    CREATE INDEX jobs_user_state ON jobs(user_id, state, seq) WHERE kind != 'task';
    CREATE INDEX jobs_user_ended ON jobs(user_id, ended_at) WHERE kind != 'task';
    CREATE INDEX jobs_array_state ON jobs(array_job_id, state, array_task_id);
    CREATE INDEX jobs_queue ON jobs(
        seq, array_task_id, id, kind, array_job_id, array_limit, partition, gpus, depends_on,
        state, reason, deadline_epoch, gpu_ids, external_id, end_cause, time_limit_seconds
    ) WHERE state IN ('PENDING', 'RUNNING', 'SUSPENDED', 'COMPLETING') AND kind != 'array';
    DROP INDEX jobs_user;
    DROP INDEX jobs_array;
    """,
    # 6: the names of the nodes a job runs on, comma-separated, once it runs (`Job.nodes`;
    # a multi-node job's several) (kaic/center/jobs/ledger.py).
    """
    ALTER TABLE jobs ADD COLUMN nodes TEXT NOT NULL DEFAULT '';
    """,
    # 7 (issue 16): a job's attempt (a requeue after NODE_FAIL, PREEMPTED or BOOT_FAIL runs
    # it again as the same id: kaic/center/jobs/requeue.py), and the notifications of jobs'
    # ends waiting to be sent, so that a restart loses none (kaic/center/notify/outbox.py).
    """
    ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE notify_outbox (
        id          INTEGER PRIMARY KEY,
        job_id      TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        channel     TEXT NOT NULL CHECK (channel IN ('webhook', 'email')),
        target      TEXT NOT NULL,
        payload     TEXT NOT NULL,
        tries       INTEGER NOT NULL DEFAULT 0,
        next_at     REAL NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE INDEX notify_outbox_due ON notify_outbox(next_at);
    """,
    # 8 (issue 16): users' secrets (kaic/center/secrets.py): each value encrypted (AES-GCM,
    # bound to its user and name) with a key kept outside the database; `key_id` says which
    # key, so a center started with another key file refuses to start instead of failing jobs.
    """
    CREATE TABLE secrets (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        name       TEXT NOT NULL,
        ciphertext BLOB NOT NULL,
        key_id     TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (user_id, name)
    );
    """,
    # 9 (issue 13): job metrics (kaic/center/metrics/): a finished GPU job's efficiency, as
    # the JSON of `models.metrics.Efficiency` (NULL until it ends, and for jobs without GPUs),
    # and the caller's running jobs and tasks for `GET /v1/metrics/running`, an index range
    # per user.
    """
    ALTER TABLE jobs ADD COLUMN efficiency TEXT;
    CREATE INDEX jobs_user_running ON jobs(user_id, seq)
        WHERE state = 'RUNNING' AND kind != 'array';
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
