"""`<state dir>/stack.json`: what `eloquence up` started, so `status` and `down` work from another shell."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..services import ServiceProcess
from ..settings import AppSettings
from .processes import process_running, process_start_time
from .targets import ServiceTarget

STATE_FILE_NAME = "stack.json"


def state_dir(settings: AppSettings) -> Path:
    return Path(settings.state_dir).expanduser().resolve()


def state_path(settings: AppSettings) -> Path:
    return state_dir(settings) / STATE_FILE_NAME


def read_state(path: Path) -> dict[str, Any] | None:
    """The recorded stack, or None when there is none (or the file is not one)."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("services"), dict) else None


def live_services(state: dict[str, Any]) -> list[str]:
    """The recorded services whose process still runs."""
    return [
        name
        for name, rec in state["services"].items()
        if rec.get("pid") and process_running(int(rec["pid"]), rec.get("pid_start_time"))
    ]


def service_record(target: ServiceTarget, proc: ServiceProcess | None) -> dict[str, Any]:
    pid = proc.process.pid if proc is not None and proc.process is not None else None
    return {
        "url": target.url,
        "health_url": target.health_url,
        "checked": target.checked,
        "pid": pid,
        "pid_start_time": process_start_time(pid) if pid else None,
        "port": target.port,
        "log": str(proc.log_path) if proc is not None else None,
    }


@dataclass
class StackFile:
    """The state file one `up` writes: its own pid while it supervises, and one record per service."""

    path: Path
    log_dir: Path
    supervisor_pid: int | None
    """The foreground `up`, which `down` signals so that it stops cleanly; None once detached."""
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    def record(self, target: ServiceTarget, proc: ServiceProcess | None) -> None:
        self.services[target.name] = service_record(target, proc)

    def save(self) -> None:
        state = {
            "supervisor_pid": self.supervisor_pid,
            "started_at": self.started_at,
            "log_dir": str(self.log_dir),
            "services": self.services,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.path)  # atomic: `status` never reads half a file

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
