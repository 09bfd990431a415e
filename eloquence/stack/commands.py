"""`eloquence up`, `status` and `down`.

- `up`: starts the whole stack, waits for each /health with progress, and records pids and ports
  in `<state dir>/stack.json` (`state.py`) so that `status` and `down` work from another shell;
  then prints the browser playground's URL (`?token=<API key>`) on the terminal.
- `status` / `down`: read that file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from ..keys import ensure_stack_keys
from ..services import (
    AGENT,
    ALL_SERVICES,
    API,
    PLAYGROUND,
    ServiceProcess,
    ServiceStartError,
    check_health,
    port_in_use,
)
from ..settings import AppSettings
from .launch import launch
from .processes import STOP_TIMEOUT_S, process_running, stop_group
from .state import StackFile, live_services, read_state, state_dir, state_path
from .targets import FIRST_WAVE, STACK_ORDER, ServiceTarget, client_environment, resolve_target

# --------------------------------------------------------------------------- up


class _Shutdown(Exception):
    """SIGTERM (from `eloquence down`) while `up` waits in the foreground."""


def _raise_shutdown(signum: int, frame: object) -> None:
    raise _Shutdown


@dataclass
class _LocalStack:
    """What one `up` runs: its targets, the processes started so far, and the state file that mirrors them."""

    targets: list[ServiceTarget]
    file: StackFile
    processes: dict[str, ServiceProcess] = field(default_factory=dict)
    keys_env: dict[str, str] = field(default_factory=dict, repr=False)
    """ELOQUENCE_API_KEYS and SIDECAR_API_KEY for the processes (eloquence/keys.py)."""
    language_env: dict[str, str] = field(default_factory=dict)
    """The sessions' default language for every process (`language_environment`)."""
    playground_token: str | None = field(default=None, repr=False)
    """The API key the playground URL carries (`?token=`); None when the API needs none."""

    @property
    def local(self) -> list[ServiceTarget]:
        return [t for t in self.targets if t.on_loopback]

    def started(self, processes: Sequence[ServiceProcess]) -> None:
        """Record new processes at once: `down` from another shell can stop them while they load."""
        by_name = {t.name: t for t in self.targets}
        for proc in processes:
            self.processes[proc.definition.name] = proc
            self.file.record(by_name[proc.definition.name], proc)
        self.file.save()

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop(timeout=STOP_TIMEOUT_S)
        self.file.remove()

    def detach(self) -> None:
        self.file.supervisor_pid = None
        self.file.save()


def _livekit_reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    port = parts.port or (443 if parts.scheme in ("wss", "https") else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _select(only: Sequence[str] | None, settings: AppSettings, console: Console) -> list[str] | None:
    """The services to start, in start order; None (after saying why) for a usage error."""
    if only:
        unknown = [n for n in only if n not in ALL_SERVICES]
        if unknown:
            console.print(f"[red]unknown service(s): {', '.join(unknown)}; valid: {', '.join(STACK_ORDER)}")
            return None
        names = [n for n in STACK_ORDER if n in only]
    else:
        names = list(STACK_ORDER)
    if AGENT.name in names and not _livekit_reachable(settings.livekit_url):
        note = f"LiveKit is not reachable at {settings.livekit_url} (LIVEKIT_URL)"
        if only:
            console.print(f"[red]agent: cannot start: {note}")
            return None
        console.print(
            f"[yellow]agent: skipped, {note}; start LiveKit (docker compose up livekit) and run up again "
            "(the browser playground needs neither)"
        )
        names.remove(AGENT.name)
    return names


def language_environment(language: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the processes need to serve `language` ("fr", "fr-FR") by default.

    ELOQUENCE_LANGUAGE for the agent, the API and the playground (a session's `config.language` still
    wins), WHISPER_LANGUAGE for requests that name none, and a WHISPER_MODELS that serves it: a
    WHISPER_MODELS set without that language (or `*`) gets `<language>:base`, the multilingual model.
    English is the default everywhere: nothing changes for it. Raises ValueError for a language no
    exercise speaks.
    """
    from ..exercises import SUPPORTED_LANGUAGES

    environ = os.environ if environ is None else environ
    short = language.strip().lower().replace("_", "-").split("-")[0]
    if short not in SUPPORTED_LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(SUPPORTED_LANGUAGES)}")
    env = {"ELOQUENCE_LANGUAGE": short, "WHISPER_LANGUAGE": short}
    models = environ.get("WHISPER_MODELS", "").strip()
    if models:
        served = {item.partition(":")[0].strip().lower().split("-")[0] for item in models.split(",")}
        if short not in served and "*" not in served:
            env["WHISPER_MODELS"] = f"{models.rstrip(',')},{short}:base"
    return env


def _still_running(path: Path) -> list[str]:
    """The services of a stack recorded at `path` that still run."""
    previous = read_state(path)
    return live_services(previous) if previous is not None else []


def _preflight(targets: Sequence[ServiceTarget], log_dir: Path) -> list[str]:
    """Every problem we can see before starting anything: ports in use, remote services down."""
    problems = []
    for target in targets:
        if not target.on_loopback:
            if target.checked:
                healthy, detail = check_health(target.health_url, timeout=2.0)
                if not healthy:
                    problems.append(
                        f"{target.name}: {target.setting} points to {target.url}, which is not on this "
                        f"machine and is not healthy ({detail})"
                    )
            continue
        if port_in_use(target.port, target.host):
            healthy, _ = check_health(target.health_url, timeout=2.0)
            hint = (
                f" (a healthy {target.name} already answers there: see `eloquence status`)" if healthy else ""
            )
            override = target.definition.port_env or target.setting
            problems.append(
                f"{target.name}: port {target.port} is already in use{hint}; set {override} to a free port. "
                f"Log: {log_dir / f'{target.name}.log'}"
            )
    return problems


def _start_in_waves(stack: _LocalStack, console: Console) -> None:
    """The services nothing depends on first, then the API and the agent, which call them."""
    env = {**client_environment(stack.targets), **stack.language_env, **stack.keys_env}
    for wave in (FIRST_WAVE, tuple(n for n in STACK_ORDER if n not in FIRST_WAVE)):
        batch = [t for t in stack.local if t.name in wave]
        if batch:
            launch(batch, env=env, log_dir=stack.file.log_dir, console=console, on_started=stack.started)


def _print_summary(console: Console, stack: _LocalStack) -> None:
    table = Table(title="eloquence stack")
    for column in ("service", "url", "pid", "log"):
        table.add_column(column, no_wrap=column != "log", overflow="fold")
    for target in stack.targets:
        proc = stack.processes.get(target.name)
        if proc is None:
            table.add_row(target.name, target.url, "remote", "")
        else:
            pid = str(proc.process.pid) if proc.process else "-"
            table.add_row(target.name, target.url, pid, str(proc.log_path))
    console.print(table)


def _print_playground_url(console: Console, stack: _LocalStack) -> None:
    """The page's URL on a plain line of its own (a table may wrap it), on the terminal only."""
    api, host = stack.processes.get(API.name), stack.processes.get(PLAYGROUND.name)
    if api is None or host is None:
        return
    from ..playground.web import playground_url

    url = playground_url(api.url, stack.playground_token)
    note = " (the link carries the API key: keep it to yourself)" if stack.playground_token else ""
    console.print(f"Talk to the coach in a browser{note}:")
    console.print(url, markup=False, highlight=False, soft_wrap=True)


def _supervise(procs: Mapping[str, ServiceProcess], console: Console) -> NoReturn:
    """Wait for Ctrl-C or `down`, saying once when a service dies (`status` shows it as down)."""
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for name, proc in procs.items():
            if name not in reported and proc.process is not None and proc.process.poll() is not None:
                reported.add(name)
                console.print(f"[red]{name} exited with code {proc.process.returncode}; see {proc.log_path}")


def _run(stack: _LocalStack, *, detach: bool, console: Console) -> int:
    try:
        _start_in_waves(stack, Console(stderr=True))
    except ServiceStartError as e:
        console.print(f"[red]{e}", soft_wrap=True)
        stack.stop()
        return 1
    _print_summary(console, stack)
    _print_playground_url(console, stack)
    if detach:
        stack.detach()
        console.print("Running in the background: `eloquence status`, `eloquence down`.")
        return 0
    console.print("Press Ctrl-C (or run `eloquence down`) to stop.")
    _supervise(stack.processes, console)


def up(args: argparse.Namespace) -> int:
    """`eloquence up [--detach] [--only ...] [--language fr]`: 0 once every service is healthy (or after
    Ctrl-C / `down`), 1 when one cannot start (port in use, exit, timeout: named with its log), 2 for a
    usage error."""
    console = Console()
    settings = AppSettings()
    path = state_path(settings)
    log_dir = state_dir(settings) / "logs"

    live = _still_running(path)
    if live:
        console.print(
            f"[red]a stack started from {path} is still running ({', '.join(live)}): "
            f"see `eloquence status`, or stop it with `eloquence down`"
        )
        return 1
    try:
        # the flag, else ELOQUENCE_LANGUAGE (environment or .env); English needs nothing
        flag = getattr(args, "language", None)
        language = flag or settings.language
        language_env = language_environment(language) if flag or language != "en" else {}
    except ValueError as e:
        console.print(f"[red]{e}")
        return 2
    names = _select(args.only, settings, console)
    if names is None:
        return 2
    try:
        targets = [resolve_target(name, settings) for name in names]
    except (ValueError, ImportError) as e:
        console.print(f"[red]{e}")
        return 2
    problems = _preflight(targets, log_dir)
    for problem in problems:
        console.print(f"[red]{problem}", soft_wrap=True)
    if problems:
        return 1

    # This process supervises while it starts the services and, without --detach, afterwards.
    keys = ensure_stack_keys(settings)
    if keys.generated:  # on the terminal, once; never in a log
        console.print(
            f"API key (shown once; kept in {keys.path}, mode 0600, for `talk`, the bench and the "
            f"playground): [bold]{keys.api_key}[/]",
            soft_wrap=True,
        )
    stack = _LocalStack(
        targets,
        StackFile(path, log_dir, supervisor_pid=os.getpid()),
        keys_env=keys.environment(),
        language_env=language_env,
        playground_token=None if settings.api_auth.strip().lower() == "none" else keys.api_key,
    )
    if language_env.get("ELOQUENCE_LANGUAGE", "en") != "en":
        console.print(f"Sessions speak {language_env['ELOQUENCE_LANGUAGE']} unless a client asks otherwise.")
    for target in targets:
        if not target.on_loopback:
            stack.file.record(target, None)
    previous_term = signal.signal(signal.SIGTERM, _raise_shutdown)
    try:
        return _run(stack, detach=args.detach, console=console)
    except (KeyboardInterrupt, _Shutdown):
        console.print("stopping...")
        stack.stop()
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous_term)


# --------------------------------------------------------------------------- status / down


def _health_cell(url: str, checked: bool) -> tuple[bool, str]:
    if not checked:
        return True, "[cyan]remote (not probed)"
    healthy, detail = check_health(url, timeout=2.0)
    if healthy:
        return True, "[green]healthy"
    return False, f"[yellow]unhealthy[/] ({detail[:60]})"


def _status_table(path: Path) -> Table:
    table = Table(title=f"eloquence stack ({path})")
    for column in ("service", "state", "pid", "url", "log"):
        table.add_column(column, no_wrap=column in ("service", "state", "pid"), overflow="fold")
    return table


def _probe_configured(table: Table, settings: AppSettings) -> bool:
    """No stack recorded: one row per configured URL (the agent has none); True when all are healthy."""
    all_healthy = True
    for name in STACK_ORDER:
        if name == AGENT.name:
            continue
        try:
            target = resolve_target(name, settings)
        except (ValueError, ImportError) as e:
            table.add_row(name, f"[red]{e}", "", "", "")
            all_healthy = False
            continue
        healthy, cell = _health_cell(target.health_url, target.checked)
        all_healthy &= healthy
        table.add_row(name, cell if healthy else "[red]down", "", target.url, "")
    return all_healthy


def _probe_recorded(table: Table, services: Mapping[str, Mapping[str, Any]]) -> bool:
    """One row per recorded service: its process, then its health; True when all are healthy."""
    all_healthy = True
    for name, rec in services.items():
        pid = rec.get("pid")
        if pid and not process_running(int(pid), rec.get("pid_start_time")):
            all_healthy = False
            table.add_row(name, "[red]down[/] (process gone)", str(pid), rec["url"], rec.get("log") or "")
            continue
        healthy, cell = _health_cell(rec["health_url"], rec.get("checked", True))
        all_healthy &= healthy
        table.add_row(name, cell, str(pid or "remote"), rec["url"], rec.get("log") or "")
    return all_healthy


def status(args: argparse.Namespace) -> int:
    """`eloquence status`: one row per service; 0 when all are healthy, 1 when one is down or unhealthy."""
    console = Console()
    settings = AppSettings()
    path = state_path(settings)
    state = read_state(path)
    table = _status_table(path)
    if state is None:
        console.print(f"No stack recorded in {path}; probing the configured URLs.")
        all_healthy = _probe_configured(table, settings)
    else:
        all_healthy = _probe_recorded(table, state["services"])
    console.print(table)
    return 0 if all_healthy else 1


def down(args: argparse.Namespace) -> int:
    """`eloquence down`: stop every process group `up` recorded (SIGTERM, then SIGKILL) and forget them."""
    console = Console()
    path = state_path(AppSettings())
    state = read_state(path)
    if state is None:
        console.print(f"Nothing to stop: no stack recorded in {path}.")
        return 0
    supervisor = state.get("supervisor_pid")
    if supervisor and supervisor != os.getpid():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(supervisor), signal.SIGTERM)  # the foreground `up`: it stops its children too
    for name in reversed(list(state["services"])):
        rec = state["services"][name]
        if not rec.get("pid"):
            continue
        if stop_group(int(rec["pid"]), rec.get("pid_start_time")):
            console.print(f"{name}: stopped (pid {rec['pid']})")
        else:
            console.print(f"{name}: was not running")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return 0
