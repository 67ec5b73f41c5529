"""Run a module or a script with extra directories at the END of sys.path.

    python -m bench.withsite DIR[:DIR...] -m package.module [args...]
    python -m bench.withsite DIR[:DIR...] path/to/script.py [args...]

The baselines need libraries the project venv does not hold (torch, easyocr); another venv of the
same Python may. Appending its site-packages (unlike PYTHONPATH, which goes first) keeps the project's
own versions of shared dependencies in front. Never used for the service itself.
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    extra = [d for d in sys.argv[1].split(":") if d]
    sys.path.extend(d for d in extra if d not in sys.path)
    rest = sys.argv[2:]
    if rest[0] == "-m":
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
