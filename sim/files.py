"""Files at the edges: reading an input as UTF-8 text (a bad byte is an InputError naming the file
and where, not a traceback), writing output files atomically (a temp file in the target folder,
then a rename, so a reader never sees a half-written file and a failed run leaves nothing behind),
and a quiet end when the reader of stdout went away (`infercast ... | head`)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from sim.errors import InputError


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader left


def read_text(path: str | Path, what: str) -> str:
    """The file's text (UTF-8, an optional byte-order mark dropped); InputError if it cannot be
    read or is not UTF-8 text. what: "scenario", "profile", ... for the message."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(str(path), "", f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(str(path), "", f"not a UTF-8 text file: byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start} (expected a {what} in UTF-8)") from None


def stdout_gone() -> int:
    """Call on BrokenPipeError: points stdout at /dev/null, so that the interpreter's final flush
    does not fail again, and returns the exit status to use."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests capture it)
        pass
    return EXIT_BROKEN_PIPE


def check_writable(path: str | Path | None) -> None:
    """Refuse early (before any work) an output whose folder is missing or read-only."""
    if path is None:
        return
    if Path(path).is_dir():
        raise InputError(str(path), "", "is a folder; expected a file name")
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
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise InputError(str(path), "", f"cannot write: {exc.strerror or exc}") from None
        raise
    return target
