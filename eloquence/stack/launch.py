"""Starting services where their targets say, with one progress line per service.

- `launch(...)`: start the given targets as local processes and wait for their health; `up` and
  `ensure_services` both start through it (tests and the bench use `services.running_services`,
  which starts on free ports through the same `services.start_services`).
- `ensure_services(...)`: what `eloquence talk` uses. Reuses services already healthy at the
  configured URLs, starts the missing ones on loopback, and stops only what it started.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from ..keys import sidecar_key
from ..services import (
    HealthEvent,
    HealthWatch,
    ServiceProcess,
    ServiceStartError,
    check_health,
    port_in_use,
    start_services,
)
from ..settings import AppSettings
from .targets import ServiceTarget, client_environment, resolve_target


class ServiceUnavailableError(RuntimeError):
    """A service is down and cannot be started from here; the message names it."""


class HealthProgress:
    """One rich progress line per service while `wait_until_healthy` polls them."""

    def __init__(self, console: Console) -> None:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        self._progress = Progress(*columns, console=console, transient=False)
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> HealthProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def __call__(self, watch: HealthWatch, event: HealthEvent) -> None:
        name = watch.name
        if event == "waiting":
            self._tasks[name] = self._progress.add_task(f"{name}: waiting for {watch.health_url}", total=1)
        elif event == "healthy":
            url = watch.process.url if watch.process is not None else watch.health_url
            self._progress.update(
                self._tasks[name], completed=1, description=f"[green]{name}: healthy at {url}"
            )
        elif event == "exited":
            self._progress.update(self._tasks[name], description=f"[red]{name}: exited")
        else:
            self._progress.update(self._tasks[name], description=f"[red]{name}: not healthy")


def launch(
    targets: Sequence[ServiceTarget],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    console: Console,
    timeout: float | None = None,
    also_wait: Sequence[ServiceTarget] = (),
    on_started: Callable[[Sequence[ServiceProcess]], None] | None = None,
) -> dict[str, ServiceProcess]:
    """Start each target as a local process (logging to `log_dir/<name>.log`) and wait until it,
    and each of `also_wait` (starting elsewhere), is healthy: {name: process}.

    `on_started` sees the processes once started, before the wait. On failure (ServiceStartError
    naming the service and its log, or Ctrl-C), what was started here is stopped again.
    """
    processes = {target.name: target.process(env, log_dir) for target in targets}
    watches = [
        HealthWatch(t.name, t.health_url, timeout or t.definition.startup_timeout_s) for t in also_wait
    ]
    with HealthProgress(console) as progress:
        start_services(
            list(processes.values()),
            timeout=timeout,
            also_wait=watches,
            on_started=on_started,
            report=progress,
        )
    return processes


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
    naming it. `local-llm` yields the remote Mistral URL, unchecked, when one is configured.
    """
    targets = [resolve_target(name, settings) for name in names]
    missing: list[ServiceTarget] = []
    loading: list[ServiceTarget] = []
    for target in targets:
        if target.checked:
            _sort_unhealthy(target, missing=missing, loading=loading)
    started: dict[str, ServiceProcess] = {}
    if missing or loading:
        key = sidecar_key(settings)  # the one `up` stored, so these and `up`'s sidecars agree
        started = launch(
            missing,
            env={**client_environment(targets), **({"SIDECAR_API_KEY": key} if key else {})},
            log_dir=log_dir,
            console=console or Console(stderr=True),
            timeout=timeout,
            also_wait=loading,
        )
    try:
        yield {target.name: target.url for target in targets}
    finally:
        for proc in reversed(started.values()):
            proc.stop()


def _sort_unhealthy(
    target: ServiceTarget, *, missing: list[ServiceTarget], loading: list[ServiceTarget]
) -> None:
    """Nothing when `target` is healthy; else add it to what to start, or to what to wait for.

    Raises when it cannot be started here: not on this machine, or its port taken by something else.
    """
    healthy, detail = check_health(target.health_url, timeout=2.0)
    if healthy:
        return
    if not target.on_loopback:
        raise ServiceUnavailableError(
            f"{target.name} is not answering at {target.health_url} ({detail}); it is not on "
            "this machine, so it cannot be started here: start it there or point "
            f"{target.setting} elsewhere"
        )
    if not port_in_use(target.port, target.host):
        missing.append(target)
    elif detail.startswith("HTTP "):
        loading.append(target)  # something answers HTTP there: probably still loading
    else:
        raise ServiceStartError(
            f"{target.name}: port {target.port} is in use by something that does not answer "
            f"{target.definition.health_path}; free it or set {target.definition.port_env} to another port"
        )
