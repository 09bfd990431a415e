"""Start real services as subprocesses on free loopback ports, from eloquence.services."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from eloquence.services import ServiceDefinition, ServiceProcess, free_port


@contextlib.contextmanager
def running_service(
    definition: ServiceDefinition, log_dir: Path, *, env: Mapping[str, str] | None = None, timeout: float = 180.0
) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(
        definition=definition,
        port=free_port(),
        log_path=log_dir / f"{definition.name}.log",
        env=dict(env or {}),
    )
    proc.start()
    try:
        proc.wait_healthy(timeout)
        yield proc
    finally:
        proc.stop()
