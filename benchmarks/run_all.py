"""Runs every benchmark script in this folder, one after the other, and prints their tables.

Each script measures its own hot path against a baseline in the same process (alternating rounds) and prints ratios;
`RESULTS.md` records the runs we quote. Usage: `make bench`, or `python benchmarks/run_all.py [name-filter]`.
"""

import subprocess
import sys
from pathlib import Path


def main() -> int:
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    scripts = sorted(p for p in Path(__file__).parent.glob("bench_*.py") if pattern in p.name)
    failed = []
    for script in scripts:
        print(f"\n=== {script.name} ===", flush=True)
        if subprocess.run([sys.executable, str(script)]).returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"\nFailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
