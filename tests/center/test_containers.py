"""Jobs in images on the local center, for real (bubblewrap over a busybox root filesystem):
the job runs in the image with its storage and workdir at their own paths, and behaves
exactly as without an image — exit codes, signal deaths, time limits, cancel, logs (the
conformance idea: the same job with and without an image, the same outcome). Unknown images,
paths outside the user's storage and non-images are refused at dry-run and submit."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.center.containers_support import MARKER, MARKER_TEXT, make_rootfs, require_bwrap
from tests.center.jobs_support import JobsCenter, jobs_center, wait_for
from tests.helpers import unavailable


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalogue directory with one image, `busybox:1.35`, and a second tag of it."""
    require_bwrap()
    base = tmp_path_factory.mktemp("images")
    rootfs = make_rootfs(base / "busybox-rootfs")
    entries = base / "catalogue"
    entries.mkdir()
    (entries / "busybox.yaml").write_text(
        f"name: busybox\ntag: '1.35'\ndescription: BusyBox 1.35, static\nrootfs: {rootfs}\n"
    )
    (entries / "other.yaml").write_text(
        "name: registry-only\nuri: nvcr.io#nvidia/pytorch:24.10-py3\n"
    )
    return entries


@pytest.fixture
def center(tmp_path: Path, catalogue: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path, images=catalogue) as c:
        yield c


def _outcome(center: JobsCenter, job_id: str) -> tuple[str, int | None, str]:
    job = center.wait_done(job_id)
    return job["state"], job["exit_code"], center.stdout(job_id)


def test_a_job_runs_in_the_image_with_its_storage_and_workdir(center: JobsCenter) -> None:
    home = center.home()
    job = center.submit(
        f'cat /{MARKER}; pwd; echo "$HOME"; echo written > made-in-image.txt; ls /home || true',
        image="busybox:1.35",
        workdir="~/runs/a",
    )
    state, code, out = _outcome(center, job["id"])
    assert (state, code) == ("COMPLETED", 0), center.events(job["id"])
    workdir = home / "runs" / "a"
    assert out.splitlines()[:3] == [MARKER_TEXT.strip(), str(workdir), str(home)]
    # The file the job wrote in its workdir is on the host, where the user fetches it.
    assert (workdir / "made-in-image.txt").read_text() == "written\n"
    # Not the host's root: its /home (if any) is not there, the image has none.
    assert "ls: /home: No such file or directory" in center.logs(job["id"], stream="stderr").text


def test_an_image_on_the_users_storage_by_path(center: JobsCenter) -> None:
    make_rootfs(center.home() / "images" / "mine")
    job = center.submit(f"cat /{MARKER}", image="~/images/mine")
    assert _outcome(center, job["id"]) == ("COMPLETED", 0, MARKER_TEXT)


SCRIPTS = {
    "exit code": ("echo out; echo err >&2; exit 3", {}),
    "signal death": ("echo before; kill -USR1 $$; echo after", {}),
    "time limit": ("echo started; sleep 30", {"time_limit_seconds": 1}),
}


@pytest.mark.parametrize("case", list(SCRIPTS))
def test_the_same_job_with_and_without_an_image_ends_the_same(
    center: JobsCenter, case: str
) -> None:
    script, extra = SCRIPTS[case]
    plain = center.submit(script, **extra)
    boxed = center.submit(script, image="busybox", **extra)
    outcomes = [_outcome(center, plain["id"]), _outcome(center, boxed["id"])]
    assert outcomes[0] == outcomes[1]
    errs = [center.logs(j["id"], stream="stderr").text for j in (plain, boxed)]
    expected = {
        "exit code": ("FAILED", 3, "out\n"),
        "signal death": ("FAILED", 128 + 10, "before\n"),
        "time limit": ("TIMEOUT", 128 + 15, "started\n"),  # SIGTERM at the limit
    }[case]
    assert outcomes[1] == expected
    if case == "exit code":
        assert errs == ["err\n", "err\n"]


def test_cancel_stops_a_job_in_an_image(center: JobsCenter) -> None:
    job = center.submit("echo running; sleep 60", image="busybox")
    center.wait_state(job["id"], "RUNNING")
    wait_for(lambda: center.stdout(job["id"]) == "running\n", what="the job's first line")
    assert center.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    state, _, out = _outcome(center, job["id"])
    assert (state, out) == ("CANCELLED", "running\n")


def _refused(center: JobsCenter, image: str) -> tuple[list[str], str]:
    spec: dict[str, Any] = {"run": "true", "image": image}
    dry = center.post("/v1/jobs", json=spec, params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    assert dry.json()["valid"] is False
    submitted = center.post("/v1/jobs", json=spec)
    assert submitted.status_code == 422, submitted.text
    return dry.json()["problems"], submitted.json()["error"]["message"]


def test_an_unknown_image_is_refused_at_dry_run_and_submit(center: JobsCenter) -> None:
    problems, message = _refused(center, "pytorch")
    assert any("unknown image 'pytorch'" in p and "kaic images" in p for p in problems)
    assert "busybox:1.35" in message and "kaic images" in message


def test_path_images_outside_storage_missing_or_not_images_are_refused(
    center: JobsCenter, tmp_path: Path
) -> None:
    make_rootfs(tmp_path / "elsewhere")
    home = center.home()
    (home / "escape").symlink_to(tmp_path / "elsewhere")
    (home / "notes.txt").write_text("not an image\n")
    cases = {
        str(tmp_path / "elsewhere"): "outside your storage",
        "~/../bob/images/x": "leads outside your storage",
        "~/escape": "outside your storage (through a link)",
        "~/missing": "does not exist on your storage",
        "~/notes.txt": "is not an image",
    }
    for image, why in cases.items():
        _problems, message = _refused(center, image)
        assert why in message, (image, message)
        assert "kaic images" in message, message


def test_an_image_the_runtime_cannot_run_is_refused(center: JobsCenter) -> None:
    _problems, message = _refused(center, "registry-only")
    assert "registry image" in message and "runs: rootfs" in message


def test_images_lists_the_catalogue(center: JobsCenter) -> None:
    response = center.get("/v1/images")
    assert response.status_code == 200, response.text
    images = {i["name"]: i for i in response.json()}
    assert images["busybox"]["tag"] == "1.35"
    assert images["busybox"]["format"] == "rootfs"
    assert images["busybox"]["description"] == "BusyBox 1.35, static"
    assert images["busybox"]["size_bytes"] > 1_000_000  # the busybox binary
    assert images["registry-only"]["format"] == "registry"
    assert images["registry-only"]["size_bytes"] is None
    assert "rootfs" not in images["busybox"]  # where images lie is the operator's business


def test_a_center_without_a_catalogue_offers_no_images(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center:
        response = center.get("/v1/images")
        assert (response.status_code, response.json()) == (200, [])
        problems, _ = _refused(center, "busybox")
        assert "the center offers: none" in problems[0]


def test_a_broken_catalogue_is_a_503_naming_no_paths(tmp_path: Path) -> None:
    broken = tmp_path / "images.yaml"
    broken.write_text("- name: x\n  rootfs: relative/path\n")
    with jobs_center(tmp_path, images=broken) as center:
        response = center.get("/v1/images")
        assert response.status_code == 503
        assert str(tmp_path) not in response.text and "operator" in response.text
        _problems, message = _refused(center, "x")
        assert str(tmp_path) not in message and "tell its operator" in message


#: host device nodes that bwrap's own minimal /dev lacks (one is enough)
_SPARE_DEVICES = ("/dev/hwrng", "/dev/vsock", "/dev/loop-control", "/dev/fuse", "/dev/kvm")


def test_device_nodes_are_passed_through(tmp_path: Path, catalogue: Path) -> None:
    """What `--container-device` (by default the NVIDIA driver's `/dev/nvidia*`) names is
    in the image at its own path; what it does not name is not."""
    spare = next((d for d in _SPARE_DEVICES if os.path.exists(d)), None)
    if spare is None:
        unavailable("no spare device node on this host to pass through")
    script = f"test -c {spare} && echo present || echo absent"
    for devices, expected in (([spare], "present\n"), ([], "absent\n")):
        with jobs_center(
            tmp_path / str(len(devices)), images=catalogue, container_devices=devices
        ) as c:
            job = c.submit(script, image="busybox")
            assert _outcome(c, job["id"]) == ("COMPLETED", 0, expected)


def test_a_job_that_traps_sigterm_gets_its_grace_in_an_image(center: JobsCenter) -> None:
    """The runtime must not die of the center's SIGTERM and take the job with it: a job that
    saves a checkpoint on SIGTERM does so in an image too."""
    script = "trap 'echo checkpoint saved; exit 0' TERM; echo running; sleep 60 & wait"
    outcomes = []
    for image in (None, "busybox"):
        job = center.submit(script, **({"image": image} if image else {}))
        wait_for(lambda j=job: center.stdout(j["id"]) == "running\n", what="the job to run")
        assert center.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
        outcomes.append(_outcome(center, job["id"]))
    assert outcomes[0] == outcomes[1] == ("CANCELLED", 0, "running\ncheckpoint saved\n")


def test_a_runtime_that_is_not_installed_is_named_at_dry_run(
    tmp_path: Path, catalogue: Path
) -> None:
    """Apptainer is not installed here: a local center configured with it says so before
    the job is queued, rather than failing it at start."""
    if shutil.which("apptainer", path="/usr/sbin:/usr/bin:/sbin:/bin"):
        unavailable("apptainer is installed here")
    with jobs_center(tmp_path, images=catalogue, container_runtime="apptainer") as center:
        _problems, message = _refused(center, "busybox")
        assert "(apptainer) is not installed" in message and "drop `image`" in message
