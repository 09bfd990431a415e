"""The local stack: every service of `eloquence.services` as a process on this machine.

- `targets.py`: where each service answers (URL settings, `*_PORT` overrides) and whether it may start here.
- `launch.py`: `launch` (start targets, wait for their health) and `ensure_services` (`eloquence talk`).
- `processes.py`: process identity and stopping, for `status` and `down` in another shell (psutil).
- `state.py`: `<state dir>/stack.json`, what `up` started.
- `commands.py`: `eloquence up`, `status` and `down`.
"""

from __future__ import annotations

from .commands import down, status, up
from .launch import ServiceUnavailableError, ensure_services, launch
from .processes import group_members, process_running, stop_group
from .state import read_state, state_dir, state_path
from .targets import STACK_ORDER, ServiceTarget, client_environment, resolve_target

__all__ = [
    "STACK_ORDER",
    "ServiceTarget",
    "ServiceUnavailableError",
    "client_environment",
    "down",
    "ensure_services",
    "group_members",
    "launch",
    "process_running",
    "read_state",
    "resolve_target",
    "state_dir",
    "state_path",
    "status",
    "stop_group",
    "up",
]
