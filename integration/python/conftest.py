"""Shared fixtures: the binary under test and helpers to run `inspect`."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def router_bin() -> Path:
    path = Path(os.environ.get("ROUTER_TEST_BIN", REPO / "target" / "debug" / "llama-router"))
    if not path.is_file():
        pytest.fail(f"{path} not found: build it (make test-python does) or set ROUTER_TEST_BIN")
    return path


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = Path(os.environ.get("DEMO_MODEL", Path.home() / ".cache/llama-router/models/gemma-3-270m-q4_k_m.gguf"))
    if not path.is_file():
        pytest.fail(f"demo model {path} missing: run `make demo-model`")
    return path


@pytest.fixture
def inspect(router_bin):
    """Runs `llama-router inspect --json PATH` and returns the parsed document."""

    def run(path: Path) -> dict:
        proc = subprocess.run([router_bin, "inspect", "--json", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run
