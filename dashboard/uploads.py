"""Uploaded request traces: checked, stored by content, and read only by sim's trace parser.

An upload is plain text or it is refused: the size is capped (`MAX_TRACE_BYTES`), the name must
end in .csv or .jsonl, the bytes must be UTF-8 text without NUL bytes, and then `sim.traffic.traces`
reads it as data (CSV or JSON lines; columns and types are checked there, the error names the
line). Nothing uploaded is ever executed, imported or unpickled. A trace that passes is kept as
`<upload dir>/<sha256 prefix>/<file name>`, so the same content always has the same path (the
simulation cache keys on it) and the exported scenario can name the file by its name alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sim.errors import InputError
from sim.traffic.traces import PLAIN_COLUMNS, load_trace

MAX_TRACE_MB = 20
MAX_TRACE_BYTES = MAX_TRACE_MB * 1024 * 1024
TRACE_SUFFIXES = (".csv", ".jsonl")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class StoredTrace:
    path: str  # where the simulator reads it
    name: str  # the uploaded file's (sanitised) name
    num_requests: int
    span_s: float
    notes: dict[str, int]


def upload_dir() -> Path:
    return Path(os.environ.get("INFERCAST_UPLOAD_DIR") or Path(tempfile.gettempdir()) / "infercast-uploads")


def expected_columns() -> str:
    """What a plain trace must hold, for the page's help text."""
    return "; ".join(f"{column} (or {', '.join(name for name, _ in names[1:4])}, ...)"
                     for column, names in PLAIN_COLUMNS.items())


def safe_name(name: str) -> str:
    base = _SAFE_NAME.sub("_", Path(name).name).strip("._") or "trace"
    return base[-100:]


def store_trace(name: str, data: bytes, folder: Path | None = None) -> StoredTrace:
    """Check an uploaded trace and keep it; InputError (naming the upload) when it is refused."""
    if len(data) > MAX_TRACE_BYTES:
        raise InputError(name, "", f"the file is {len(data) / 1e6:.1f} MB; traces up to {MAX_TRACE_MB} MB "
                         "are accepted (use max requests or a slice of the trace)")
    if not name.lower().endswith(TRACE_SUFFIXES):
        raise InputError(name, "", f"expected a .csv or .jsonl trace, got {Path(name).suffix or 'no extension'!r}")
    if not data.strip():
        raise InputError(name, "", "the file is empty")
    if b"\x00" in data:
        raise InputError(name, "", "expected a text file (CSV or JSON lines); this one is binary")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(name, "", f"expected UTF-8 text; byte {exc.start} is not") from None
    digest = hashlib.sha256(data).hexdigest()[:16]
    folder = (folder or upload_dir()) / digest
    path = folder / safe_name(name)
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    try:
        table = load_trace(path)
    except InputError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        where = exc.where.replace(str(path), name)
        raise InputError(where, exc.field, exc.problem) from None
    if len(table) == 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(name, "", "the trace has no requests")
    return StoredTrace(str(path), path.name, len(table), table.span_s, dict(table.notes))
