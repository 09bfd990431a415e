"""The local stack: every service of `eloquence.services` as a process on this machine.

- `ensure_services(...)`: what `eloquence talk` uses. Reuses services already healthy at the
  configured URLs, starts the missing ones on loopback, and stops only what it started.
- `eloquence up`: starts the whole stack, waits for each /health with progress, and records
  pids and ports in `<state dir>/stack.json` so that `status` and `down` work from another shell.
- `eloquence status` / `eloquence down`: read that file.

Ports: each service listens where its URL setting points (`WHISPER_STT_URL`, `AZURE_TTS_URL`,
`LOCAL_LLM_URL`), or on `WHISPER_STT_PORT` / `AZURE_TTS_PORT` / `LOCAL_LLM_PORT` / `API_PORT` /
`AGENT_HEALTH_PORT` when set. The processes `up` starts get the resulting URLs in their environment.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import os
import signal
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .services import (
    ALL_SERVICES,
    ServiceDefinition,
    ServiceProcess,
    ServiceStartError,
    check_health,
    port_in_use,
)
from .settings import AppSettings

if TYPE_CHECKING:
    from providers.endpoints import MistralEndpoint

STACK_ORDER = ("whisper-stt", "azure-tts", "llm", "api", "agent")
"""Start order: the API and the agent come after the services they call."""
_FIRST_WAVE = ("whisper-stt", "azure-tts", "llm")
_URL_SETTINGS = {"whisper-stt": "whisper_stt_url", "azure-tts": "azure_tts_url", "llm": "local_llm_url"}
STATE_FILE_NAME = "stack.json"
_STOP_TIMEOUT_S = 10.0


class ServiceUnavailableError(RuntimeError):
    """A service is down and cannot be started from here; the message names it."""


# --------------------------------------------------------------------------- where each service is


@dataclasses.dataclass(frozen=True)
class ServiceTarget:
    """Where one service is expected, and whether this machine may start it."""

    definition: ServiceDefinition
    url: str
    """Base URL the clients use."""
    on_loopback: bool
    checked: bool = True
    """False for a cloud endpoint (remote Mistral), which has no /health to poll."""
    setting: str = ""
    """What chose the URL, for error messages."""

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname or "127.0.0.1"
        return "127.0.0.1" if host == "localhost" else host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme in ("https", "wss") else 80)

    @property
    def health_url(self) -> str:
        return self.url.rstrip("/") + self.definition.health_path


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mistral_endpoint(settings: AppSettings, local_url: str) -> MistralEndpoint:
    """The one resolver's answer (providers.endpoints), with the local LLM service at `local_url`."""
    from providers.endpoints import resolve_mistral_endpoint

    return resolve_mistral_endpoint(
        api_key=settings.mistral_api_key,
        base_url=settings.mistral_base_url,
        model=settings.mistral_model,
        environ={"LOCAL_LLM_URL": local_url},
    )


def resolve_target(
    name: str, settings: AppSettings, environ: Mapping[str, str] | None = None
) -> ServiceTarget:
    """Where `name` should answer, from the settings and the `*_PORT` overrides."""
    environ = os.environ if environ is None else environ
    try:
        definition = ALL_SERVICES[name]
    except KeyError:
        raise ValueError(f"unknown service {name!r}; valid: {', '.join(STACK_ORDER)}") from None
    port_override = environ.get(definition.port_env or "")
    if port_override:
        try:
            port = int(port_override)
        except ValueError:
            raise ValueError(f"{definition.port_env}={port_override!r} is not a port number") from None
        target = ServiceTarget(
            definition, definition.url(port), on_loopback=True, setting=str(definition.port_env)
        )
    elif name == "api":
        target = ServiceTarget(
            definition, definition.url(settings.api_port), on_loopback=True, setting="API_PORT"
        )
    elif name == "agent":
        port = settings.agent_health_port
        target = ServiceTarget(
            definition, definition.url(port), on_loopback=True, setting="AGENT_HEALTH_PORT"
        )
    else:
        url = str(getattr(settings, _URL_SETTINGS[name])).rstrip("/")
        host = urlsplit(url).hostname or ""
        target = ServiceTarget(
            definition, url, on_loopback=is_loopback(host), setting=str(definition.url_env)
        )
    if name == "llm":
        endpoint = mistral_endpoint(settings, target.url)
        if not endpoint.is_local:
            # Mistral's cloud, Scaleway or another server: nothing to start, and no /health to poll.
            return ServiceTarget(
                definition,
                endpoint.server_url,
                on_loopback=False,
                checked=False,
                setting="MISTRAL_BASE_URL / MISTRAL_API_KEY",
            )
        return dataclasses.replace(target, url=endpoint.server_url)
    return target


def client_environment(targets: Sequence[ServiceTarget]) -> dict[str, str]:
    """The URL variables through which the started processes find each other."""
    env: dict[str, str] = {}
    for target in targets:
        if target.name == "llm":
            if target.checked:
                env["LOCAL_LLM_URL"] = target.url
        elif target.name == "api":
            env["API_PORT"] = str(target.port)
        elif target.name == "agent":
            env["AGENT_HEALTH_PORT"] = str(target.port)
        elif target.definition.url_env:
            env[target.definition.url_env] = target.url
    return env


# --------------------------------------------------------------------------- waiting for health


@dataclasses.dataclass
class _Pending:
    target: ServiceTarget
    process: ServiceProcess | None
    deadline: float


def wait_until_healthy(
    items: Sequence[tuple[ServiceTarget, ServiceProcess | None]],
    *,
    console: Console,
    timeout: float | None = None,
) -> None:
    """Poll every /health at once, with one progress line per service.

    Raises ServiceStartError naming the service and its log when a process exits or times out.
    """
    now = time.monotonic()
    pending = [_Pending(t, p, now + (timeout or t.definition.startup_timeout_s)) for t, p in items]
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        tasks = {
            p.target.name: progress.add_task(f"{p.target.name}: waiting for {p.target.health_url}", total=1)
            for p in pending
        }
        while pending:
            for item in list(pending):
                name, proc = item.target.name, item.process
                where = f"; see {proc.log_path}:\n" if proc is not None else ""
                if proc is not None and proc.process is not None and proc.process.poll() is not None:
                    progress.update(tasks[name], description=f"[red]{name}: exited")
                    raise ServiceStartError(
                        f"{name} exited with code {proc.process.returncode} during start-up{where}"
                        + proc.log_tail()
                    )
                healthy, detail = check_health(item.target.health_url, timeout=1.0)
                if healthy:
                    progress.update(
                        tasks[name], completed=1, description=f"[green]{name}: healthy at {item.target.url}"
                    )
                    pending.remove(item)
                elif time.monotonic() > item.deadline:
                    progress.update(tasks[name], description=f"[red]{name}: not healthy")
                    raise ServiceStartError(
                        f"{name} was not healthy at {item.target.health_url} in time ({detail}){where}"
                        + (proc.log_tail() if proc is not None else "")
                    )
            if pending:
                time.sleep(0.2)


# --------------------------------------------------------------------------- ensure_services (talk)


@contextlib.contextmanager
def ensure_services(
    names: Sequence[str],
    settings: AppSettings,
    log_dir: Path,
    *,
    timeout: float | None = None,
    console: Console | None = None,
) -> Iterator[dict[str, str]]:
    """Yield {service name: base URL} with each named service healthy.

    A service already healthy at its URL is used as it is. A missing one on loopback is started
    here (logging to `log_dir/<name>.log`) and stopped on exit; a missing remote one is an error
    naming it. `llm` yields the remote Mistral URL, unchecked, when one is configured.
    """
    console = console or Console(stderr=True)
    targets = [resolve_target(name, settings) for name in names]
    env = client_environment(targets)
    started: list[ServiceProcess] = []
    to_wait: list[tuple[ServiceTarget, ServiceProcess | None]] = []
    try:
        for target in targets:
            if not target.checked:
                continue
            healthy, detail = check_health(target.health_url, timeout=2.0)
            if healthy:
                continue
            if not target.on_loopback:
                raise ServiceUnavailableError(
                    f"{target.name} is not answering at {target.health_url} ({detail}); it is not on "
                    "this machine, so it cannot be started here: start it there or point "
                    f"{target.setting} elsewhere"
                )
            if port_in_use(target.port, target.host):
                if detail.startswith("HTTP "):
                    to_wait.append((target, None))  # something answers HTTP there: probably still loading
                    continue
                raise ServiceStartError(
                    f"{target.name}: port {target.port} is in use by something that does not answer "
                    f"{target.definition.health_path}; free it or set {target.definition.port_env} "
                    "to another port"
                )
            proc = _process_for(target, env, log_dir)
            proc.start()
            started.append(proc)
            to_wait.append((target, proc))
        if to_wait:
            wait_until_healthy(to_wait, console=console, timeout=timeout)
        yield {target.name: target.url for target in targets}
    finally:
        for proc in reversed(started):
            proc.stop()


# --------------------------------------------------------------------------- process identity


def _proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state, process group, start time) from /proc, or None when the pid does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[2]), fields[19]


def _proc_start_time(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[2] if stat else None


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of one process group: a service and anything it spawned."""
    if not Path("/proc/self/stat").exists():  # not Linux: ask the kernel for the group as a whole
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and (stat[0] != "Z" or _threads_alive(int(entry.name))):
                members.append(int(entry.name))
    return members


def _threads_alive(pid: int) -> bool:
    """A killed multi-threaded process shows its leader as a zombie while the other threads (and
    its sockets) are still going away: it is gone only when every thread is."""
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError):
                raw = (task / "stat").read_text()
                if raw[raw.rindex(")") + 2] != "Z":
                    return True
    return False


def _group_is_ours(pgid: int, start_time: str | None) -> bool:
    """Something still runs in the group we started (and the pid was not reused by another leader)."""
    if not group_members(pgid):
        return False  # everything exited (a dead leader may linger as a zombie until reaped)
    stat = _proc_stat(pgid)
    # Leader gone but its children left in the group, or the leader itself, started when recorded.
    return stat is None or stat[0] == "Z" or start_time is None or stat[2] == start_time


def process_running(pid: int, start_time: str | None) -> bool:
    stat = _proc_stat(pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return stat[0] != "Z" and (start_time is None or stat[2] == start_time)


def stop_group(pid: int, start_time: str | None, timeout: float = _STOP_TIMEOUT_S) -> bool:
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


# --------------------------------------------------------------------------- state file


def state_dir(settings: AppSettings) -> Path:
    return Path(settings.state_dir).expanduser().resolve()


def state_path(settings: AppSettings) -> Path:
    return state_dir(settings) / STATE_FILE_NAME


def read_state(path: Path) -> dict[str, Any] | None:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and isinstance(state.get("services"), dict) else None


def _write_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)  # atomic: `status` never reads half a file


def _service_record(target: ServiceTarget, proc: ServiceProcess | None) -> dict[str, Any]:
    pid = proc.process.pid if proc is not None and proc.process is not None else None
    return {
        "url": target.url,
        "health_url": target.health_url,
        "checked": target.checked,
        "pid": pid,
        "pid_start_time": _proc_start_time(pid) if pid else None,
        "port": target.port,
        "log": str(proc.log_path) if proc is not None else None,
    }


def _live_services(state: dict[str, Any]) -> list[str]:
    return [
        name
        for name, rec in state["services"].items()
        if rec.get("pid") and process_running(int(rec["pid"]), rec.get("pid_start_time"))
    ]


# --------------------------------------------------------------------------- up


class _Shutdown(Exception):
    """SIGTERM (from `eloquence down`) while `up` waits in the foreground."""


def _raise_shutdown(signum: int, frame: object) -> None:
    raise _Shutdown


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
    if only:
        unknown = [n for n in only if n not in ALL_SERVICES]
        if unknown:
            console.print(f"[red]unknown service(s): {', '.join(unknown)}; valid: {', '.join(STACK_ORDER)}")
            return None
        names = [n for n in STACK_ORDER if n in only]
    else:
        names = list(STACK_ORDER)
    if "agent" in names and not _livekit_reachable(settings.livekit_url):
        note = f"LiveKit is not reachable at {settings.livekit_url} (LIVEKIT_URL)"
        if only:
            console.print(f"[red]agent: cannot start: {note}")
            return None
        console.print(
            f"[yellow]agent: skipped, {note}; start LiveKit (docker compose up livekit) and run up again"
        )
        names.remove("agent")
    return names


def _preflight(targets: Sequence[ServiceTarget], log_dir: Path) -> list[str]:
    """Every problem we can see before starting anything: ports in use, remote services down."""
    problems = []
    for target in targets:
        log = log_dir / f"{target.name}.log"
        if not target.on_loopback:
            if target.checked:
                healthy, detail = check_health(target.health_url, timeout=2.0)
                if not healthy:
                    problems.append(
                        f"{target.name}: {target.setting} points to {target.url}, which is not on this "
                        "machine "
                        f"and is not healthy ({detail})"
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
                f"Log: {log}"
            )
    return problems


def _process_for(target: ServiceTarget, env: Mapping[str, str], log_dir: Path) -> ServiceProcess:
    """The local process of one service, logging to `<log_dir>/<name>.log`."""
    return ServiceProcess(
        definition=target.definition,
        port=target.port,
        host=target.host,
        log_path=log_dir / f"{target.name}.log",
        env=env,
    )


def _start(
    targets: Sequence[ServiceTarget], env: Mapping[str, str], log_dir: Path
) -> list[tuple[ServiceTarget, ServiceProcess]]:
    started = []
    for target in targets:
        proc = _process_for(target, env, log_dir)
        proc.start()
        started.append((target, proc))
    return started


def _print_summary(
    console: Console, targets: Sequence[ServiceTarget], procs: Mapping[str, ServiceProcess]
) -> None:
    table = Table(title="eloquence stack")
    for column in ("service", "url", "pid", "log"):
        table.add_column(column, no_wrap=column != "log", overflow="fold")
    for target in targets:
        proc = procs.get(target.name)
        if proc is None:
            table.add_row(target.name, target.url, "remote", "")
        else:
            pid = str(proc.process.pid) if proc.process else "-"
            table.add_row(target.name, target.url, pid, str(proc.log_path))
    console.print(table)


def _supervise(procs: Mapping[str, ServiceProcess], console: Console) -> NoReturn:
    """Wait for Ctrl-C or `down`, saying once when a service dies (`status` shows it as down)."""
    reported: set[str] = set()
    while True:
        time.sleep(1.0)
        for name, proc in procs.items():
            if name not in reported and proc.process is not None and proc.process.poll() is not None:
                reported.add(name)
                console.print(f"[red]{name} exited with code {proc.process.returncode}; see {proc.log_path}")


def up(args: argparse.Namespace) -> int:
    """`eloquence up [--detach] [--only ...]`: 0 once every service is healthy (or after Ctrl-C / `down`),
    1 when one cannot start (port in use, exit, timeout: named with its log), 2 for a usage error."""
    console = Console()
    progress_console = Console(stderr=True)
    settings = AppSettings()
    path = state_path(settings)
    log_dir = state_dir(settings) / "logs"

    previous = read_state(path)
    if previous is not None:
        live = _live_services(previous)
        if live:
            console.print(
                f"[red]a stack started from {path} is still running ({', '.join(live)}): "
                f"see `eloquence status`, or stop it with `eloquence down`"
            )
            return 1

    names = _select(args.only, settings, console)
    if names is None:
        return 2
    try:
        targets = [resolve_target(name, settings) for name in names]
    except (ValueError, ImportError) as e:
        console.print(f"[red]{e}")
        return 2
    problems = _preflight(targets, log_dir)
    if problems:
        for problem in problems:
            console.print(f"[red]{problem}", soft_wrap=True)
        return 1

    local = [t for t in targets if t.on_loopback]
    env = client_environment(targets)
    procs: dict[str, ServiceProcess] = {}
    state: dict[str, Any] = {
        # This process, while it starts the services and, without --detach, while it supervises them:
        # `down` from another shell signals it so that it stops cleanly.
        "supervisor_pid": os.getpid(),
        "started_at": time.time(),
        "log_dir": str(log_dir),
        "services": {t.name: _service_record(t, None) for t in targets if not t.on_loopback},
    }

    def record() -> None:
        for target in local:
            if target.name in procs:
                state["services"][target.name] = _service_record(target, procs[target.name])
        _write_state(path, state)

    def stop_all() -> None:
        for name in reversed(list(procs)):
            procs[name].stop(timeout=_STOP_TIMEOUT_S)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    previous_term = signal.signal(signal.SIGTERM, _raise_shutdown)
    try:
        try:
            for wave in (_FIRST_WAVE, tuple(n for n in STACK_ORDER if n not in _FIRST_WAVE)):
                batch = [t for t in local if t.name in wave]
                if not batch:
                    continue
                started = _start(batch, env, log_dir)
                procs.update({t.name: p for t, p in started})
                record()  # before waiting: `down` from another shell can already stop them
                wait_until_healthy(started, console=progress_console)
        except ServiceStartError as e:
            console.print(f"[red]{e}", soft_wrap=True)
            stop_all()
            return 1
        _print_summary(console, targets, procs)
        if args.detach:
            state["supervisor_pid"] = None
            record()
            console.print("Running in the background: `eloquence status`, `eloquence down`.")
            return 0
        console.print("Press Ctrl-C (or run `eloquence down`) to stop.")
        _supervise(procs, console)
    except (KeyboardInterrupt, _Shutdown):
        console.print("stopping...")
        stop_all()
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


def status(args: argparse.Namespace) -> int:
    """`eloquence status`: one row per service; 0 when all are healthy, 1 when one is down or unhealthy."""
    console = Console()
    settings = AppSettings()
    path = state_path(settings)
    state = read_state(path)
    table = Table(title=f"eloquence stack ({path})")
    for column in ("service", "state", "pid", "url", "log"):
        table.add_column(column, no_wrap=column in ("service", "state", "pid"), overflow="fold")
    all_healthy = True
    if state is None:
        console.print(f"No stack recorded in {path}; probing the configured URLs.")
        for name in STACK_ORDER[:-1]:
            try:
                target = resolve_target(name, settings)
            except (ValueError, ImportError) as e:
                table.add_row(name, f"[red]{e}", "", "", "")
                all_healthy = False
                continue
            healthy, cell = _health_cell(target.health_url, target.checked)
            all_healthy &= healthy
            table.add_row(name, cell if healthy else "[red]down", "", target.url, "")
        console.print(table)
        return 0 if all_healthy else 1
    for name, rec in state["services"].items():
        pid = rec.get("pid")
        if pid and not process_running(int(pid), rec.get("pid_start_time")):
            all_healthy = False
            table.add_row(name, "[red]down[/] (process gone)", str(pid), rec["url"], rec.get("log") or "")
            continue
        healthy, cell = _health_cell(rec["health_url"], rec.get("checked", True))
        all_healthy &= healthy
        table.add_row(name, cell, str(pid or "remote"), rec["url"], rec.get("log") or "")
    console.print(table)
    return 0 if all_healthy else 1


def down(args: argparse.Namespace) -> int:
    """`eloquence down`: stop every process group `up` recorded (SIGTERM, then SIGKILL) and forget them."""
    console = Console()
    settings = AppSettings()
    path = state_path(settings)
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
