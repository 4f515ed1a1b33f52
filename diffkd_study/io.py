"""Atomic file writes and content hashing: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: The file that marks a folder as written by this program: only such a folder is ever replaced or
#: removed without ``overwrite=True`` (what the user made is never deleted).
OWNER_MARK = ".diffkd-study-output"


class OutputExistsError(FileExistsError):
    """An output path holds something this program did not write; the message names the remedy."""


def _umask() -> int:
    # os.umask can only be read by setting it; done once per process, before any thread writes files
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def _temp_name(path: Path, kind: str) -> str:
    """A temporary name next to ``path`` that no other process picks: pid and random suffix."""
    return f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{kind}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the mode the umask gives (``mkstemp`` alone would leave 0600), like a plain ``open``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def is_owned(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder this program wrote (it carries :data:`OWNER_MARK`)."""
    return (Path(path) / OWNER_MARK).is_file()


def check_output_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Refuse an output folder that holds something this program did not write.

    Allowed: a missing path, an empty folder, a folder this program wrote (:func:`is_owned`), or
    anything at all with ``overwrite=True`` (the user asked for it). A file where a folder should go
    is refused even then: replacing a file by a folder is never what was meant.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} is a file, not a folder: give a folder path for the output")
    if path.is_dir() and not overwrite and not is_owned(path) and any(path.iterdir()):
        raise OutputExistsError(f"{path} already holds files this program did not write: nothing was changed; "
                                "choose an empty or new folder, or pass --overwrite to replace it")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; it replaces ``path`` only if the block succeeds.

    The new folder is marked as written by this program (:data:`OWNER_MARK`). An existing ``path``
    is replaced only when :func:`check_output_dir` allows it (checked before the block runs, so no
    work is wasted); the old folder is renamed to a unique name and removed only after the new one
    is in place.
    """
    path = Path(path)
    check_output_dir(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        (tmp / OWNER_MARK).write_text(json.dumps({"written_by": "diffkd-study", "pid": os.getpid()}) + "\n",
                                      encoding="utf-8")
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        check_output_dir(path, overwrite=overwrite)  # again: something may have appeared meanwhile
        if path.exists():
            old = path.with_name(_temp_name(path, "old"))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


#: Where replaced work goes instead of being deleted: ``<folder>/.superseded/<UTC time>/``.
SUPERSEDED = ".superseded"


def set_aside(folder: str | os.PathLike[str], names: Iterable[str] | None = None) -> Path:
    """Move ``names`` of ``folder`` (those present; default every entry but the hidden ones) into a new
    ``folder/.superseded/<UTC time>/`` and return it: work that is replaced is kept, not deleted."""
    folder = Path(folder)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target = folder / SUPERSEDED / stamp
    target.mkdir(parents=True)
    chosen = sorted(e.name for e in folder.iterdir() if not e.name.startswith(".")) if names is None else names
    for name in chosen:
        if (folder / name).exists():
            os.replace(folder / name, target / name)
    return target


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (a temporary name, then a rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (non-JSON values through ``str``) to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes, read in chunks of ``chunk`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def first_line(err: BaseException) -> str:
    """An exception as one short line (its type and the first line of its message), for one-line errors."""
    return f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"


#: What a user does about weights that are missing, altered or unreadable.
WEIGHTS_REMEDY = "re-run the stage that trained it with --force STAGE"


def read_safetensors(path: str | os.PathLike[str], expected_sha256: str | None = None) -> dict[str, Any]:
    """The tensors of a safetensors file, checked: a missing file, another sha256 than the recorded one,
    or a truncated or foreign file is a one-line error naming the file and the remedy."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the model first ({WEIGHTS_REMEDY})")
    if expected_sha256 is not None and (actual := sha256_file(path)) != expected_sha256:
        raise ValueError(f"{path} has sha256 {actual[:12]}..., not the recorded {expected_sha256[:12]}...: the "
                         f"weights changed after they were recorded; {WEIGHTS_REMEDY}")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type for a truncated or foreign file
        raise ValueError(f"{path} cannot be read ({first_line(err)}); {WEIGHTS_REMEDY}") from None


def sha256_bytes(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()
