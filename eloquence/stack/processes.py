"""Process identity for `status` and `down`, which run in another shell than the `up` that started them.

Each service runs in its own process group (its leader is the pid `up` recorded). A recorded pid is
still ours when it runs and started when recorded (psutil's create_time): a pid the system reused
for something else is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil

STOP_TIMEOUT_S = 10.0
_START_TOLERANCE_S = 2.0
"""psutil derives create_time from the boot time, which the kernel may report a second apart."""


def process_start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch), or None when it does not exist."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _started_at(proc: psutil.Process, recorded: object) -> bool:
    """True when `proc` started at the recorded time; an unknown record (None, an older format) matches."""
    if not isinstance(recorded, (int, float)):
        return True
    try:
        started: float = proc.create_time()
    except psutil.Error:
        return False
    return abs(started - recorded) <= _START_TOLERANCE_S


def _is_zombie(proc: psutil.Process) -> bool:
    try:
        status: str = proc.status()
    except psutil.ZombieProcess:
        return True
    return status == psutil.STATUS_ZOMBIE


def _threads_alive(proc: psutil.Process) -> bool:
    """A killed multi-threaded process shows its leader as a zombie while the other threads (and
    its sockets) are still going away: it is gone only when every thread is."""
    try:
        threads = proc.threads()
    except psutil.Error:
        return False
    for thread in threads:
        with contextlib.suppress(psutil.Error):
            if thread.id != proc.pid and not _is_zombie(psutil.Process(thread.id)):
                return True
    return False


def _alive(proc: psutil.Process) -> bool:
    try:
        return not _is_zombie(proc) or _threads_alive(proc)
    except psutil.NoSuchProcess:
        return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of one process group: a service and anything it spawned."""
    members = []
    for proc in psutil.process_iter():
        try:
            in_group = os.getpgid(proc.pid) == pgid
        except (ProcessLookupError, PermissionError):
            continue
        if in_group and _alive(proc):
            members.append(proc.pid)
    return members


def process_running(pid: int, start_time: object) -> bool:
    """The recorded process still runs: it exists, is not a zombie, and started when recorded."""
    try:
        proc = psutil.Process(pid)
        return not _is_zombie(proc) and _started_at(proc, start_time)
    except psutil.NoSuchProcess:
        return False


def _group_is_ours(pgid: int, start_time: object) -> bool:
    """Something still runs in the group we started (and the pid was not reused by another leader)."""
    if not group_members(pgid):
        return False  # everything exited (a dead leader may linger as a zombie until reaped)
    try:
        leader = psutil.Process(pgid)
        # The leader itself, started when recorded, or a zombie whose children are left in the group.
        return _is_zombie(leader) or _started_at(leader, start_time)
    except psutil.NoSuchProcess:
        return True  # leader gone, its children left in the group


def stop_group(pid: int, start_time: object, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM the service's process group, SIGKILL what is left after `timeout`.

    False when nothing of it was running any more.
    """
    if not _group_is_ours(pid, start_time):
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_members(pid):
                return True
            time.sleep(0.1)
    return True
