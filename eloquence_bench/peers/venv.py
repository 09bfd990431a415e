"""The peers' own virtual environment, and what it may import from ours.

The peers pin versions of their own that clash with ours (pipecat wants soundfile 0.13 and
soxr 1.0), so they live in `.eloquence/peers-venv`, created on demand with `PEER_REQUIREMENTS`
plus our exact engine versions (faster-whisper, CTranslate2, piper-tts, onnxruntime), so both
sides run the same engine builds.

The pipecat pipeline imports our clock (`eloquence_bench.pacing`, which needs only numpy and
`sidecar_common.pcm`). It gets them on its PYTHONPATH through `peer_import_path`: a directory
that links to those two packages and to nothing else of ours.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PEER_REQUIREMENTS = {
    "wyoming-faster-whisper": "wyoming-faster-whisper==3.8.1",
    "wyoming-piper": "wyoming-piper==2.5.2",
    "pipecat-ai": "pipecat-ai[whisper,piper]==1.14.0",
}
_SAME_ENGINES = ("faster-whisper", "ctranslate2", "piper-tts", "onnxruntime")
INSTALL_TIMEOUT_S = 1200
SHARED_PACKAGES = ("eloquence_bench", "sidecar_common")
"""Ours, importable in the peers' venv: the clock and the PCM helpers (numpy only)."""


class PeerUnavailable(RuntimeError):
    """A peer cannot run here; the message says why (it goes into bench.json)."""


def _requirements() -> list[str]:
    pins = list(PEER_REQUIREMENTS.values())
    for name in _SAME_ENGINES:
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{name}=={version(name)}")
    return pins


@dataclass
class PeersVenv:
    root: Path
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"


def ensure_peers_venv(root: Path, *, log: Any = print) -> PeersVenv:
    """The peers' venv with exactly `_requirements()`; created or refreshed when they change."""
    pins = _requirements()
    marker = root / "eloquence-pins.json"
    venv = PeersVenv(root=root)
    if not (marker.exists() and json.loads(marker.read_text()) == pins and venv.python.exists()):
        log(
            f"creating the peers' virtual environment in {root} ({', '.join(pins)}); this takes a few minutes"
        )
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--clear", str(root)], "create the peers' venv")
        _run(
            [str(venv.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
            "install the peers",
        )
        marker.write_text(json.dumps(pins))
    out = subprocess.run(
        [str(venv.python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(out)}
    wanted = [*PEER_REQUIREMENTS, *_SAME_ENGINES, "wyoming"]
    venv.versions = {name: installed.get(name, "missing") for name in wanted}
    return venv


def _run(argv: list[str], what: str) -> None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"could not {what}: timed out after {INSTALL_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise PeerUnavailable(f"could not {what}: {(proc.stderr or proc.stdout).strip()[-600:]}")


def peer_import_path(directory: Path) -> Path:
    """`directory`, holding a link to each of `SHARED_PACKAGES` and nothing else: the PYTHONPATH of
    a peer that runs our code. Links, not our site-packages: nothing else of ours can shadow the
    peers' own pins, whether we are installed from a checkout or from a wheel."""
    import importlib

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for name in SHARED_PACKAGES:
        package_dir = Path(importlib.import_module(name).__file__ or "").resolve().parent
        link = directory / name
        if link.is_symlink() and link.resolve() == package_dir:
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(package_dir, target_is_directory=True)
    return directory
