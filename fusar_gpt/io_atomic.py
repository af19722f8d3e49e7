"""Atomic files and directories: a reader sees the old version or the whole new one, never half of one.

Every output a later step trusts (parts, manifests, anchors, indexes, metrics, predictions, runs, exports) is
written through these helpers, and a failed write leaves no temporary file behind. The standard library has
the pieces (``tempfile``, ``os.replace``) but not the combination with clean-up on every error path, which is
what the project's eleven hand-written copies kept getting wrong. A directory that already exists and
must be replaced whole (a re-made base model) has :func:`replace_dir`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a hidden temporary sibling of ``path`` (ending in ``suffix``, for writers that insist on one, such
    as ``np.savez``) to write into; it replaces ``path`` when the block ends and is removed on any error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path, obj, **dumps) -> Path:
    return write_text(path, json.dumps(obj, **dumps) + "\n")


def write_jsonl(path, rows: Iterable) -> Path:
    return write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


@contextmanager
def atomic_dir(out) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``out`` and rename it to ``out`` when the block ends without an
    error (an empty ``out`` is replaced); on any error it is deleted."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def replace_dir(out) -> Iterator[Path]:
    """Like :func:`atomic_dir`, but ``out`` may already hold a previous version (a base model being re-made): it
    stays whole until the new folder is complete, is then moved aside, the new one renamed in, and the old one
    deleted. On any error the new folder is deleted and ``out`` is as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    aside = None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # a folder as mkdir makes it (mkdtemp's is private to its owner)
        if out.exists():
            aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(aside / out.name)
        tmp.rename(out)
    except BaseException:
        if aside is not None and (aside / out.name).exists() and not out.exists():
            (aside / out.name).rename(out)  # the swap failed half-way: put the old version back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
