from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler_core.reproduce import main

TRACE = "arrival_s,client,prompt_tokens,output_tokens\n" + "".join(
    f"{i * 0.5},{'acme' if i % 3 else 'globex'},{20 + i},{10 + i}\n" for i in range(40)
)


@pytest.fixture
def trace(tmp_path: Path) -> str:
    path = tmp_path / "tiny.csv"
    path.write_text(TRACE)
    return f"trace:{path}"


def test_it_prints_a_markdown_row_per_workload_and_policy(
    trace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["vtc", "--workload", trace, "--policies", "fcfs,vtc,rpm5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| workload | policy | max diff | avg diff | throughput")
    assert [line.split("|")[2].strip() for line in lines[2:]] == ["fcfs", "vtc", "rpm5"]


def test_json_follows_the_contract(trace: str, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["vtc", "--workload", trace, "--policies", "fcfs,rpm5", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["profile"] == "a10g-llama2-7b"
    cell = document["results"][trace]["rpm5"]
    assert set(cell) == {
        "max_diff",
        "avg_diff",
        "throughput_tok_s",
        "rejected",
        "ttft_p50_s",
        "ttft_p99_s",
    }
    assert cell["rejected"] > 0


def test_json_to_stdout_stays_parseable(trace: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vtc", "--workload", trace, "--policies", "vtc", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert "vtc" in json.loads(captured.out)["results"][trace]
    assert "| workload |" in captured.err


def test_dump_requests_writes_one_csv_per_workload_and_policy(trace: str, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    assert (
        main(["vtc", "--workload", "increase", "--policies", "rpm5", "--dump-requests", str(out)])
        == 0
    )
    with (out / "increase__rpm5.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == [
        "request_id",
        "tenant",
        "arrival_s",
        "admitted_s",
        "first_token_s",
        "finish_s",
        "prompt_tokens",
        "output_tokens",
        "status",
    ]
    assert {row["status"] for row in rows} == {"finished", "rejected"}
    assert all(row["finish_s"] == "" for row in rows if row["status"] == "rejected")


def test_plots_write_one_png_per_workload(trace: str, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    assert main(["vtc", "--workload", trace, "--policies", "fcfs,vtc", "--plots", str(out)]) == 0
    pngs = list(out.glob("*.png"))
    assert len(pngs) == 1
    assert pngs[0].read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["vtc", "--workload", "nope"], "unknown workload 'nope'"),
        (["vtc", "--policies", "fcfs,sjf"], "unknown policy 'sjf'"),
        (["vtc", "--profile", "tpu"], "unknown profile 'tpu'"),
        (["vtc", "--workload", "trace:/no/such/file.csv"], "cannot read trace"),
        (["other"], "invalid choice"),
        (["vtc", "--seed", "x"], "invalid int value"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_two(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert message in captured.err


def test_the_module_runs_as_a_script_and_fails_cleanly() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "scheduler_core.reproduce", "vtc", "--workload", "nope"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert completed.stderr.startswith("reproduce: error: unknown workload")


def test_a_trace_the_profile_cannot_hold_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "huge.csv"
    trace.write_text("arrival_s,client,prompt_tokens,output_tokens\n0.0,a,20000,10\n")
    assert main(["vtc", "--workload", f"trace:{trace}", "--policies", "fcfs"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "needs more KV than profile a10g-llama2-7b" in captured.err


# -- the Justitia experiment ------------------------------------------------------------------

JUSTITIA_KEYS = {
    "mean_completion_s",
    "p50_completion_s",
    "p99_completion_s",
    "max_slowdown",
    "jain",
    "throughput_tok_s",
}


def test_justitia_json_follows_the_contract(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["justitia", "--workload", "map_reduce", "--policies", "vtc,justitia-oracle"]
    assert main([*argv, "--json", "-"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["profile"] == "a100-llama2-13b"
    cells = document["results"]["map_reduce"]
    assert set(cells) == {"vtc", "justitia-oracle"}
    for cell in cells.values():
        assert set(cell) >= JUSTITIA_KEYS
        assert cell["mean_completion_s"] > 0 and 0 < cell["jain"] <= 1
    assert "| map_reduce | justitia-oracle |" in captured.err  # the table moves to stderr


def test_justitia_plots_a_completion_cdf_per_workload(tmp_path: Path) -> None:
    argv = ["justitia", "--workload", "map_reduce", "--policies", "fcfs,justitia-oracle"]
    assert main([*argv, "--plots", str(tmp_path)]) == 0
    png = tmp_path / "map_reduce_completion_cdf.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["justitia", "--workload", "nope"], "unknown application workload 'nope'"),
        (["justitia", "--policies", "vtc,bogus"], "unknown policy 'bogus'"),
        (["justitia", "--profile", "tpu"], "unknown profile"),
    ],
)
def test_justitia_bad_input_is_one_line_and_exit_status_two(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
