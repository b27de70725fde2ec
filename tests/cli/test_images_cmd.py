"""`kaic images`: the center's catalogue as a table, `--json` and `--jq`; outside strings
(names, descriptions) shown as text, never as markup."""

from __future__ import annotations

from tests.inprocess import FakeCenter, RunLine

IMAGES = [
    {
        "name": "pytorch",
        "tag": "24.10",
        "format": "sif",
        "size_bytes": 9_663_676_416,
        "description": "PyTorch 2.5 [bold]CUDA 12.6[/bold]",
    },
    {"name": "nvidia/nemo", "tag": None, "format": "registry", "size_bytes": None},
]


def test_images_table_json_and_jq(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.on("GET", "/v1/images", json=IMAGES)
    table = run_line("images").stdout.splitlines()
    assert table[0].split() == ["IMAGE", "TAG", "FORMAT", "SIZE", "CONTAINS"]
    assert table[1].split()[:5] == ["pytorch", "24.10", "sif", "9.0", "GiB"]
    assert "[bold]CUDA 12.6[/bold]" in table[1]  # text, not markup
    assert table[2].split() == ["nvidia/nemo", "-", "registry", "-"]
    doc = run_line("images", "--json").json()
    assert isinstance(doc, list) and doc[0]["size_bytes"] == 9_663_676_416
    assert run_line("images", "--jq", ".[] | .name").stdout == "pytorch\nnvidia/nemo\n"


def test_no_images_says_so_and_names_path_images(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    fake_center.on("GET", "/v1/images", json=[])
    res = run_line("images")
    assert res.stdout == "" and "by path" in res.stderr
    assert run_line("images", "--json").stdout == "[]\n"
