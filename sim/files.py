"""Writing output files atomically: a temp file in the target folder, then a rename, so a
reader never sees a half-written file and a failed run leaves nothing behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sim.errors import InputError


def check_writable(path: str | Path | None) -> None:
    """Refuse early (before any work) an output whose folder is missing or read-only."""
    if path is None:
        return
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    if not folder.is_dir():
        raise InputError(str(path), "", f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(str(path), "", f"folder {folder} is not writable")


def write_text_atomic(path: str | Path, text: str) -> Path:
    target = Path(path)
    check_writable(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are shared documents
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target
