"""The one definition of each service: command, environment, port and health URL.

`eloquence up`, `eloquence talk`, the tests, the bench and docker-compose.yml all start services
from these definitions (tests/eloquence/test_compose.py checks that compose runs the same commands).
Health polling lives here once: `wait_until_healthy` serves `ServiceProcess.wait_healthy`,
`start_services` (the stack launcher's) and `running_services` (tests and bench, on free ports).
This module never imports livekit, so tests and the CLI can use it cheaply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    """Service name, as in docker-compose.yml."""
    console_script: str
    """Entry point installed by pyproject.toml (what the container runs)."""
    module_argv: tuple[str, ...]
    """The same command as `python -m ...` arguments (what local processes run)."""
    default_port: int
    url_env: str | None = None
    """The environment variable through which clients find this service."""
    port_env: str | None = None
    """The environment variable that moves the local process to another port (`eloquence up`)."""
    health_path: str = "/health"
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout_s: float = 120.0
    cpu_weight: int = 100
    """Relative CPU weight under contention (100: normal). Latency-critical services (the final
    transcript, the first audio, the agent's audio loop) keep 100; bulk work gets less. Compose
    carries it as `cpu_shares` (`compose_cpu_shares`), Kubernetes as the CPU request's share."""
    in_containers: bool = True
    """False for a service only `eloquence up` runs: compose and Kubernetes have LiveKit instead."""

    @property
    def compose_cpu_shares(self) -> int:
        """docker-compose `cpu_shares` (1024 is Docker's default weight)."""
        return 1024 * self.cpu_weight // 100

    def argv(
        self, *, host: str = "127.0.0.1", port: int | None = None, python: str = sys.executable
    ) -> list[str]:
        return [python, "-m", *self.module_argv, "--host", host, "--port", str(port or self.default_port)]

    def container_command(self) -> list[str]:
        """The command compose runs: the console script, listening on every interface."""
        extra = list(self.module_argv[1:])
        return [self.console_script, *extra, "--host", "0.0.0.0", "--port", str(self.default_port)]

    def url(self, port: int | None = None, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{port or self.default_port}"


WHISPER_STT = ServiceDefinition(
    name="whisper-stt",
    console_script="eloquence-whisper-stt",
    module_argv=("whisper_stt",),
    default_port=8001,
    url_env="WHISPER_STT_URL",
    port_env="WHISPER_STT_PORT",
)
AZURE_TTS = ServiceDefinition(
    name="azure-tts",
    console_script="eloquence-azure-tts",
    module_argv=("azure_tts",),
    default_port=5002,
    url_env="AZURE_TTS_URL",
    port_env="AZURE_TTS_PORT",
)
LOCAL_LLM = ServiceDefinition(
    name="local-llm",
    console_script="eloquence-local-llm",
    module_argv=("local_llm",),
    default_port=8004,
    url_env="LOCAL_LLM_URL",
    port_env="LOCAL_LLM_PORT",
    # the rest of a reply is bulk work: it only has to stay ahead of playback (the service also
    # lowers its generation thread's priority after the first clause: LLM_DECODE_NICE)
    cpu_weight=50,
)
API = ServiceDefinition(
    name="api",
    console_script="eloquence",
    module_argv=("eloquence", "api"),
    default_port=8003,
    port_env="API_PORT",
    health_path="/api/livekit/health",
    cpu_weight=50,  # token requests are not on the audio path
)
AGENT = ServiceDefinition(
    name="agent",
    console_script="eloquence",
    module_argv=("eloquence", "worker", "start"),
    default_port=8080,
    port_env="AGENT_HEALTH_PORT",
    health_path="/health",
)
PLAYGROUND = ServiceDefinition(
    # hosts the browser's local sessions (peer-to-peer WebRTC, no LiveKit): eloquence/playground/host.py
    name="playground",
    console_script="eloquence",
    module_argv=("eloquence", "playground"),
    default_port=8005,
    url_env="PLAYGROUND_URL",
    port_env="PLAYGROUND_PORT",
    # in a deployment the page joins a LiveKit room and the agent workers serve it
    in_containers=False,
)

ALL_SERVICES: dict[str, ServiceDefinition] = {
    s.name: s for s in (WHISPER_STT, AZURE_TTS, LOCAL_LLM, PLAYGROUND, API, AGENT)
}
CONTAINER_SERVICES: dict[str, ServiceDefinition] = {
    name: s for name, s in ALL_SERVICES.items() if s.in_containers
}
"""What docker-compose.yml and deploy/kubernetes run."""


class ServiceStartError(RuntimeError):
    """A service did not become healthy; the message names the service and its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def check_health(url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(healthy, detail) for one health URL; never raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200, resp.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}"
    except (OSError, ValueError) as e:
        return False, str(getattr(e, "reason", e))


@dataclass
class ServiceProcess:
    """One service running as a local process, logging to its own file."""

    definition: ServiceDefinition
    port: int
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.definition.url(self.port, self.host)

    @property
    def health_url(self) -> str:
        return self.url + self.definition.health_path

    def start(self) -> None:
        if port_in_use(self.port, self.host):
            raise ServiceStartError(
                f"{self.definition.name}: port {self.port} is already in use "
                f"(another instance running? set a different port)"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        env = {**os.environ, **self.definition.env, **self.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            self.definition.argv(host=self.host, port=self.port),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            # a process group of its own (so that `down` can signal it and its children) but the
            # launcher's session: Linux's autogroup scheduling shares the CPU between sessions
            # first, which would make the LLM's lowered thread priority count for nothing
            process_group=0,
        )
        log.close()

    def health_watch(self, timeout: float | None = None) -> HealthWatch:
        return HealthWatch(
            name=self.definition.name,
            health_url=self.health_url,
            timeout_s=timeout or self.definition.startup_timeout_s,
            process=self,
        )

    def wait_healthy(self, timeout: float | None = None) -> None:
        wait_until_healthy([self.health_watch(timeout)])

    async def wait_healthy_async(self, timeout: float | None = None) -> None:
        await asyncio.to_thread(self.wait_healthy, timeout)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def kill(self) -> None:
        """Hard kill (crash simulation)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


# --------------------------------------------------------------------------- waiting for health

HealthEvent = Literal["waiting", "healthy", "exited", "timed out"]


@dataclass(frozen=True)
class HealthWatch:
    """One service to wait for: its health URL, its deadline, and its process when started here."""

    name: str
    health_url: str
    timeout_s: float
    process: ServiceProcess | None = None

    def exit_code(self) -> int | None:
        if self.process is None or self.process.process is None:
            return None
        return self.process.process.poll()

    def where(self) -> str:
        """Where to look when it failed: the log's path and its last lines."""
        if self.process is None:
            return ""
        return f"; see {self.process.log_path}:\n{self.process.log_tail()}"


def wait_until_healthy(
    watches: Sequence[HealthWatch],
    *,
    report: Callable[[HealthWatch, HealthEvent], None] | None = None,
    poll_s: float = 0.1,
) -> None:
    """Poll every health URL at once until each answers 200.

    Raises ServiceStartError naming the service (and its log) when its process exits or its
    deadline passes. `report` hears each watch's events, for a progress display.
    """
    notify = report or _no_report
    start = time.monotonic()
    pending = list(watches)
    for watch in pending:
        notify(watch, "waiting")
    while pending:
        for watch in list(pending):
            code = watch.exit_code()
            if code is not None:
                notify(watch, "exited")
                raise ServiceStartError(
                    f"{watch.name} exited with code {code} during start-up{watch.where()}"
                )
            healthy, detail = check_health(watch.health_url, timeout=1.0)
            if healthy:
                notify(watch, "healthy")
                pending.remove(watch)
            elif time.monotonic() - start > watch.timeout_s:
                notify(watch, "timed out")
                raise ServiceStartError(
                    f"{watch.name} was not healthy at {watch.health_url} after {watch.timeout_s:.0f} s "
                    f"({detail}){watch.where()}"
                )
        if pending:
            time.sleep(poll_s)


def _no_report(watch: HealthWatch, event: HealthEvent) -> None:
    pass


# --------------------------------------------------------------------------- starting services


def start_services(
    processes: Sequence[ServiceProcess],
    *,
    timeout: float | None = None,
    also_wait: Sequence[HealthWatch] = (),
    on_started: Callable[[Sequence[ServiceProcess]], None] | None = None,
    report: Callable[[HealthWatch, HealthEvent], None] | None = None,
) -> None:
    """Start every process, then wait until each (and each of `also_wait`) is healthy.

    `on_started` runs once all are started, before the wait. On any failure, Ctrl-C included,
    the processes started here are stopped and the error propagates.
    """
    started: list[ServiceProcess] = []
    try:
        for proc in processes:
            proc.start()
            started.append(proc)
        if on_started is not None:
            on_started(started)
        watches = [*(proc.health_watch(timeout) for proc in started), *also_wait]
        wait_until_healthy(watches, report=report)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise


@contextlib.contextmanager
def running_services(
    definitions: Sequence[ServiceDefinition],
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> Iterator[list[ServiceProcess]]:
    """Fresh processes of `definitions` on free loopback ports, healthy; stopped on exit.

    Each logs to `log_dir/<name>.log`.
    """
    processes = [
        ServiceProcess(
            definition=definition,
            port=free_port(),
            log_path=log_dir / f"{definition.name}.log",
            env=dict(env or {}),
        )
        for definition in definitions
    ]
    start_services(processes, timeout=timeout)
    try:
        yield processes
    finally:
        for proc in reversed(processes):
            proc.stop()


@contextlib.contextmanager
def running_service(
    definition: ServiceDefinition,
    log_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
) -> Iterator[ServiceProcess]:
    """One fresh process of `definition` on a free loopback port, healthy; stopped on exit."""
    with running_services([definition], log_dir, env=env, timeout=timeout) as (proc,):
        yield proc
