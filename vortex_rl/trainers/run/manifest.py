"""Checkpoint manifests: every file of a checkpoint with its size and SHA-256, written last (before the
rename that publishes the checkpoint) and checked when a checkpoint is chosen to resume from.

A checkpoint that fails its check is never loaded: ``resume=auto`` skips it with a warning naming it and
takes the next older valid one; a checkpoint named explicitly raises ``CheckpointError`` with its path.
Temporary directories of dead writers (``.tmp-global_step_N-<pid>``) are removed at the next start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

MANIFEST = "manifest.json"
STATE_FILE = "trainer_state.pt"
CHUNK = 16 << 20  # bytes hashed per read


class CheckpointError(ValueError):
    """A checkpoint that is incomplete or corrupt; the message names its path and the file at fault."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def hash_files(paths: list[Path]) -> list[str]:
    """SHA-256 of each file, files in parallel threads (hashlib releases the GIL): a checkpoint of a 4B
    model is ~64 GB, and one core hashes about 1 GB/s."""
    if len(paths) <= 1:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1, 8)) as pool:
        return list(pool.map(file_sha256, paths))


def write_manifest(directory: Path) -> dict[str, dict[str, int | str]]:
    """Hash every file under ``directory`` (flushed to disk first, so the manifest describes what a crash
    would leave) and write ``manifest.json`` beside them; returns its ``files`` entries."""
    directory = Path(directory)
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    for path in paths:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    digests = hash_files(paths)
    files: dict[str, dict[str, int | str]] = {
        path.relative_to(directory).as_posix(): {"size": path.stat().st_size, "sha256": digest}
        for path, digest in zip(paths, digests)}
    text = json.dumps({"version": 1, "files": files}, indent=1)
    with open(directory / MANIFEST, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return files


def verify_checkpoint(directory: Path, *, hashes: bool = True) -> None:
    """Raise ``CheckpointError`` unless every file of ``directory``'s manifest is there with its size (and,
    with ``hashes``, its SHA-256). A checkpoint from before manifests (none, but a ``trainer_state.pt``)
    passes: there is nothing to check it against."""
    directory = Path(directory)
    if not (directory / STATE_FILE).is_file():
        raise CheckpointError(f"checkpoint {directory} is incomplete: no {STATE_FILE}")
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        return
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {directory}: {MANIFEST} is unreadable ({e})") from None
    for name, entry in files.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            raise CheckpointError(f"checkpoint {directory} is corrupt: {name} has {size} bytes, its manifest "
                                  f"says {entry['size']}")
    if not hashes:
        return
    names = list(files)
    for name, digest in zip(names, hash_files([directory / n for n in names])):
        if digest != files[name]["sha256"]:
            raise CheckpointError(f"checkpoint {directory} is corrupt: {name} does not match its SHA-256 in {MANIFEST}")


def is_complete(directory: Path) -> bool:
    """The cheap check (files and sizes, no hashing) used when scanning runs."""
    try:
        verify_checkpoint(directory, hashes=False)
    except CheckpointError:
        return False
    return True


def newest_valid(candidates: list[Path], warn: Callable[[str], None]) -> Path | None:
    """The first of ``candidates`` (newest first) that passes ``verify_checkpoint``; each one skipped is
    named through ``warn``."""
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
        except CheckpointError as e:
            warn(f"warning: skipping a bad checkpoint: {e}")
            continue
        return candidate
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temp(run_dir: Path, warn: Callable[[str], None] = print) -> list[Path]:
    """Remove ``checkpoints/.tmp-*-<pid>`` left by writers that are no longer running (a crash or kill
    mid-checkpoint); a live process's directory is kept. Returns what was removed."""
    root = Path(run_dir) / "checkpoints"
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for path in sorted(root.glob(".*tmp-*")):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
        warn(f"removed {path} (a partial checkpoint of process {pid}, which is no longer running)")
    return removed
