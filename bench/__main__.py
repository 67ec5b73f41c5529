"""``python -m bench``: the whole suite (see bench/cli.py).

Nothing is imported unless this runs as the main program: multiprocessing's forkserver and spawn
children import the main module again, and must not pay for the suite's imports.
"""

if __name__ == "__main__":
    from bench.cli import main

    raise SystemExit(main())
