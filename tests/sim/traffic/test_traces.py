"""Trace replay: the real traces load with their published counts; bad files fail with file:line."""

from __future__ import annotations

import csv
import gzip
import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from sim.traffic import traces
from sim.errors import InputError
from sim.traffic.traces import BUILTIN_TRACES, TRACE_DIR, list_builtin_traces, load_trace


def raw_csv(name: str) -> list[list[str]]:
    with open(TRACE_DIR / name, newline="") as f:
        return list(csv.reader(f))[1:]


# ---------------------------------------------------------------------------------- real traces

def test_builtin_traces_are_listed_and_shipped() -> None:
    assert list_builtin_traces() == ["azure-code-2023", "azure-conv-2023", "mooncake-conversation"]
    assert all((TRACE_DIR / t.file).is_file() for t in BUILTIN_TRACES.values())
    assert (TRACE_DIR / "README.md").read_text().count("CC-BY-4.0") >= 1


def test_azure_conv_replay_reproduces_counts_and_totals() -> None:
    rows = raw_csv("azure_conv_2023.csv")
    table = load_trace("azure-conv-2023")
    assert len(table) == len(rows) == 19_366
    assert int(table.prompt_tokens.sum()) == sum(int(r[1]) for r in rows)
    assert int(table.output_tokens.sum()) == sum(int(r[2]) for r in rows)
    assert round(table.prompt_tokens.mean()) == 1155 and round(table.output_tokens.mean()) == 211
    span_s = (datetime.fromisoformat(rows[-1][0]) - datetime.fromisoformat(rows[0][0])).total_seconds()
    assert table.arrival_s[0] == 0.0 and table.arrival_s[-1] == pytest.approx(span_s, abs=1e-6)
    assert table.source == "azure_conv_2023.csv" and table.prefix_hashes is None
    assert table.notes["num_out_of_order"] == 0 and table.notes["num_zero_output"] == 0


def test_azure_code_replay() -> None:
    rows = raw_csv("azure_code_2023.csv")
    table = load_trace("azure-code-2023")
    assert len(table) == 8_819
    assert int(table.output_tokens.sum()) == sum(int(r[2]) for r in rows)
    assert round(table.prompt_tokens.mean()) == 2048


def test_mooncake_replay_keeps_prefix_hashes() -> None:
    records = [json.loads(line) for line in (TRACE_DIR / "mooncake_conversation_first5000.jsonl").open()]
    table = load_trace("mooncake-conversation")
    assert len(table) == 5_000 and table.prefix_block_tokens == 512
    assert table.prefix_hashes is not None and table.prefix_hashes[1] == tuple(records[1]["hash_ids"])
    assert int(table.prompt_tokens.sum()) == sum(r["input_length"] for r in records)
    assert table.arrival_s[-1] == pytest.approx(1593.0)
    assert table.specs()[0].prefix_hashes[:3] == (0, 1, 2)


def test_loading_the_azure_trace_is_fast() -> None:
    start = time.perf_counter()
    load_trace("azure-conv-2023")
    assert time.perf_counter() - start < 1.0


def test_time_scale_and_rate_rescaling() -> None:
    base = load_trace("azure-conv-2023")
    faster = load_trace("azure-conv-2023", time_scale=0.5)
    np.testing.assert_allclose(faster.arrival_s, base.arrival_s * 0.5)
    at_rate = load_trace("azure-conv-2023", rate_per_s=20.0)
    assert (len(at_rate) - 1) / at_rate.span_s == pytest.approx(20.0)
    assert np.array_equal(at_rate.output_tokens, base.output_tokens)


def test_start_s_and_max_requests_take_a_slice() -> None:
    base = load_trace("azure-code-2023")
    part = load_trace("azure-code-2023", start_s=600.0, max_requests=100)
    first = int(np.searchsorted(base.arrival_s, 600.0))
    assert len(part) == 100 and part.arrival_s[0] == 0.0
    assert np.array_equal(part.prompt_tokens, base.prompt_tokens[first:first + 100])
    np.testing.assert_allclose(part.arrival_s, base.arrival_s[first:first + 100] - base.arrival_s[first])
    assert part.notes["num_before_start_s"] == first
    assert part.notes["num_after_max_requests"] == len(base) - first - 100


# ---------------------------------------------------------------------------------- other formats

def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
BURST_ROWS = ("5,ChatGPT,472,18,490,Conversation log\n"
              "45,ChatGPT,1087,0,1087,Conversation log\n"
              "118,GPT-4,417,276,693,API log\n")


def test_burstgpt_failed_requests_are_counted_not_silently_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "BurstGPT_1.csv", BURST_HEADER + BURST_ROWS)
    dropped = load_trace(path)
    assert dropped.prompt_tokens.tolist() == [472, 417] and dropped.arrival_s.tolist() == [0.0, 113.0]
    assert dropped.notes["num_zero_output"] == 1 and dropped.notes["num_zero_output_dropped"] == 1
    kept = load_trace(path, zero_output="one")
    assert kept.output_tokens.tolist() == [18, 1, 276] and kept.notes["num_zero_output_set_to_1"] == 1
    with pytest.raises(InputError) as info:
        load_trace(path, zero_output="error")
    assert info.value.where == f"{path}:3" and info.value.field == "Response tokens"


def test_burstgpt_release_with_session_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "burst.csv", "Timestamp,Session ID,Elapsed time,Model,Request tokens,"
                 "Response tokens,Total tokens,Log Type\n0.5,7,1.2,ChatGPT,10,20,30,Conversation log\n")
    table = load_trace(path, "burstgpt")
    assert table.prompt_tokens.tolist() == [10] and table.output_tokens.tolist() == [20]


def test_plain_csv_with_aliases_is_sorted_stably_and_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.csv", "timestamp_ms,input_tokens,completion_tokens\n"
                 "2000,1,1\n1000,2,2\n2000,3,3\n1500,4,4\n")
    table = load_trace(path)
    assert table.arrival_s.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert table.prompt_tokens.tolist() == [2, 4, 1, 3]  # ties keep file order
    assert table.notes["num_out_of_order"] == 2


def test_plain_jsonl_with_prefix_hashes(tmp_path: Path) -> None:
    lines = [{"arrival_s": 0.25, "prompt_tokens": 8, "output_tokens": 2, "prefix_hashes": [4, 5]},
             {"arrival_s": 1.25, "prompt_tokens": 9, "output_tokens": 3, "prefix_hashes": [4]}]
    path = write(tmp_path, "mine.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    table = load_trace(path)
    assert table.arrival_s.tolist() == [0.0, 1.0] and table.prefix_hashes == ((4, 5), (4,))


def test_azure_2024_style_utc_offsets_and_gzip(tmp_path: Path) -> None:
    text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n"
            "2024-05-10 00:00:00.0000000+00:00,100,10\n"
            "2024-05-10 02:00:01.5000000+02:00,200,20\n")
    path = tmp_path / "AzureLLMInferenceTrace_code_1week.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(text)
    table = load_trace(path)
    assert table.arrival_s.tolist() == [0.0, 1.5]


# ---------------------------------------------------------------------------------- bad input

def error_of(path: object, *args: object, **kwargs: object) -> InputError:
    with pytest.raises(InputError) as info:
        load_trace(path, *args, **kwargs)  # type: ignore[arg-type]
    assert str(path) in str(info.value)
    return info.value


AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


@pytest.mark.parametrize("text, line, field", [
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.6805900,4\n", 1, "format"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,-5,10\n", 3, "ContextTokens"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47.0,0,10\n", 3, "ContextTokens"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,4.5\n", 2, "GeneratedTokens"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,abc\n", 2, "GeneratedTokens"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n\n2023-11-16 18:15:47,374,0\n", 4, "GeneratedTokens"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n16/11/2023 18:15,374,44\n", 3, "TIMESTAMP"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n,374,44\n", 3, "TIMESTAMP"),
    (AZURE_HEADER + "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:47,374\n", 3, "GeneratedTokens"),
])
def test_malformed_azure_csv_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    path = write(tmp_path, "trace.csv", text)
    exc = error_of(path, "azure" if field != "format" else "auto")
    assert exc.where == f"{path}:{line}" and exc.field == field


def test_missing_column_when_the_format_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "trace.csv", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46,4\n")
    exc = error_of(path, "azure")
    assert exc.where == f"{path}:1" and exc.field == "GeneratedTokens" and "missing column" in exc.problem


@pytest.mark.parametrize("text", ["", "\n\n", AZURE_HEADER])
def test_empty_trace(tmp_path: Path, text: str) -> None:
    assert "empty trace" in error_of(write(tmp_path, "trace.csv", text)).problem


def test_unknown_format_and_unknown_name(tmp_path: Path) -> None:
    path = write(tmp_path, "trace.csv", AZURE_HEADER + "2023-11-16 18:15:46,4,4\n")
    assert error_of(path, "parquet").field == "format"
    assert "not a built-in trace" in error_of("azure-conv-2099").problem


@pytest.mark.parametrize("lines, line, field", [
    (['{"timestamp": 0, "input_length": 5, "output_length": 5}', '{"timestamp": 1, "input_length": 5}'],
     2, "output_length"),
    (['{"timestamp": 0, "input_length": 5, "output_length": 5}', '{"timestamp": 1, "input_length": -1, '
      '"output_length": 5}'], 2, "input_length"),
    (['{"timestamp": 0, "input_length": 5, "output_length": 5}', '{"timestamp": "x", "input_length": 1, '
      '"output_length": 5}'], 2, "timestamp"),
    (['{"timestamp": 0, "input_length": 5, "output_length": 5}', '{"timestamp": 1, "input_length": 1.5, '
      '"output_length": 5}'], 2, "input_length"),
    (['{"timestamp": 0, "input_length": 5, "output_length": 5, "hash_ids": [1, "a"]}'], 1, "hash_ids"),
    (['{"timestamp": 0, "input_length": 5, "output_length": 5}', "{not json"], 2, ""),
])
def test_malformed_mooncake_jsonl(tmp_path: Path, lines: list[str], line: int, field: str) -> None:
    path = write(tmp_path, "trace.jsonl", "\n".join(lines) + "\n")
    exc = error_of(path)
    assert exc.where == f"{path}:{line}" and exc.field == field


def test_bad_slice_and_rate_options(tmp_path: Path) -> None:
    path = write(tmp_path, "trace.csv", AZURE_HEADER + "2023-11-16 18:15:46,4,4\n2023-11-16 18:15:46,4,4\n")
    assert error_of(path, rate_per_s=2.0).field == "rate_per_s"
    assert error_of(path, start_s=10.0).field == "start_s"
    assert error_of(path, time_scale=0.0).field == "time_scale"
    assert error_of(path, max_requests=0).field == "max_requests"
    assert error_of(path, zero_output="skip").field == "zero_output"


def test_chunked_csv_reading_matches_and_locates_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = load_trace("azure-code-2023")
    monkeypatch.setattr(traces, "_CHUNK_ROWS", 1000)
    assert load_trace("azure-code-2023") == whole
    path = write(tmp_path, "trace.csv", AZURE_HEADER + "2023-11-16 18:15:46,4,4\n" * 2500
                 + "2023-11-16 18:15:47,4,x\n")
    exc = error_of(path)
    assert exc.where == f"{path}:2502" and exc.field == "GeneratedTokens"
