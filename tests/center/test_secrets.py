"""Secrets on the local center: set, list, remove through the API; a job gets the value in
its environment and nothing else does (database file and its WAL, logs, every API answer,
the job's directory); per-user isolation; scopes; the key file across restarts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.secrets import KEY_FILE_NAME, SecretKeyError
from kaic.center.settings import CenterSettings
from tests.center.jobs_support import (
    JobsCenter,
    jobs_center,
    kill_job_processes,
    make_settings,
    mint_token,
    open_center,
    prepare_state,
)

VALUE = "wandb-3f9c1e7a-SECRET-VALUE-5d2b"
ROTATED = "wandb-rotated-77aa-SECRET-VALUE-0c1d"


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path) as center:
        yield center


def put(center: JobsCenter, name: str, value: str, user: str = "alice", token: str | None = None):
    headers = {"Authorization": f"Bearer {token or center.tokens[user]}"}
    return center.client.put(f"/v1/secrets/{name}", headers=headers, json={"value": value})


def delete(center: JobsCenter, name: str, user: str = "alice"):
    return center.client.delete(f"/v1/secrets/{name}", headers=center.auth(user))


def everything_on_disk(root: Path, skip: tuple[Path, ...] = ()) -> dict[Path, bytes]:
    found = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if any(path == s for s in skip) or path.is_symlink():
                continue
            found[path] = path.read_bytes()
    return found


def test_set_list_remove_never_shows_the_value(center: JobsCenter) -> None:
    created = put(center, "wandb", VALUE)
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "wandb"
    assert VALUE not in created.text
    replaced = put(center, "wandb", ROTATED)
    assert replaced.status_code == 200
    assert ROTATED not in replaced.text
    listed = center.get("/v1/secrets")
    assert listed.status_code == 200
    assert [s["name"] for s in listed.json()] == ["wandb"]
    assert set(listed.json()[0]) == {"name", "created_at", "updated_at"}
    assert VALUE not in listed.text and ROTATED not in listed.text
    one = center.get("/v1/secrets/wandb")
    assert one.status_code == 200 and ROTATED not in one.text
    assert delete(center, "wandb").status_code == 204
    assert center.get("/v1/secrets").json() == []
    gone = delete(center, "wandb")
    assert gone.status_code == 404
    assert "kaic secret list" in gone.json()["error"]["message"]


def test_bad_names_and_values_are_refused_without_echoing_them(center: JobsCenter) -> None:
    bad_value = "x" * 10 + "\x00" + "tail-SECRET"
    response = put(center, "wandb", bad_value)
    assert response.status_code == 422
    assert "tail-SECRET" not in response.text
    assert put(center, "-bad", VALUE).status_code == 422
    assert put(center, "wandb", "").status_code == 422


def test_a_job_gets_the_value_and_nothing_else_holds_it(center: JobsCenter) -> None:
    assert put(center, "wandb", VALUE).status_code == 201
    job = center.submit(
        'echo "key=$WANDB_API_KEY"', secrets={"WANDB_API_KEY": "wandb"}, env={"MODE": "x"}
    )
    done = center.wait_done(job["id"])
    assert done["state"] == "COMPLETED", done
    assert f"key={VALUE}" in center.stdout(job["id"])
    # Every answer about the job
    answers = [
        center.get(f"/v1/jobs/{job['id']}").text,
        center.get(f"/v1/jobs/{job['id']}/events").text,
        center.get("/v1/jobs", params={"all": "true"}).text,
        center.get("/v1/secrets").text,
    ]
    for text in answers:
        assert VALUE not in text
    # The stored job holds the reference only
    assert (
        "wandb"
        in center.app.state.store.fetchone("SELECT spec FROM jobs WHERE id = ?", (job["id"],))[
            "spec"
        ]
    )
    # Every file of the center's state (database, its WAL, logs, the job's directory) but
    # the job's own output
    stdout = center.state_dir / "jobs" / job["id"] / "stdout"
    files = everything_on_disk(center.state_dir, skip=(stdout,))
    assert any(p.name == "center.db" for p in files)
    for path, data in files.items():
        assert VALUE.encode() not in data, path


def test_a_rotated_secret_reaches_the_next_job(center: JobsCenter) -> None:
    put(center, "wandb", VALUE)
    first = center.submit('echo "$K"', secrets={"K": "wandb"})
    center.wait_done(first["id"])
    put(center, "wandb", ROTATED)
    second = center.submit('echo "$K"', secrets={"K": "wandb"})
    center.wait_done(second["id"])
    assert center.stdout(first["id"]).strip() == VALUE
    assert center.stdout(second["id"]).strip() == ROTATED


def test_a_missing_secret_is_refused_at_submit_and_dry_run(center: JobsCenter) -> None:
    body = {"run": "true", "secrets": {"HF_TOKEN": "hf"}}
    refused = center.post("/v1/jobs", json=body)
    assert refused.status_code == 422
    assert "kaic secret set hf" in refused.json()["error"]["message"]
    dry = center.post("/v1/jobs", json=body, params={"dry_run": "true"})
    assert dry.status_code == 200
    assert dry.json()["valid"] is False
    assert any("kaic secret set hf" in p for p in dry.json()["problems"])


def test_a_secret_removed_after_submit_fails_the_job_saying_so(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=1) as center:
        put(center, "wandb", VALUE)
        blocker = center.submit("sleep 30", resources={"gpus": 1})
        center.wait_state(blocker["id"], "RUNNING")
        # Waits for the GPU, so the secret can go before the job starts.
        job = center.submit("true", secrets={"K": "wandb"}, resources={"gpus": 1})
        assert delete(center, "wandb").status_code == 204
        center.post(f"/v1/jobs/{blocker['id']}/cancel")
        done = center.wait_done(job["id"])
        assert done["state"] == "FAILED", done
        assert "kaic secret set wandb" in done["reason"]


def test_another_user_can_neither_see_nor_use_a_secret(center: JobsCenter) -> None:
    put(center, "wandb", VALUE)
    assert center.get("/v1/secrets", "bob").json() == []
    assert center.get("/v1/secrets/wandb", "bob").status_code == 404
    assert delete(center, "wandb", "bob").status_code == 404
    refused = center.post("/v1/jobs", "bob", json={"run": "true", "secrets": {"K": "wandb"}})
    assert refused.status_code == 422
    assert "no secret 'wandb' of yours" in refused.json()["error"]["message"]
    # bob's own secret of the same name is his, and alice's stays hers
    put(center, "wandb", "bobs-own-value", user="bob")
    job = center.submit('echo "$K"', user="bob", secrets={"K": "wandb"})
    center.wait_done(job["id"], user="bob")
    assert center.stdout(job["id"], user="bob").strip() == "bobs-own-value"


def test_scopes(center: JobsCenter) -> None:
    store = center.app.state.store
    jobs_only = mint_token(store, "alice", ("jobs:read", "jobs:write"))
    reader = mint_token(store, "alice", ("secrets:read",))
    writer = mint_token(store, "alice", ("secrets:write",))
    assert put(center, "wandb", VALUE, token=jobs_only).status_code == 403
    assert put(center, "wandb", VALUE, token=reader).status_code == 403
    assert put(center, "wandb", VALUE, token=writer).status_code == 201
    as_reader = center.client.get("/v1/secrets", headers={"Authorization": f"Bearer {reader}"})
    assert as_reader.status_code == 200 and len(as_reader.json()) == 1
    as_jobs = center.client.get("/v1/secrets", headers={"Authorization": f"Bearer {jobs_only}"})
    assert as_jobs.status_code == 403
    removed = center.client.delete(
        "/v1/secrets/wandb", headers={"Authorization": f"Bearer {reader}"}
    )
    assert removed.status_code == 403


def test_the_key_file_is_private_beside_the_database(center: JobsCenter) -> None:
    key = center.state_dir / KEY_FILE_NAME
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600
    assert key.parent == (center.state_dir / "center.db").parent


def test_a_restart_with_the_same_key_still_decrypts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    prepare_state(state)
    settings = make_settings(state)
    try:
        with open_center(settings) as center:
            put(center, "wandb", VALUE)
        with open_center(settings) as center:
            job = center.submit('echo "$K"', secrets={"K": "wandb"})
            center.wait_done(job["id"])
            assert center.stdout(job["id"]).strip() == VALUE
    finally:
        kill_job_processes(state)


def test_an_operator_chosen_key_path(tmp_path: Path) -> None:
    state = tmp_path / "state"
    prepare_state(state)
    key = tmp_path / "elsewhere" / "kaic.key"
    settings = make_settings(state, secrets_key_file=key)
    with open_center(settings) as center:
        put(center, "wandb", VALUE)
    assert key.exists() and not (state / KEY_FILE_NAME).exists()


def refuses(settings: CenterSettings, match: str) -> None:
    with pytest.raises(SecretKeyError, match=match), open_center(settings):
        pass


def test_a_missing_or_wrong_key_file_fails_clearly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    prepare_state(state)
    settings = make_settings(state)
    with open_center(settings) as center:
        put(center, "wandb", VALUE)
    key = state / KEY_FILE_NAME
    saved = key.read_bytes()
    key.unlink()
    refuses(settings, r"is missing.*restore the file")
    assert not key.exists()  # no new key made over the old secrets
    other = tmp_path / "other.key"
    settings_other = make_settings(state, secrets_key_file=other)
    with pytest.raises(SecretKeyError, match="is missing"), open_center(settings_other):
        pass
    # A key of another center
    other_state = tmp_path / "other-state"
    prepare_state(other_state)
    with open_center(make_settings(other_state)):
        pass
    key.write_bytes((other_state / KEY_FILE_NAME).read_bytes())
    key.chmod(0o600)
    with pytest.raises(SecretKeyError, match="is not the key"), open_center(settings):
        pass
    # Readable by others
    key.write_bytes(saved)
    key.chmod(0o644)
    with pytest.raises(SecretKeyError, match="chmod 600"), open_center(settings):
        pass
    key.chmod(0o600)
    with open_center(settings) as center:
        assert [s["name"] for s in center.get("/v1/secrets").json()] == ["wandb"]
