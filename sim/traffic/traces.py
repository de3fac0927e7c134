"""Real request traces: public LLM inference traces, read as they are published, into a RequestTable.

Formats (fmt="auto" tells them apart by extension and header):
* azure: Azure LLM inference traces 2023 and 2024 (CSV): TIMESTAMP (wall clock such as
  `2023-11-16 18:15:46.6805900`, up to 9 fractional digits, an optional UTC offset), ContextTokens,
  GeneratedTokens.
* mooncake: Mooncake traces (JSONL): timestamp (ms since the trace's start), input_length,
  output_length, hash_ids (one id per 512-token block of the prompt; equal ids = shared prefix).
* burstgpt: BurstGPT (CSV): Timestamp (s), Model, Request tokens, Response tokens, Total tokens,
  Log Type (newer releases add Session ID and Elapsed time). Rows with 0 response tokens are failed
  requests.
* plain: CSV or JSONL with arrival_s, prompt_tokens, output_tokens (aliases in `PLAIN_COLUMNS`);
  JSONL rows may carry prefix_hashes (or hash_ids).

Done to every trace, and said so in `RequestTable.notes`:
* arrivals are made relative to the first request (t = 0); a file not sorted by time is sorted
  stably and `num_out_of_order` counts the rows that arrived before the row above them;
* rows with 0 output tokens follow the `zero_output` policy (see `TraceSpec`), counted;
* a slice (start_s, max_requests) counts what it left out.
Any other bad value (a missing column or cell, a token count that is < 1 or not a whole number, a
timestamp that does not parse) is an InputError at "file:line" (the header is line 1).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import itertools
import json
import math
import re
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import numpy as np

from sim.errors import InputError
from sim.traffic.workload import RequestTable, TraceSpec

TRACE_DIR = Path(__file__).parent.parent / "data" / "traces"
MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class BuiltinTrace:
    """A real trace shipped with infercast (attribution in sim/data/traces/README.md)."""

    name: str
    file: str
    format: str
    num_requests: int
    description: str


BUILTIN_TRACES: dict[str, BuiltinTrace] = {t.name: t for t in (
    BuiltinTrace("azure-conv-2023", "azure_conv_2023.csv", "azure", 19366,
                 "Azure LLM inference, conversation service, 1 hour on 2023-11-16 (Splitwise, ISCA 2024)"),
    BuiltinTrace("azure-code-2023", "azure_code_2023.csv", "azure", 8819,
                 "Azure LLM inference, coding service, 1 hour on 2023-11-16 (Splitwise, ISCA 2024)"),
    BuiltinTrace("mooncake-conversation", "mooncake_conversation_first5000.jsonl", "mooncake", 5000,
                 "Kimi (Moonshot AI) conversation trace, first 5,000 requests, with prefix hashes "
                 "(Mooncake, FAST 2025)"),
)}

# plain format: canonical column -> accepted names (lower case) and the factor to seconds
PLAIN_COLUMNS: dict[str, tuple[tuple[str, float], ...]] = {
    "arrival_s": (("arrival_s", 1.0), ("arrival_time_s", 1.0), ("arrival_time", 1.0),
                  ("timestamp_s", 1.0), ("time_s", 1.0), ("arrival_ms", 1e-3), ("timestamp_ms", 1e-3)),
    "prompt_tokens": tuple((name, 1.0) for name in (
        "prompt_tokens", "input_tokens", "input_length", "input_len", "prompt_len",
        "num_prompt_tokens", "context_tokens")),
    "output_tokens": tuple((name, 1.0) for name in (
        "output_tokens", "output_length", "output_len", "completion_tokens", "generated_tokens",
        "num_output_tokens", "response_tokens")),
}
_PLAIN_HASH_KEYS = ("prefix_hashes", "hash_ids")
_AZURE = ("timestamp", "contexttokens", "generatedtokens")
_BURSTGPT = ("timestamp", "request tokens", "response tokens")
_MOONCAKE = ("timestamp", "input_length", "output_length")
_TZ_SUFFIX = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


@dataclass
class _Columns:
    """A trace's columns in file order, before checks, sorting and slicing."""

    time_s: np.ndarray  # float64, any origin
    prompt_tokens: np.ndarray  # int64, unchecked
    output_tokens: np.ndarray  # int64, unchecked
    fields: tuple[str, str, str]  # the file's names for time, prompt and output
    line_of: Callable[[int], int]  # row index -> line number in the file
    prefix_hashes: list[tuple[int, ...]] | None = None
    prefix_block_tokens: int | None = None


# ------------------------------------------------------------------------------------------------
# Public API

def list_builtin_traces() -> list[str]:
    """Names accepted by load_trace in place of a path."""
    return sorted(BUILTIN_TRACES)


def is_builtin_trace(path_or_name: str) -> bool:
    return str(path_or_name).lower() in BUILTIN_TRACES


def resolve_trace_path(path_or_name: str | Path) -> Path:
    """A built-in trace's shipped file, or the path itself if it is a file."""
    name = str(path_or_name)
    if name.lower() in BUILTIN_TRACES:
        return TRACE_DIR / BUILTIN_TRACES[name.lower()].file
    path = Path(name).expanduser()
    if not path.is_file():
        raise InputError(name, "", "no such file, and not a built-in trace (built-ins: "
                         f"{', '.join(list_builtin_traces())})")
    return path


def load_trace(path_or_name: str | Path, fmt: str = "auto", *, zero_output: str = "auto",
               start_s: float = 0.0, max_requests: int | None = None, time_scale: float = 1.0,
               rate_per_s: float | None = None) -> RequestTable:
    """Read a trace file or built-in trace; options as in `TraceSpec` (whose docstring explains them)."""
    try:
        spec = TraceSpec(str(path_or_name), fmt, time_scale, rate_per_s, start_s, max_requests, zero_output)
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise InputError(str(path_or_name), field, problem) from None
    return load_trace_spec(spec)


def load_trace_spec(spec: TraceSpec) -> RequestTable:
    """The trace a TraceSpec names, checked, sorted, sliced and rescaled."""
    path = resolve_trace_path(spec.path)
    where = str(path)
    columns, fmt = _read_checked(path, spec.format)
    policy = spec.zero_output if spec.zero_output != "auto" else ("drop" if fmt == "burstgpt" else "error")
    notes = {"num_rows": int(columns.time_s.size)}
    columns = _checked(columns, policy, where, notes)
    columns = _sorted(columns, notes)
    columns = _sliced(columns, spec, where, notes)
    time_s = _rescaled(columns.time_s - columns.time_s[0], spec, where)
    return RequestTable(time_s, columns.prompt_tokens, columns.output_tokens,
                        None if columns.prefix_hashes is None else tuple(columns.prefix_hashes),
                        source=path.name, prefix_block_tokens=columns.prefix_block_tokens, notes=notes)


# ------------------------------------------------------------------------------------------------
# Reading and format detection

def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _is_jsonl(path: Path) -> bool:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".jsonl", ".ndjson", ".json"):
        return True
    if suffixes and suffixes[-1] == ".csv":
        return False
    with _open(path) as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def _read_checked(path: Path, fmt: str) -> tuple[_Columns, str]:
    """_read, with a file that is not a text trace at all (binary, not UTF-8, a broken gzip) an
    InputError naming it."""
    where = str(path)
    try:
        return _read(path, fmt)
    except UnicodeDecodeError as exc:
        raise InputError(where, "", f"not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} cannot be "
                         "decoded); expected a CSV or JSONL trace") from None
    except csv.Error as exc:
        raise InputError(where, "", f"not a readable CSV trace: {exc}") from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(where, "", f"cannot read trace: {getattr(exc, 'strerror', None) or exc}") from None


def _read(path: Path, fmt: str) -> tuple[_Columns, str]:
    """Parse the file once, tell its format if asked to (fmt is checked by TraceSpec), pull the columns."""
    where = str(path)
    is_jsonl = fmt == "mooncake" or (fmt != "azure" and fmt != "burstgpt" and _is_jsonl(path))
    if is_jsonl:
        records = _read_jsonl(path)
        if fmt == "auto":
            fmt = "mooncake" if set(_MOONCAKE) <= set(records[0][1]) else "plain"
        reader = _mooncake_columns if fmt == "mooncake" else _plain_json_columns
        return reader(records, where), fmt
    return _read_csv(path, fmt)


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with _open(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{line_number}", "", f"not valid JSON: {exc.msg}") from None
            except (ValueError, RecursionError) as exc:  # e.g. an integer of thousands of digits
                raise InputError(f"{path}:{line_number}", "", f"not a trace record: {exc}") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}:{line_number}", "", f"expected a JSON object, got {record!r}")
            records.append((line_number, record))
    if not records:
        raise InputError(str(path), "", "empty trace: no requests")
    return records


def _normalised(header: Sequence[str]) -> list[str]:
    return [name.strip().lower() for name in header]


def _detect_csv(header: list[str], where: str) -> str:
    names = set(_normalised(header))
    if set(_AZURE) <= names:
        return "azure"
    if set(_BURSTGPT) <= names:
        return "burstgpt"
    if all(any(alias in names for alias, _ in aliases) for aliases in PLAIN_COLUMNS.values()):
        return "plain"
    raise InputError(f"{where}:1", "format", f"cannot tell the format from the header {header}; expected "
                     "Azure (TIMESTAMP, ContextTokens, GeneratedTokens), BurstGPT (Timestamp, Request "
                     "tokens, Response tokens, ...) or plain (arrival_s, prompt_tokens, output_tokens)")


# ------------------------------------------------------------------------------------------------
# CSV columns, read in chunks so that a week-long trace (tens of millions of rows) never sits in
# memory as Python strings all at once

_CHUNK_ROWS = 1 << 20
_RawColumns = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, str, str]]


def _read_csv(path: Path, fmt: str) -> tuple[_Columns, str]:
    where = str(path)
    parts: list[_RawColumns] = []
    with _open(path) as f:
        reader = csv.reader(f)
        data_rows = (row for row in reader if row)
        header = next(data_rows, None)
        if header is None:
            raise InputError(where, "", "empty trace: no header and no requests")
        fmt = _detect_csv(header, where) if fmt == "auto" else fmt
        read_chunk = {"azure": _azure_chunk, "burstgpt": _burstgpt_chunk, "plain": _plain_chunk}[fmt]
        num_read = 0
        while rows := list(itertools.islice(data_rows, _CHUNK_ROWS)):
            parts.append(read_chunk(_CsvChunk(path, header, rows, num_read)))
            num_read += len(rows)
    if not parts:
        raise InputError(where, "", "empty trace: no requests")
    times, prompts, outputs = (np.concatenate([part[i] for part in parts]) for i in range(3))
    if fmt == "azure":  # wall-clock ns -> seconds since the earliest request, ns precision kept
        times = (times - times.min()) / 1e9
    return _Columns(times, prompts, outputs, parts[0][3], _csv_line_of(path)), fmt


def _csv_line_of(path: Path) -> Callable[[int], int]:
    """Data-row index -> file line; re-reads the file, so it is called only to report an error."""
    def line_of(index: int) -> int:
        with _open(path) as f:
            reader = csv.reader(f)
            seen = -1  # the header
            for row in reader:
                if row:
                    if seen == index:
                        return reader.line_num
                    seen += 1
        return -1
    return line_of


@dataclass(frozen=True)
class _CsvChunk:
    """Consecutive data rows of a CSV file; first_row is the index of rows[0] among all data rows."""

    path: Path
    header: list[str]
    rows: list[list[str]]
    first_row: int

    def where(self, row: int) -> str:
        """"file:line" of rows[row]."""
        return f"{self.path}:{_csv_line_of(self.path)(self.first_row + row)}"

    def cells(self, names: Sequence[str]) -> tuple[str, list[str]]:
        """The first column whose name is among names (case-insensitive), and the file's name for it."""
        normalised = _normalised(self.header)
        index = next((normalised.index(n.lower()) for n in names if n.lower() in normalised), None)
        if index is None:
            raise InputError(f"{self.path}:1", names[0], f"missing column; the header has {self.header}")
        field = self.header[index].strip()
        try:
            return field, [row[index] for row in self.rows]
        except IndexError:
            row = next(i for i, r in enumerate(self.rows) if len(r) <= index)
            raise InputError(self.where(row), field,
                             f"missing value (the row has {len(self.rows[row])} cells)") from None


def _whole(cell: str) -> int | None:
    """The cell as a whole number that fits in int64, or None."""
    try:
        value: int | float = int(cell)
    except ValueError:
        try:
            value = float(cell)
        except ValueError:
            return None
        if not value.is_integer():
            return None
    return int(value) if abs(value) < 2**63 else None


def _token_cells(cells: list[str], field: str, chunk: _CsvChunk) -> np.ndarray:
    """Whole numbers (a decimal like 12.0 is accepted); anything else is an error at its line."""
    text = np.array(cells)
    try:
        return text.astype(np.int64)
    except (ValueError, OverflowError):
        pass
    try:
        values = text.astype(np.float64)
        if np.isfinite(values).all() and (values == np.round(values)).all():
            return values.astype(np.int64)
    except ValueError:
        pass
    row = next((i for i, c in enumerate(cells) if _whole(c) is None), 0)
    raise InputError(chunk.where(row), field, f"expected a whole number of tokens, got {cells[row]!r}")


def _seconds_cells(cells: list[str], field: str, chunk: _CsvChunk, to_s: float) -> np.ndarray:
    try:
        values = np.array(cells).astype(np.float64)
    except ValueError:
        values = None
    if values is None or not np.isfinite(values).all():
        row = next((i for i, c in enumerate(cells) if not _is_finite_number(c)), 0)
        raise InputError(chunk.where(row), field,
                         f"expected a time in {'seconds' if to_s == 1 else 'ms'}, got {cells[row]!r}")
    return values * to_s


def _is_finite_number(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _wallclock_ns(cells: list[str], field: str, chunk: _CsvChunk) -> np.ndarray:
    """Wall-clock timestamps as int64 ns since the epoch (UTC offsets applied when present)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns on (and drops) a UTC offset
            ns = np.array(cells, dtype="datetime64[ns]").astype(np.int64)
    except (ValueError, Warning):
        ns = _wallclock_ns_with_offsets(cells, field, chunk)
    is_nat = ns == np.iinfo(np.int64).min
    if is_nat.any():
        _bad_timestamp(cells, int(np.argmax(is_nat)), field, chunk)
    return ns


def _wallclock_ns_with_offsets(cells: list[str], field: str, chunk: _CsvChunk) -> np.ndarray:
    naive, offsets_ns = [], []
    for cell in cells:
        cell = cell.strip()
        match = _TZ_SUFFIX.search(cell)
        naive.append(cell[:match.start()] if match else cell)
        offsets_ns.append(_offset_ns(match.group(1)) if match else 0)
    try:
        ns = np.array(naive, dtype="datetime64[ns]").astype(np.int64)
    except ValueError:
        row = next((i for i, c in enumerate(naive) if not _parses(c)), 0)
        _bad_timestamp(cells, row, field, chunk)
    return np.where(ns == np.iinfo(np.int64).min, ns, ns - np.array(offsets_ns, dtype=np.int64))


def _offset_ns(suffix: str) -> int:
    if suffix == "Z":
        return 0
    digits = suffix[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return (1 if suffix[0] == "+" else -1) * minutes * 60 * 10**9


def _parses(cell: str) -> bool:
    try:
        return not np.isnat(np.datetime64(cell, "ns"))
    except ValueError:
        return False


def _bad_timestamp(cells: list[str], row: int, field: str, chunk: _CsvChunk) -> NoReturn:
    raise InputError(chunk.where(row), field,
                     f"unparsable timestamp {cells[row]!r}; expected e.g. 2023-11-16 18:15:46.6805900")


def _tokens(chunk: _CsvChunk, prompt_names: Sequence[str], output_names: Sequence[str]
            ) -> tuple[np.ndarray, np.ndarray, str, str]:
    prompt_field, prompt = chunk.cells(prompt_names)
    output_field, output = chunk.cells(output_names)
    return (_token_cells(prompt, prompt_field, chunk), _token_cells(output, output_field, chunk),
            prompt_field, output_field)


def _azure_chunk(chunk: _CsvChunk) -> _RawColumns:
    time_field, stamps = chunk.cells(["TIMESTAMP"])
    prompt, output, prompt_field, output_field = _tokens(chunk, ["ContextTokens"], ["GeneratedTokens"])
    return _wallclock_ns(stamps, time_field, chunk), prompt, output, (time_field, prompt_field, output_field)


def _burstgpt_chunk(chunk: _CsvChunk) -> _RawColumns:
    time_field, stamps = chunk.cells(["Timestamp"])
    prompt, output, prompt_field, output_field = _tokens(chunk, ["Request tokens"], ["Response tokens"])
    return (_seconds_cells(stamps, time_field, chunk, 1.0), prompt, output,
            (time_field, prompt_field, output_field))


def _plain_chunk(chunk: _CsvChunk) -> _RawColumns:
    names = set(_normalised(chunk.header))
    aliases = PLAIN_COLUMNS["arrival_s"]
    to_s = next((factor for name, factor in aliases if name in names), 1.0)
    time_field, stamps = chunk.cells([name for name, _ in aliases])
    prompt, output, prompt_field, output_field = _tokens(
        chunk, [n for n, _ in PLAIN_COLUMNS["prompt_tokens"]], [n for n, _ in PLAIN_COLUMNS["output_tokens"]])
    return (_seconds_cells(stamps, time_field, chunk, to_s), prompt, output,
            (time_field, prompt_field, output_field))


# ------------------------------------------------------------------------------------------------
# JSONL columns (one Python loop over the records, which json.loads needs anyway)

def _json_value(record: dict[str, Any], keys: Sequence[str], where: str, kind: str) -> tuple[str, Any]:
    key = next((k for k in keys if k in record), None)
    if key is None:
        raise InputError(where, keys[0], f"missing key; the record has {sorted(record)}")
    value = record[key]
    is_number = (isinstance(value, (int, float)) and not isinstance(value, bool)
                 and (not isinstance(value, int) or abs(value) < 2**63))
    if kind == "tokens" and not (is_number and math.isfinite(value) and float(value).is_integer()):
        raise InputError(where, key, f"expected a whole number of tokens, got {value!r}")
    if kind == "time" and not (is_number and math.isfinite(value)):
        raise InputError(where, key, f"expected a time as a number, got {value!r}")
    return key, value


def _json_hashes(record: dict[str, Any], key: str, where: str) -> tuple[int, ...]:
    ids = record.get(key, [])
    if not isinstance(ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in ids):
        raise InputError(where, key, f"expected a list of integer block ids, got {ids!r}")
    return tuple(ids)


def _json_columns(records: list[tuple[int, dict[str, Any]]], path: str,
                  keys: tuple[Sequence[str], Sequence[str], Sequence[str]], hash_keys: Sequence[str],
                  time_factors: dict[str, float]) -> _Columns:
    times, prompts, outputs, hashes = [], [], [], []
    fields = ("", "", "")
    hash_key = next((k for k in hash_keys if k in records[0][1]), None)
    for line, record in records:
        where = f"{path}:{line}"
        time_key, time_value = _json_value(record, keys[0], where, "time")
        prompt_key, prompt = _json_value(record, keys[1], where, "tokens")
        output_key, output = _json_value(record, keys[2], where, "tokens")
        times.append(time_value * time_factors.get(time_key, 1.0))
        prompts.append(int(prompt))
        outputs.append(int(output))
        fields = (time_key, prompt_key, output_key)
        if hash_key is not None:
            hashes.append(_json_hashes(record, hash_key, where))
    line_numbers = [line for line, _ in records]
    return _Columns(np.array(times, dtype=np.float64), np.array(prompts, dtype=np.int64),
                    np.array(outputs, dtype=np.int64), fields, line_numbers.__getitem__,
                    hashes if hash_key is not None else None)


def _mooncake_columns(records: list[tuple[int, dict[str, Any]]], path: str) -> _Columns:
    columns = _json_columns(records, path, (["timestamp"], ["input_length"], ["output_length"]),
                            ["hash_ids"], {"timestamp": 1e-3})
    if columns.prefix_hashes is not None:
        columns.prefix_block_tokens = MOONCAKE_BLOCK_TOKENS
    return columns


def _plain_json_columns(records: list[tuple[int, dict[str, Any]]], path: str) -> _Columns:
    keys = tuple([name for name, _ in PLAIN_COLUMNS[c]] for c in ("arrival_s", "prompt_tokens", "output_tokens"))
    factors = dict(PLAIN_COLUMNS["arrival_s"])
    return _json_columns(records, path, keys, _PLAIN_HASH_KEYS, factors)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Checks, order, slice, time scale

def _take(columns: _Columns, rows: np.ndarray) -> _Columns:
    """The given rows (an index or boolean array); line_of maps new row indices to file lines."""
    index = np.flatnonzero(rows) if rows.dtype == bool else rows
    hashes = None if columns.prefix_hashes is None else [columns.prefix_hashes[i] for i in index.tolist()]
    old_line_of = columns.line_of
    return dataclasses.replace(
        columns, time_s=columns.time_s[index], prompt_tokens=columns.prompt_tokens[index],
        output_tokens=columns.output_tokens[index], prefix_hashes=hashes,
        line_of=lambda i: old_line_of(int(index[i])))


def _checked(columns: _Columns, policy: str, where: str, notes: dict[str, int]) -> _Columns:
    """Token counts >= 1, except 0 output tokens, which follow the zero_output policy."""
    _, prompt_field, output_field = columns.fields
    for field, values, minimum in ((prompt_field, columns.prompt_tokens, 1),
                                   (output_field, columns.output_tokens, 0)):
        if values.size and values.min() < minimum:
            row = int(np.argmax(values < minimum))
            raise InputError(f"{where}:{columns.line_of(row)}", field,
                             f"expected a token count >= {max(minimum, 1)}, got {values[row]}")
    is_zero = columns.output_tokens == 0
    num_zero = int(is_zero.sum())
    notes.update(num_zero_output=num_zero, num_zero_output_dropped=0, num_zero_output_set_to_1=0)
    if num_zero and policy == "error":
        row = int(np.argmax(is_zero))
        raise InputError(f"{where}:{columns.line_of(row)}", output_field,
                         f"expected a token count >= 1, got 0 ({num_zero} such rows; zero_output="
                         "'drop' or 'one' replays them)")
    if num_zero and policy == "one":
        notes["num_zero_output_set_to_1"] = num_zero
        return dataclasses.replace(columns, output_tokens=np.maximum(columns.output_tokens, 1))
    if num_zero and policy == "drop":
        notes["num_zero_output_dropped"] = num_zero
        columns = _take(columns, ~is_zero)
    if columns.time_s.size == 0:
        raise InputError(where, output_field, f"empty trace: all {num_zero} rows have 0 output tokens")
    return columns


def _sorted(columns: _Columns, notes: dict[str, int]) -> _Columns:
    is_earlier = np.diff(columns.time_s) < 0
    notes["num_out_of_order"] = int(is_earlier.sum())
    if not is_earlier.any():
        return columns
    return _take(columns, np.argsort(columns.time_s, kind="stable"))


def _sliced(columns: _Columns, spec: TraceSpec, where: str, notes: dict[str, int]) -> _Columns:
    time_s = columns.time_s - columns.time_s[0]
    first = int(np.searchsorted(time_s, spec.start_s, side="left"))
    n = time_s.size
    if first == n:
        raise InputError(where, "start_s", f"no requests at or after {spec.start_s:g} s; the trace "
                         f"spans {time_s[-1]:g} s")
    stop = n if spec.max_requests is None else min(n, first + spec.max_requests)
    notes.update(num_before_start_s=first, num_after_max_requests=n - stop)
    if first == 0 and stop == n:
        return columns
    return _take(columns, np.arange(first, stop))


def _rescaled(time_s: np.ndarray, spec: TraceSpec, where: str) -> np.ndarray:
    if spec.rate_per_s is None:
        return time_s * spec.time_scale if spec.time_scale != 1.0 else time_s
    span_s = float(time_s[-1])
    if time_s.size < 2 or span_s == 0:
        raise InputError(where, "rate_per_s", "cannot rescale to a rate: the requests all arrive at once")
    return time_s * ((time_s.size - 1) / span_s / spec.rate_per_s)
