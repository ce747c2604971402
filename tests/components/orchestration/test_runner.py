"""The local runner of DAG steps (`run_omnistage`) against stand-in commands: it neither deadlocks on a child
that fills stdout before its stderr ends, nor waits past its timeout for a child that keeps printing."""

import os
import sys
import textwrap
import time

import pytest

from components.orchestration.runner import StepFailed, run_omnistage


@pytest.fixture
def command(tmp_path, monkeypatch):
    """Write a stand-in `omnistage` running BODY (Python) and point the runner at it."""

    def write(body: str):
        script = tmp_path / "omnistage"
        script.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n" + textwrap.dedent(body))
        script.chmod(0o755)
        monkeypatch.setenv("OMNISTAGE_BIN", str(script))

    return write


@pytest.mark.timeout(10)
def test_a_child_that_fills_stdout_before_its_stderr_ends_does_not_deadlock(command, capfd):
    # 512 KiB of JSON fills the stdout pipe (64 KiB) many times over while stderr is still open.
    command("""
        sys.stderr.write("starting\\n"); sys.stderr.flush()
        sys.stdout.write(json.dumps({"blob": "x" * 512 * 1024})); sys.stdout.flush()
        sys.stderr.write("done\\n")
    """)
    result = run_omnistage(["step"])
    assert len(result["blob"]) == 512 * 1024
    assert "starting\ndone\n" in capfd.readouterr().err  # progress still reaches the task log


@pytest.mark.timeout(10)
def test_the_timeout_counts_while_the_child_streams_and_stops_it(command, tmp_path):
    command(f"""
        open({str(tmp_path / "pid")!r}, "w").write(str(os.getpid()))
        for i in range(600):
            print("progress", i, file=sys.stderr, flush=True)
            time.sleep(0.1)
    """)
    started = time.monotonic()
    with pytest.raises(StepFailed, match="ran past its 1 s timeout and was stopped"):
        run_omnistage(["step"], timeout_s=1)
    assert time.monotonic() - started < 10
    with pytest.raises(ProcessLookupError):
        os.kill(int((tmp_path / "pid").read_text()), 0)


@pytest.mark.timeout(10)
def test_exit_code_and_non_json_stdout_fail_the_step(command):
    command("print('not json')")
    with pytest.raises(StepFailed, match="printed non-JSON on stdout: 'not json'"):
        run_omnistage(["step"])
    command("sys.exit(3)")
    with pytest.raises(StepFailed, match="exited with 3") as failure:
        run_omnistage(["step"])
    assert failure.value.retryable
    command("sys.exit(2)")  # bad input (a missing source folder): the step fails without retries
    with pytest.raises(StepFailed, match="exited with 2") as failure:
        run_omnistage(["step"])
    assert not failure.value.retryable
    command("")
    assert run_omnistage(["step"]) == {}
