"""Finding the runner build: this explorer's pinned build in the cache by the identity of its native
sources, one line naming `explorer runner build` when there is none, --qemu and EXPLORER_QEMU as
overrides; `explorer runner check` on builds that lack something; the sources in a wheel.

The builds here are fakes in a throwaway cache (the fake QEMU of test_runner_launch where one
runs); tests/integration/test_runner_found.py checks the real build.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from explorer.runner.build import (
    BUILD_COMMAND,
    MANIFEST,
    PLUGIN,
    PLUGIN_HEADER,
    TARGETS,
    binary,
    builds_directory,
    native_build,
    pinned_builds,
)
from tests.unit.test_runner_boot_cli import write_config
from tests.unit.test_runner_launch import install_fake_build

REPO = Path(__file__).resolve().parents[2]


def explorer(
    *args: str, cache: Path, qemu: Path | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "EXPLORER_QEMU"}
    environment["EXPLORER_CACHE"] = str(cache)
    if qemu is not None:
        environment["EXPLORER_QEMU"] = str(qemu)
    return subprocess.run(
        [sys.executable, "-m", "explorer", *args], capture_output=True, text=True, env=environment, cwd=cwd
    )


def pinned_directory(cache: Path) -> Path:
    return builds_directory(cache) / pinned_builds()[0].identity


def whole_fake_build(directory: Path) -> Path:
    """A build directory with everything `explorer runner check` asks for (the fake QEMU for arm)."""
    install_fake_build(directory)
    for target in TARGETS:
        if not (directory / binary(target)).exists():
            shutil.copy2(directory / binary("arm"), directory / binary(target))
    (directory / PLUGIN_HEADER).parent.mkdir()
    (directory / PLUGIN_HEADER).write_text("/* plugin API */\n")
    (directory / MANIFEST).write_text(json.dumps(pinned_builds()[0].manifest))
    return directory


def assert_one_line_naming_the_build_command(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result
    assert result.stderr.startswith("explorer: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert f"`{BUILD_COMMAND}`" in result.stderr


def test_the_identity_is_the_one_native_build_names_its_result_by() -> None:
    native = native_build()
    source = native.PINNED_SOURCES[0]
    assert pinned_builds()[0].identity == native.result_key(source.upstream_version, source.orig_sha256)
    assert len(pinned_builds()[0].identity) == 16


def native_build_of_copy(tmp_path: Path) -> ModuleType:
    """native/build.py of a copy of native/ and proto/ in tmp_path, loaded under its own name."""
    for name in ("native", "proto"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    spec = importlib.util.spec_from_file_location("native_build_copy", tmp_path / "native" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_every_native_source_file_is_in_the_identity_and_a_machine_file_must_be_built(
    tmp_path: Path,
) -> None:
    copy = native_build_of_copy(tmp_path)
    source = copy.PINNED_SOURCES[0]
    identity = copy.result_key(source.upstream_version, source.orig_sha256)
    assert identity == pinned_builds()[0].identity
    (tmp_path / "native" / "rehost_plugin" / "new_unit.c").write_text("/* a new plugin unit */\n")
    with_unit = copy.result_key(source.upstream_version, source.orig_sha256)
    assert with_unit != identity
    (tmp_path / "native" / "rehost_plugin" / "rehost.h").write_text("/* changed */\n")
    assert copy.result_key(source.upstream_version, source.orig_sha256) not in (identity, with_unit)
    (tmp_path / "native" / "rehosting_machine" / "rehosting_new.c").write_text("/* unlisted */\n")
    with pytest.raises(copy.BuildError, match=r"rehosting_new\.c not in build\.py's MACHINE_SOURCES"):
        copy.result_key(source.upstream_version, source.orig_sha256)


def test_the_pinned_build_in_the_cache_is_found(tmp_path: Path) -> None:
    build = whole_fake_build(pinned_directory(tmp_path / "cache"))
    result = explorer("runner", "path", cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{build}\n"


def test_without_a_build_path_boot_search_and_bench_exit_2_naming_the_build_command(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    kernel = tmp_path / "zImage"
    kernel.write_bytes(b"\0" * 64)
    (tmp_path / "tiny.toml").write_text('[[firmware]]\nname = "tiny"\nkernel = "zImage"\n')
    commands = (
        ["runner", "path"],
        ["runner", "check"],
        ["boot", str(write_config(tmp_path, "boots"))],
        ["search", str(kernel), "--work", str(tmp_path / "work")],
        ["bench", str(tmp_path / "tiny.toml"), "--out", str(tmp_path / "bench")],
    )
    for command in commands:
        assert_one_line_naming_the_build_command(explorer(*command, cache=cache))
    assert not (tmp_path / "work").exists() and not (tmp_path / "bench").exists()


def test_a_build_without_its_manifest_is_not_there_yet(tmp_path: Path) -> None:
    build = whole_fake_build(pinned_directory(tmp_path / "cache"))
    (build / MANIFEST).unlink()  # native/build.py writes it last: this is a build killed half-way
    assert_one_line_naming_the_build_command(explorer("runner", "path", cache=tmp_path / "cache"))


def test_boot_runs_on_the_pinned_build_without_qemu(tmp_path: Path) -> None:
    whole_fake_build(pinned_directory(tmp_path / "cache"))
    result = explorer("boot", str(write_config(tmp_path, "powers-off")), cache=tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("exit: poweroff")


def test_qemu_and_explorer_qemu_win_over_the_pinned_build(tmp_path: Path) -> None:
    # The pinned build is there but cannot run: a boot that works used the override.
    pinned = pinned_directory(tmp_path / "cache")
    pinned.mkdir(parents=True)
    (pinned / MANIFEST).write_text("{}")
    other = install_fake_build(tmp_path / "other")
    config = str(write_config(tmp_path, "powers-off"))
    cache = tmp_path / "cache"
    for result in (
        explorer("boot", config, "--qemu", str(other), cache=cache),
        explorer("boot", config, cache=cache, qemu=other),
    ):
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("exit: poweroff")
    assert explorer("runner", "path", "--qemu", str(other), cache=cache).stdout == f"{other}\n"
    assert explorer("runner", "path", cache=cache, qemu=other).stdout == f"{other}\n"
    assert explorer("runner", "path", cache=cache).stdout == f"{pinned}\n"


def test_check_passes_a_whole_build_and_names_what_a_broken_one_lacks(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build = whole_fake_build(pinned_directory(cache))
    passed = explorer("runner", "check", cache=cache)
    assert passed.returncode == 0, passed.stderr
    assert pinned_builds()[0].identity in passed.stdout
    (build / PLUGIN).unlink()
    (build / binary("mips")).chmod(0o644)
    lacking = explorer("runner", "check", cache=cache)
    assert_one_line_naming_the_build_command(lacking)
    assert f"lacks {PLUGIN}" in lacking.stderr and f"cannot execute {binary('mips')}" in lacking.stderr


def test_check_refuses_another_build_and_another_manifest(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    other = whole_fake_build(tmp_path / "0123456789abcdef")
    refused = explorer("runner", "check", "--qemu", str(other), cache=cache)
    assert_one_line_naming_the_build_command(refused)
    assert f"is build 0123456789abcdef, not this explorer's {pinned_builds()[0].identity}" in refused.stderr
    build = whole_fake_build(pinned_directory(cache))
    manifest = json.loads((build / MANIFEST).read_text())
    (build / MANIFEST).write_text(json.dumps({**manifest, "patches": manifest["patches"][:-1]}))
    differing = explorer("runner", "check", cache=cache)
    assert_one_line_naming_the_build_command(differing)
    assert f"has a {MANIFEST} other than its sources make (patches)" in differing.stderr


@pytest.mark.timeout(300)
def test_a_wheel_carries_the_native_sources_and_finds_the_same_build(tmp_path: Path) -> None:
    """A `pip install` that is not editable: explorer from the wheel, run from another directory."""
    checkout = tmp_path / "checkout"
    for name in ("explorer", "native", "proto", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, checkout / name)
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            wheels,
            checkout,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = wheels.glob("explorer-*.whl")
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    assert (installed / "explorer" / "_sources" / "native" / "build.py").is_file()
    shutil.rmtree(checkout)  # nothing of a checkout is left to find
    cache = tmp_path / "cache"
    build = whole_fake_build(pinned_directory(cache))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = {key: value for key, value in os.environ.items() if key != "EXPLORER_QEMU"}
    environment |= {"EXPLORER_CACHE": str(cache), "PYTHONPATH": str(installed)}
    for command, expected in ((["path"], f"{build}\n"), (["check"], pinned_builds()[0].identity)):
        result = subprocess.run(
            [sys.executable, "-m", "explorer", "runner", *command],
            capture_output=True,
            text=True,
            env=environment,
            cwd=elsewhere,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert expected in result.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import explorer.runner.build as b; print(b.source_root())"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=elsewhere,
        check=True,
    )
    assert where.stdout.strip() == str(installed / "explorer" / "_sources")
