"""`infercast dashboard` starts anywhere: headless in a fresh HOME with stdin closed (no first-run
prompt), and one line with exit 2 for a taken or invalid port or a missing streamlit."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.cli import build_parser, dashboard_command, main

START_S = 60  # loose: a busy CI machine imports streamlit slowly


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _dashboard(*args: str, home: Path, log=subprocess.PIPE, **popen) -> subprocess.Popen:
    env = {**os.environ, "HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sim", "dashboard", *args], env=env,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True, **popen)


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as reply:
            return reply.read().decode()
    except OSError:
        return None


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_starts_headless_in_a_fresh_home_with_stdin_closed(tmp_path: Path) -> None:
    pytest.importorskip("streamlit")
    port, home = _free_port(), tmp_path / "home"
    home.mkdir()
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log:
        proc = _dashboard("--port", str(port), home=home, log=log, start_new_session=True)
    try:
        deadline = time.monotonic() + START_S
        while _health(port) != "ok":
            assert proc.poll() is None, f"exited {proc.returncode}: {log_path.read_text()}"
            assert time.monotonic() < deadline, f"no health answer in {START_S} s: {log_path.read_text()}"
            time.sleep(0.2)
        proc.terminate()  # infercast alone: it stops its streamlit, which leaves no server behind
        assert proc.wait(timeout=30) == 0, log_path.read_text()
        assert _health(port) is None
        assert "Email" not in log_path.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path, taken_port: int) -> None:
    proc = _dashboard("--port", str(taken_port), home=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "--port" in err and str(taken_port) in err, err
    assert out == ""


@pytest.mark.parametrize("port", ["0", "70000", "-1"])
def test_an_invalid_port_is_one_line_and_exit_2(tmp_path: Path, port: str) -> None:
    proc = _dashboard(f"--port={port}", home=tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and "--port" in err and port in err, err


def test_headless_and_promptless_unless_a_browser_is_asked_for() -> None:
    pytest.importorskip("streamlit")
    parser = build_parser()

    def option(argv: list[str], name: str) -> str:
        command = dashboard_command(parser.parse_args(["dashboard", *argv]))
        return command[command.index(name) + 1]

    for argv in ([], ["--headless"]):
        assert option(argv, "--server.headless") == "true"
    assert option(["--browser"], "--server.headless") == "false"
    for argv in ([], ["--browser"]):
        assert option(argv, "--server.showEmailPrompt") == "false"
        assert option(argv, "--browser.gatherUsageStats") == "false"


def test_missing_streamlit_gives_an_install_hint_for_a_checkout(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "streamlit" else find_spec(name, *a))
    assert main(["dashboard", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install -e '.[dashboard]'" in err


def test_streamlit_failing_is_said_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("sim.cli.dashboard_command",
                        lambda args: [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert main(["dashboard", "--port", str(_free_port())]) == 3
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("infercast: error:") and "exited with status 3" in lines[-1]
