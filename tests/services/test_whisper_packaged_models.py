"""The multilingual Whisper base from its two PyPI parts: joined once into the cache, verified, atomic."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from whisper_stt.model import WhisperTranscriber
from whisper_stt.packaged_models import (
    WHISPER_BASE,
    ModelFilesError,
    PackagedFile,
    ensure_joined,
    is_complete,
    resolve_model,
)


def test_base_is_joined_once_verified_and_reused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="whisper_stt.packaged_models")
    folder = ensure_joined(WHISPER_BASE, cache_dir=tmp_path)
    assert folder.parent == tmp_path and is_complete(WHISPER_BASE, folder)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".verified-sha256", "config.json", "model.bin", "tokenizer.json", "vocabulary.json"
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [folder.name]  # no staging folder left
    stat = (folder / "model.bin").stat()

    assert ensure_joined(WHISPER_BASE, cache_dir=tmp_path) == folder
    again = (folder / "model.bin").stat()
    assert (again.st_ino, again.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # not re-joined
    assert sum("joining" in r.message for r in caplog.records) == 1

    transcriber = WhisperTranscriber(model_path=str(folder), cpu_threads=1)  # a model faster-whisper loads
    assert transcriber.multilingual and "fr" in transcriber.supported_languages


def test_concurrent_first_uses_join_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="whisper_stt.packaged_models")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_joined(WHISPER_BASE, cache_dir=tmp_path)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 3
    assert sum("joining" in r.message for r in caplog.records) == 1


def test_a_checksum_mismatch_leaves_nothing_behind(tmp_path: Path) -> None:
    wrong = dataclasses.replace(WHISPER_BASE, sha256={**WHISPER_BASE.sha256, "model.bin": "0" * 64})
    with pytest.raises(ModelFilesError, match="model.bin has SHA-256 905e5bf8.*expected 0000.*reinstall"):
        ensure_joined(wrong, cache_dir=tmp_path)
    assert [p for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_a_truncated_folder_is_joined_again(tmp_path: Path) -> None:
    folder = ensure_joined(WHISPER_BASE, cache_dir=tmp_path)
    with open(folder / "model.bin", "r+b") as f:
        f.truncate(1000)
    assert not is_complete(WHISPER_BASE, folder)
    assert ensure_joined(WHISPER_BASE, cache_dir=tmp_path) == folder
    assert (folder / "model.bin").stat().st_size == WHISPER_BASE.model_bin_size


def test_missing_packages_and_unwritable_caches_say_what_to_do(tmp_path: Path) -> None:
    missing = dataclasses.replace(
        WHISPER_BASE, parts=(PackagedFile("no_such_whisper_package", "data/model.bin.part1"),)
    )
    with pytest.raises(
        ModelFilesError, match="no_such_whisper_package.*pip install 'eloquence\\[whisper-stt\\]'"
    ):
        ensure_joined(missing, cache_dir=tmp_path)
    if os.geteuid() != 0:  # root writes anywhere
        read_only = tmp_path / "ro"
        read_only.mkdir(mode=0o500)
        with pytest.raises(ModelFilesError, match="WHISPER_MODEL_CACHE"):
            ensure_joined(WHISPER_BASE, cache_dir=read_only / "cache")
    with pytest.raises(ModelFilesError, match="neither a packaged model"):
        resolve_model(str(tmp_path / "nowhere"))


def test_the_build_time_command_prepares_the_cache(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "whisper_stt.packaged_models",
            "prepare",
            "base",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    folder = tmp_path / WHISPER_BASE.folder_name()
    assert done.stdout.strip() == f"base: {folder}" and is_complete(WHISPER_BASE, folder)
    # the service finds it through WHISPER_MODEL_CACHE, as the image sets it
    done = subprocess.run(
        [sys.executable, "-m", "whisper_stt.packaged_models", "path", "base"],
        env={**os.environ, "WHISPER_MODEL_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stdout.strip() == str(folder)
    bad = subprocess.run(
        [sys.executable, "-m", "whisper_stt.packaged_models", "prepare", "small"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown model 'small'" in bad.stderr
