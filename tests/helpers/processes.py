"""Subprocesses that tests start (Prefect servers, `medaudit serve`, Dask schedulers and workers, whole
`medaudit demo` runs, a browser driver): start in a process group of its own, wait until ready, stop.

Every process gets ``start_new_session`` (pgid == pid), so stopping it signals the whole group: a Dask
nanny's worker, a flow's run processes, a browser's helpers. stdout and stderr are pipes copied to
``<name>.out`` / ``<name>.err`` in the log folder by this process, so a child whose own file writes fail
(a full disk, RLIMIT_FSIZE) still gets its messages out. ``Processes`` as a context manager (and the
``processes`` fixture of tests/conftest.py) ends every group it started, whatever the test did.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0, alive: Callable[[], str | None] | None = None
) -> Any:
    """Poll ``check`` until it returns something truthy and return it; fail after ``timeout`` s, or as soon as
    ``alive`` reports a death (a message, e.g. ``Processes.dead``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        if alive is not None and (dead := alive()):
            pytest.fail(f"while waiting for {what}: {dead}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """The subprocesses of one test, by name; ``stop_all`` (or leaving the ``with`` block) ends their groups."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._copies: dict[str, list[threading.Thread]] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_all()

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self._copies[name] = []
        for stream, suffix in ((proc.stdout, "out"), (proc.stderr, "err")):
            path = self.log_dir / f"{name}.{suffix}"
            path.write_bytes(b"")
            self._copies[name].append(threading.Thread(target=_copy, args=(stream, path), daemon=True))
        for t in self._copies[name]:
            t.start()
        self.procs[name] = proc
        return proc

    def out(self, name: str) -> str:
        return (self.log_dir / f"{name}.out").read_text(errors="replace")

    def err(self, name: str) -> str:
        return (self.log_dir / f"{name}.err").read_text(errors="replace")

    def log(self, name: str, tail: int = 4000) -> str:
        """The end of what ``name`` wrote, stdout then stderr (for failure messages and checks of a banner)."""
        return (self.out(name) + self.err(name))[-tail:]

    def dead(self, *names: str) -> str | None:
        """A message naming the first of ``names`` (default: all) that has exited, with the end of its log; None while all run."""
        for name in names or tuple(self.procs):
            proc = self.procs[name]
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}:\n{self.log(name)}"
        return None

    def wait(self, name: str, timeout: float) -> int:
        """The exit code of ``name`` once it ends by itself and its output is copied; fail after ``timeout`` s."""
        try:
            code = self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} still running after {timeout:.0f} s:\n{self.log(name, 3000)}")
        for t in self._copies[name]:
            t.join(timeout=10)
        return code

    def send(self, name: str, sig: int) -> None:
        """Send ``sig`` to the process group of ``name`` (SIGSTOP / SIGCONT to pause it)."""
        _signal_group(self.procs[name], sig)

    def kill(self, name: str) -> None:
        """SIGKILL to the group of ``name`` at once (a crash, as a test simulates it)."""
        proc = self.procs[name]
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self, name: str) -> None:
        """SIGTERM to the group of ``name``, SIGKILL after 30 s, then SIGKILL to what is left in the group."""
        proc = self.procs[name]
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=10)
        _signal_group(proc, signal.SIGKILL)

    def stop_all(self) -> None:
        """``stop`` every process, last started first, within one 30 s grace period."""
        procs = list(reversed(self.procs.values()))
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        for proc in procs:  # children left in a group (dask nannies, flow-run processes)
            _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # the group start() created with start_new_session (pgid == pid)


def _copy(stream: IO[bytes], path: Path) -> None:
    with open(path, "ab", buffering=0) as f:
        while chunk := os.read(stream.fileno(), 65536):
            f.write(chunk)
