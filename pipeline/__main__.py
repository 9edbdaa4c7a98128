"""The `ptvl` command's main module: `python -m pipeline ...` and the `ptvl` script both start here.

Processes that multiprocessing starts with "spawn" (img2dataset's download workers and logger, the LLM
pre-flight) import the parent's main module again before they run anything, unless it is a package's
`__main__` (Python skips those). The `ptvl` script imports this module, so it too is all such a process
imports: not the CLI, whose imports (Luigi, polars, pyarrow, every stage) cost seconds and memory in each
worker.
"""


def main() -> None:
    from pipeline.cli import main as cli  # deferred: see the module docstring

    cli()


if __name__ == "__main__":
    main()
