"""Third-party backend notices stay out of the way (one DEBUG line each with -v); real warnings still show."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPT = """
import sys, warnings
import components  # installs the notice filter, as in every omnistage process
from components.logging_config import configure_logging
configure_logging(verbose=sys.argv[1] == "verbose")
for _ in range(3):
    warnings.warn("Transformer Engine and Apex are not installed. Falling back to Torch optimizers.")
warnings.warn("source clip.mp4 has no audio stream")
"""


def _run(mode: str) -> str:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_backend_notices_are_hidden_and_real_warnings_are_shown():
    quiet = _run("quiet")
    assert "Transformer Engine" not in quiet
    assert "UserWarning: source clip.mp4 has no audio stream" in quiet


def test_verbose_shows_each_backend_notice_once_at_debug():
    verbose = _run("verbose")
    lines = [line for line in verbose.splitlines() if "Transformer Engine" in line]
    assert len(lines) == 1 and " DEBUG " in lines[0], verbose
    assert "source clip.mp4 has no audio stream" in verbose


def test_a_command_that_imports_megatron_prints_only_its_answer():
    proc = subprocess.run([sys.executable, "-m", "components.cli", "model", "params", "--preset", "tiny", "--json"],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert '"llm_total"' in proc.stdout
    assert proc.stderr.strip() == "", proc.stderr
