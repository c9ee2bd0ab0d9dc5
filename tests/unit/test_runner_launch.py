"""The runner driver against a fake QEMU: every kind of ending becomes a result, and nothing outlives a run.

The fake is a Python script installed as bin/qemu-system-arm of a throwaway build directory. It
finds its config and event descriptor in its arguments, as QEMU and the plugin do, and behaves
as the config's `cpu` says; it writes its pid to the file named by boot.cmdline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explorer.errors import RunnerError
from explorer.runner.build import PLUGIN, binary
from explorer.runner.command import DETERMINISTIC_TIME, Plugin, command_line, config_plugin_arguments
from explorer.runner.config import config_from_dict
from explorer.runner.containment import RunnerLimits
from explorer.runner.launch import run
from explorer.runner.machine_config_pb2 import HookKind, MachineConfig
from explorer.runner.rehost_pb2 import ExitReason
from tests.helpers import sigint_at_its_default

REPO = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 30  # a hang guard for process bookkeeping, not a performance claim

FAKE_QEMU = f"""#!{sys.executable}
import json, os, resource, signal, sys, time
sys.path.insert(0, {str(REPO)!r})
from explorer.runner.protocol import encode_frame
from explorer.runner.rehost_pb2 import Event, Exit, ExitReason, Log, Milestone

config_path = next(a.split("config=", 1)[1] for a in sys.argv if a.startswith("rehosting,config="))
config = json.load(open(config_path))
plugin = next((a for a in sys.argv if "events_fd=" in a), "")
events = int(plugin.rsplit("events_fd=", 1)[1]) if plugin else None
open(config["boot"]["cmdline"], "w").write(str(os.getpid()))
behaviour = config["cpu"]

def send(*items):
    for item in items:
        os.write(events, encode_frame(item))

milestone = Event(milestone=Milestone(name="start_kernel", address=0xC0B00A2C, icount=1234))
if behaviour == "boots":
    sys.stdout.write("Booting Linux\\n"); sys.stdout.flush()
    send(milestone, Event(log=Log(text=b"\\xffraw guest bytes")),
         Event(exit=Exit(reason=ExitReason.EXIT_USER_SPACE, icount=5678, detail="/init")))
elif behaviour == "machine-events":
    events = config["events_fd"]
    send(milestone, Event(exit=Exit(reason=ExitReason.EXIT_HALT, icount=9)))
elif behaviour == "powers-off":
    sys.stdout.write("reboot: Power down\\n")
elif behaviour == "garbage":
    send(milestone); os.write(events, b"\\x05\\xff\\xff\\xff\\xff\\xff"); time.sleep(3600)
elif behaviour == "truncated":
    send(milestone); os.write(events, encode_frame(milestone)[:-2])
elif behaviour == "spins":
    time.sleep(3600)
elif behaviour == "forks-and-spins":
    child = os.fork()
    if child == 0:
        time.sleep(3600)
    open(config["boot"]["cmdline"] + ".child", "w").write(str(child)); time.sleep(3600)
elif behaviour == "refuses":
    sys.stderr.write(f"qemu-system-arm: rehosting: config {{config_path}}: cpu is bad\\n"); sys.exit(1)
elif behaviour == "segfaults":
    send(milestone); os.kill(os.getpid(), signal.SIGSEGV)
elif behaviour == "spams":
    for _ in range(128):
        sys.stdout.write("x" * 65535 + "\\n")
elif behaviour == "reports-limits":
    limits = {{name: resource.getrlimit(getattr(resource, name))[0]
              for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE")}}
    limits["own_session"] = os.getsid(0) == os.getpid()
    sys.stdout.write(json.dumps(limits))
"""


def install_fake_build(build: Path) -> Path:
    """A QEMU build directory whose qemu-system-arm is the fake and whose plugin is an empty file."""
    (build / binary("arm")).parent.mkdir(parents=True)
    qemu = build / binary("arm")
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    (build / PLUGIN).parent.mkdir()
    (build / PLUGIN).write_bytes(b"")
    return build


@pytest.fixture
def fake_build(tmp_path: Path) -> Path:
    return install_fake_build(tmp_path / "build")


def fake_config(tmp_path: Path, behaviour: str) -> MachineConfig:
    return config_from_dict(
        {
            "target": "arm",
            "cpu": behaviour,
            "ram": [{"base": "0x60000000", "size": "0x10000000"}],
            "boot": {"kernel": "/nonexistent/zImage", "cmdline": str(tmp_path / "pid")},
        }
    )


def plugin(build: Path) -> Plugin:
    return Plugin(build / PLUGIN, ("budget=1000",))


def is_gone(pid: int) -> bool:
    """No such process, or only its zombie (dead, waiting for a parent that is not us to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def test_command_line_has_deterministic_time_the_config_and_the_event_descriptor(tmp_path: Path) -> None:
    command = command_line(
        Path("/q/bin/qemu-system-arm"),
        MachineConfig(),
        tmp_path / "m.json",
        plugin=Plugin(Path("/q/lib/librehost.so"), ("budget=5",)),
        events_fd=9,
    )
    assert command[:3] == ["/q/bin/qemu-system-arm", "-M", f"rehosting,config={tmp_path / 'm.json'}"]
    joined = " ".join(command)
    assert " ".join(DETERMINISTIC_TIME) in joined
    assert "-nodefaults" in command and "-no-reboot" in command
    assert command[-2:] == ["-plugin", "/q/lib/librehost.so,budget=5,events_fd=9"]


def watched_config() -> MachineConfig:
    config = MachineConfig(instruction_budget=5000, user_space_below=0xC0000000)
    config.hooks.add(name="start_kernel", address=0xC0B00A2C, kind=HookKind.HOOK_MILESTONE)
    config.hooks.add(name="do_one_initcall", address=0xC0101F20, kind=HookKind.HOOK_INITCALL)
    config.hooks.add(name="panic", address=0xC0A4E1F8, kind=HookKind.HOOK_PANIC)
    config.hooks.add(name="machine_halt", address=0xC0110010, kind=HookKind.HOOK_HALT)
    config.hooks.add(name="machine_power_off", address=0xC0110020, kind=HookKind.HOOK_POWEROFF)
    config.nops.add(address=0xC0200000, return_value=0xFFFFFFF4, name="omap_irq_soft_reset")
    return config


def test_the_config_alone_says_what_the_plugin_watches() -> None:
    assert config_plugin_arguments(watched_config()) == (
        "hook=start_kernel@0xc0b00a2c",
        "initcalls=0xc0101f20",
        "panic=0xc0a4e1f8",
        "halt=machine_halt@0xc0110010",
        "halt=machine_power_off@0xc0110020",
        "nop=0xc0200000:0xfffffff4",
        "budget=5000",
        "user_below=0xc0000000",
    )
    assert config_plugin_arguments(MachineConfig()) == ()


def test_a_config_past_user_space_asks_the_plugin_to_go_on_there() -> None:
    config = watched_config()
    config.past_user_space = True
    assert config_plugin_arguments(config)[-2:] == ("user_below=0xc0000000", "past_user=on")


def test_config_arguments_come_before_extra_ones_and_the_event_descriptor_last(tmp_path: Path) -> None:
    command = command_line(
        Path("/q/bin/qemu-system-arm"),
        watched_config(),
        tmp_path / "m.json",
        plugin=Plugin(Path("/q/lib/librehost.so"), ("hot_loop=1000",)),
        events_fd=7,
    )
    arguments = command[command.index("-plugin") + 1].split(",")
    assert arguments[0] == "/q/lib/librehost.so"
    assert arguments[1:-2] == list(config_plugin_arguments(watched_config()))
    assert arguments[-2:] == ["hot_loop=1000", "events_fd=7"]


def test_a_config_needing_the_plugin_without_one_is_refused_before_qemu_starts(
    fake_build: Path, tmp_path: Path
) -> None:
    config = fake_config(tmp_path, "boots")
    config.instruction_budget = 1000
    with pytest.raises(RunnerError, match="plugin"):
        run(config, fake_build)
    assert not (tmp_path / "pid").exists()


def test_the_machine_finds_the_event_descriptor_in_its_config(fake_build: Path, tmp_path: Path) -> None:
    # No plugin: only the machine (here, the fake) writes events, to the config's events_fd.
    finished = run(fake_config(tmp_path, "machine-events"), fake_build)
    assert not finished.result.partial
    assert [m.name for m in finished.result.milestones] == ["start_kernel"]
    assert finished.result.exit.reason == ExitReason.EXIT_HALT


def test_events_and_console_of_a_finished_run_make_a_full_result(fake_build: Path, tmp_path: Path) -> None:
    finished = run(fake_config(tmp_path, "boots"), fake_build, plugin=plugin(fake_build))
    result = finished.result
    assert not result.partial
    assert result.exit.reason == ExitReason.EXIT_USER_SPACE and result.exit.icount == 5678
    assert [m.name for m in result.milestones] == ["start_kernel"]
    assert result.log == b"\xffraw guest bytes"
    assert result.console == b"Booting Linux\n"
    assert finished.first_console_seconds is not None


def test_qemu_exiting_cleanly_without_an_exit_event_is_a_poweroff(fake_build: Path, tmp_path: Path) -> None:
    result = run(fake_config(tmp_path, "powers-off"), fake_build).result
    assert result.exit.reason == ExitReason.EXIT_POWEROFF and not result.partial


def test_garbage_on_the_stream_kills_the_runner_and_keeps_what_came_before(
    fake_build: Path, tmp_path: Path
) -> None:
    result = run(fake_config(tmp_path, "garbage"), fake_build, plugin=plugin(fake_build)).result
    assert result.partial and result.partial_reason.startswith("protocol error: frame 2")
    assert result.exit.reason == ExitReason.EXIT_CRASHED
    assert [m.name for m in result.milestones] == ["start_kernel"]
    assert is_gone(int((tmp_path / "pid").read_text()))


def test_a_stream_cut_inside_a_frame_is_a_partial_result(fake_build: Path, tmp_path: Path) -> None:
    result = run(fake_config(tmp_path, "truncated"), fake_build, plugin=plugin(fake_build)).result
    assert result.partial and "ends inside frame 2" in result.partial_reason
    assert len(result.milestones) == 1


def test_the_deadline_kills_a_spinning_runner_and_its_children(fake_build: Path, tmp_path: Path) -> None:
    finished = run(
        fake_config(tmp_path, "forks-and-spins"), fake_build, limits=RunnerLimits(deadline_seconds=1.0)
    )
    assert finished.result.exit.reason == ExitReason.EXIT_TIMEOUT and finished.result.partial
    assert is_gone(int((tmp_path / "pid").read_text()))
    # The grandchild is in the runner's process group; the group kill reaches it.
    grandchild = int((tmp_path / "pid.child").read_text())
    wait_until(lambda: is_gone(grandchild), f"grandchild {grandchild} to die")


def test_qemu_refusing_to_start_is_a_runner_error_with_its_line(fake_build: Path, tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match=r"rehosting: config .*: cpu is bad$"):
        run(fake_config(tmp_path, "refuses"), fake_build)


def test_a_crashing_runner_is_a_partial_result_naming_the_signal(fake_build: Path, tmp_path: Path) -> None:
    result = run(fake_config(tmp_path, "segfaults"), fake_build, plugin=plugin(fake_build)).result
    assert result.exit.reason == ExitReason.EXIT_CRASHED and result.partial
    assert "SIGSEGV" in result.exit.detail
    assert len(result.milestones) == 1


def test_a_console_flood_is_kept_within_its_bound(fake_build: Path, tmp_path: Path) -> None:
    limits = RunnerLimits(console_bytes=4096)
    result = run(fake_config(tmp_path, "spams"), fake_build, limits=limits).result
    assert len(result.console) == 4096
    assert result.console_dropped == 128 * 65536 - 4096


def test_the_runner_starts_in_its_own_session_under_resource_limits(fake_build: Path, tmp_path: Path) -> None:
    limits = RunnerLimits(deadline_seconds=30, open_files=64, file_size_bytes=1 << 20)
    seen = json.loads(run(fake_config(tmp_path, "reports-limits"), fake_build, limits=limits).result.console)
    assert seen["RLIMIT_AS"] == 0x10000000 + (2 << 30)  # guest RAM + QEMU's own
    assert seen["RLIMIT_CPU"] == 90
    assert seen["RLIMIT_NOFILE"] == 64
    assert seen["RLIMIT_FSIZE"] == 1 << 20
    assert seen["RLIMIT_CORE"] == 0
    assert seen["own_session"]


def test_missing_qemu_build_is_a_runner_error(tmp_path: Path) -> None:
    with pytest.raises(RunnerError, match="`explorer runner check`"):
        run(fake_config(tmp_path, "boots"), tmp_path / "no-build")


DRIVER = """
import sys
from pathlib import Path
from explorer.runner.config import config_from_dict
from explorer.runner.launch import run
config = config_from_dict({"target": "arm", "cpu": "spins", "ram": [{"base": 0, "size": 4096}],
                           "boot": {"kernel": "/k", "cmdline": sys.argv[2]}})
run(config, Path(sys.argv[1]))
"""


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_stopping_the_driver_takes_its_runner_down(
    fake_build: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    pid_file = tmp_path / "pid"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(fake_build), str(pid_file)],
        cwd=REPO,
        preexec_fn=sigint_at_its_default,  # as on a terminal: a suite run in the background ignores it
    )
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), "the runner to start")
        runner = int(pid_file.read_text())
        assert not is_gone(runner)
        os.kill(driver.pid, stop)
        assert driver.wait(WAIT_SECONDS) != 0
        wait_until(lambda: is_gone(runner), f"runner {runner} to die with its driver")
    finally:
        driver.kill()
        driver.wait()
