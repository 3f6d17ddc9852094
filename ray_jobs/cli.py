"""The ``interceptor`` command: one subcommand per job module.

Each job module exposes ``main(argv: list[str] | None = None) -> int`` and can also be run as
``python -m <module>`` (which is what ``ray job submit ... -- python -m ray_jobs.<job>`` does).
"""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module, one-line help). Adding a job is one row here.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("data_pipeline.synthetic", "generate the synthetic benchmark (FF++, Celeb-DF v2, DFDC layouts)"),
    "prepare": ("ray_jobs.prepare", "Ray Data job: videos -> face-clip Parquet shards"),
    "train": ("ray_jobs.train", "train specialists through the stage chain with Ray Train"),
    "tune": ("ray_jobs.tune", "Ray Tune sweep of a stage's lr / focal gamma"),
    "evaluate": ("ray_jobs.evaluate", "evaluate the ensemble on a split's shards"),
    "predict": ("ray_jobs.predict", "score video files or folders with the Interceptor ensemble"),
    "demo": ("ray_jobs.demo", "synthetic benchmark -> prepare -> train -> ensemble -> report"),
    "list": ("ray_jobs.listing", "list registered specialists and stage recipes"),
}


def _usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: interceptor <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'interceptor <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"interceptor: unknown command {name!r}; known: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
