"""Run every benchmark in turn: python bench/run_all.py [--quick] [--servers orthanc,litevna]

Arguments are passed to each benchmark; the exit code is non-zero if any of them failed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["stow.py", "qido.py", "render.py", "rendered.py"]  # later: wado_frames.py


def main(argv: list[str]) -> int:
    failed = [name for name in BENCHMARKS
              if subprocess.run([sys.executable, str(HERE / name), *argv]).returncode != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
