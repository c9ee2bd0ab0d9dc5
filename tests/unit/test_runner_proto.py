"""The committed generated code is exactly what protoc makes of proto/, and the runner's C side compiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = ("rehost.proto", "machine_config.proto")


def test_committed_python_modules_are_what_protoc_generates(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"--python_out={tmp_path}",
            *(str(REPO / "proto" / schema) for schema in SCHEMAS),
        ],
        check=True,
        capture_output=True,
    )
    for schema in SCHEMAS:
        module = schema.replace(".proto", "_pb2.py")
        generated = (tmp_path / module).read_text()
        committed = (REPO / "explorer" / "runner" / module).read_text()
        assert committed == generated, f"regenerate explorer/runner/{module}: see proto/{schema}"


def test_generated_modules_load_with_the_installed_protobuf_runtime() -> None:
    # Importing runs protobuf's gencode/runtime version check.
    from explorer.runner import machine_config_pb2, rehost_pb2

    assert rehost_pb2.Event.DESCRIPTOR.full_name == "explorer.rehost.Event"
    assert machine_config_pb2.MachineConfig.DESCRIPTOR.full_name == "explorer.rehost.MachineConfig"


@pytest.mark.skipif(
    shutil.which("protoc-c") is None, reason="protoc-c (Debian protobuf-c-compiler) not installed"
)
def test_event_schema_compiles_to_c_with_protobuf_c(tmp_path: Path) -> None:
    subprocess.run(
        ["protoc-c", f"-I{REPO / 'proto'}", f"--c_out={tmp_path}", str(REPO / "proto" / "rehost.proto")],
        check=True,
        capture_output=True,
    )
    compiled = subprocess.run(
        [
            "cc",
            "-Wall",
            "-Werror",
            "-c",
            "-I",
            str(tmp_path),
            str(tmp_path / "rehost.pb-c.c"),
            "-o",
            "/dev/null",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert compiled.returncode == 0, compiled.stderr
