"""Snapshot directories: what the manifest promises, what is refused, and the console's continuation.

The real save and restore (QEMU, the plugin, bit for bit) are tests/integration/test_runner_snapshot.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.errors import RunnerError
from explorer.runner.result import BoundedBytes
from explorer.runner.snapshot import (
    CONSOLE_FILE,
    EVENTS_FILE,
    MANIFEST_FILE,
    PLUGIN_STATE_FILE,
    VM_FILE,
    Manifest,
    plugin_state_icount,
    read_manifest,
    resumed_capture,
    write_manifest,
)

# Speed is not the property: on a shared two-core machine a per-example deadline only flakes.
PROPERTY = settings(deadline=None)
BUILD = "6baa2e9cc85bddc9"
POINT = 2_000_000_000


def snapshot(tmp_path: Path, manifest: Manifest) -> Path:
    directory = tmp_path / "snapshot"
    directory.mkdir()
    for part in (VM_FILE, PLUGIN_STATE_FILE, EVENTS_FILE, CONSOLE_FILE):
        (directory / part).write_bytes(b"")
    write_manifest(directory, manifest)
    return directory


def build_dir(tmp_path: Path, name: str = BUILD) -> Path:
    directory = tmp_path / "qemu" / name
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def a_manifest(**changes: object) -> Manifest:
    fields: dict = {
        "build": BUILD,
        "requested_icount": POINT,
        "icount": POINT + 3,
        "config": b"\x08\x01",
        "console_dropped": 0,
    }
    return Manifest(**{**fields, **changes})


def test_a_manifest_reads_back_as_written(tmp_path: Path) -> None:
    manifest = a_manifest(config=bytes(range(256)), console_dropped=17)
    directory = snapshot(tmp_path, manifest)
    assert read_manifest(directory, build_dir(tmp_path), POINT) == manifest


def test_a_snapshot_of_another_build_is_refused_in_one_line(tmp_path: Path) -> None:
    directory = snapshot(tmp_path, a_manifest(build="0123456789abcdef"))
    with pytest.raises(RunnerError, match=f"is of build 0123456789abcdef, not {BUILD}") as refused:
        read_manifest(directory, build_dir(tmp_path))
    assert "\n" not in str(refused.value)


def test_a_snapshot_at_another_point_is_refused(tmp_path: Path) -> None:
    directory = snapshot(tmp_path, a_manifest())
    with pytest.raises(RunnerError, match=f"at instruction {POINT}, not {POINT + 1}"):
        read_manifest(directory, build_dir(tmp_path), POINT + 1)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "not json",
        "[]",
        json.dumps({"format": 1}),
        json.dumps({"format": 1, "build": BUILD, "config": "!"}),
    ],
)
def test_a_garbage_manifest_is_refused_in_one_line(tmp_path: Path, body: str) -> None:
    directory = snapshot(tmp_path, a_manifest())
    (directory / MANIFEST_FILE).write_text(body)
    with pytest.raises(RunnerError, match="is not a snapshot manifest") as refused:
        read_manifest(directory, build_dir(tmp_path))
    assert "\n" not in str(refused.value)


def test_a_manifest_of_another_format_is_refused(tmp_path: Path) -> None:
    directory = snapshot(tmp_path, a_manifest())
    body = json.loads((directory / MANIFEST_FILE).read_text())
    (directory / MANIFEST_FILE).write_text(json.dumps({**body, "format": 99}))
    with pytest.raises(RunnerError, match="has format 99"):
        read_manifest(directory, build_dir(tmp_path))


def test_a_directory_without_a_manifest_or_with_a_part_missing_is_no_snapshot(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match=f"has no {re.escape(MANIFEST_FILE)}"):
        read_manifest(tmp_path, build_dir(tmp_path))
    directory = snapshot(tmp_path, a_manifest())
    (directory / VM_FILE).unlink()
    with pytest.raises(RunnerError, match=f"lacks {re.escape(VM_FILE)}"):
        read_manifest(directory, build_dir(tmp_path))


def test_the_point_reached_is_the_plugin_states_second_word(tmp_path: Path) -> None:
    # native/rehost_plugin/state_file.c save_state: the magic word, then the instruction count (u64 LE).
    (tmp_path / PLUGIN_STATE_FILE).write_bytes(b"rehste1\0" + (POINT + 3).to_bytes(8, "little") + b"rest")
    assert plugin_state_icount(tmp_path) == POINT + 3


@PROPERTY
@given(
    st.lists(st.binary(max_size=200), max_size=20),
    st.lists(st.binary(max_size=200), max_size=20),
    st.integers(min_value=0, max_value=300),
)
def test_a_console_resumed_from_its_held_bytes_continues_like_one_capture(
    before: list[bytes], after: list[bytes], limit: int
) -> None:
    whole, first = BoundedBytes(limit), BoundedBytes(limit)
    for chunk in before:
        whole.append(chunk)
        first.append(chunk)
    resumed = resumed_capture(limit, first.value(), first.dropped)
    for chunk in after:
        whole.append(chunk)
        resumed.append(chunk)
    assert (resumed.value(), resumed.dropped) == (whole.value(), whole.dropped)
