"""What every job's command line shares: its parser, the common flags, flags as ``--set`` overrides,
and the one-line error wrapper.

A job's ``main`` reads top to bottom::

    def main(argv=None):
        args = build_parser().parse_args(argv)
        return run_cli("interceptor train", lambda: train_chain(config_from_args(args)))
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from data_pipeline.filesystems import LocationError
from ray_jobs.config import ConfigError
from ray_jobs.storage import StorageError
from specialists.registry import SpecialistError

#: errors that are the user's to fix: printed in one line, exit status 2 (CheckpointError is a SpecialistError;
#: LocationError: an S3 location without credentials or bucket)
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, SpecialistError, StorageError, LocationError)


def job_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A job's parser; its ``--help`` prints the module docstring as written."""
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_flags(ap: argparse.ArgumentParser, config_help: str, set_example: str) -> None:
    """``--config FILE`` and repeatable ``--set key=value`` overrides of its fields."""
    ap.add_argument("--config", help=config_help)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help=f"override a config field, e.g. {set_example}")


def add_storage_flags(ap: argparse.ArgumentParser, name_help: str = "experiment name",
                      storage_help: str = "local path or s3://bucket/prefix") -> None:
    """Where the runs are: ``--storage-path``, ``--s3-endpoint``, ``--name``."""
    ap.add_argument("--storage-path", help=storage_help)
    add_s3_endpoint_flag(ap)
    ap.add_argument("--name", help=name_help)


def add_s3_endpoint_flag(ap: argparse.ArgumentParser) -> None:
    """``--s3-endpoint``: the custom S3-compatible endpoint of every ``s3://`` location of the job."""
    ap.add_argument("--s3-endpoint", help="custom S3 endpoint of the job's s3:// locations, e.g. http://127.0.0.1:9000 "
                                          "(credentials: the nodes' own AWS environment or credential chain)")


def add_address_flag(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--address", help="Ray cluster address (default: local Ray / the job's cluster)")


def flag_overrides(args: argparse.Namespace, fields: Mapping[str, str] | Iterable[str]) -> list[str]:
    """``key=value`` overrides for the flags that were given: ``fields`` maps a flag's attribute to
    its config field (a plain list: the same names)."""
    pairs = fields.items() if isinstance(fields, Mapping) else ((f, f) for f in fields)
    return [f"{key}={json.dumps(getattr(args, flag))}" for flag, key in pairs if getattr(args, flag) is not None]


def run_cli(prog: str, action: Callable[[], Any], errors: tuple[type[BaseException], ...] = (),
            failures: tuple[type[BaseException], ...] = ()) -> int:
    """Run a job's action: user errors (:data:`USER_ERRORS` + ``errors``) print one line and exit 2,
    ``failures`` (a run that went wrong, e.g. no trial succeeded) one line and exit 1."""
    try:
        action()
    except (*USER_ERRORS, *errors) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except failures as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    return 0
