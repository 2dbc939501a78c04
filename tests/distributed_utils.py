"""Run `accelerate.debug_launcher` scenarios in a fresh interpreter.

debug_launcher forks; a child forked after the parent process has used torch's OpenMP pool can hang in its first
parallel op. Earlier tests in the pytest process will have, so each scenario file runs as `python FILE OUT_JSON` in a
new process group that is killed whole on timeout.
"""

import json
import os
import signal
import subprocess
import sys

import pytest


def run_scenarios(script: str, out_path, timeout: float = 240.0) -> dict[str, str]:
    """Runs `python script out_path`; the script writes `{scenario: "" or error text}` to out_path."""
    proc = subprocess.Popen(
        [sys.executable, script, str(out_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"{script} did not finish in {timeout} s:\n{log[-4000:]}")
    assert proc.returncode == 0 and os.path.exists(out_path), log[-4000:]
    with open(out_path) as f:
        return json.load(f)


def main_for(scenarios: dict) -> None:
    """`if __name__ == "__main__": main_for({...})` in a test file: launch each scenario on 2 processes."""
    from accelerate import debug_launcher

    results = {}
    for name, fn in scenarios.items():
        try:
            debug_launcher(fn, num_processes=2)
            results[name] = ""
        except Exception as err:  # ProcessRaisedException carries the failing rank's traceback
            results[name] = f"{type(err).__name__}: {err}"
    with open(sys.argv[1], "w") as f:
        json.dump(results, f)
