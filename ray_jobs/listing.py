"""``interceptor list``: the registered specialists and the stage chain, as tables."""

from __future__ import annotations

import argparse

from ray_jobs.cli_common import job_parser, run_cli
from ray_jobs.config import StageChain
from specialists.registry import get_spec, list_specialists


def build_parser() -> argparse.ArgumentParser:
    ap = job_parser("interceptor list", __doc__)
    ap.add_argument("--stages-file", help="stage chain YAML (default: the packaged one)")
    return ap


def print_tables(stages_file: str | None) -> None:
    chain = StageChain.load(stages_file)  # a bad file fails before anything is printed
    print("specialists:")
    for key in list_specialists():
        s = get_spec(key)
        branches = ", ".join(f"{b.name} {b.channels} k{b.kernel}" for b in s.branches)
        print(f"  {key:3} {s.name:20} {s.channels:3} ch -> {s.features:5} features  view={s.view.value}"
              f"{' +audio' if s.uses_audio else ''}  [{branches}]")
    print("stages:")
    for st in chain.stages:
        alias = f" ({'/'.join(st.aliases)})" if st.aliases else ""
        chunks = f" x {st.chunks} chunks" if st.chunks > 1 else ""
        print(f"  {st.name}{alias}: {st.dataset}, lr {st.lr:g}, {st.epochs} epoch(s){chunks}, {st.loss.value}, "
              f"dropout {st.dropout}, {st.preprocessing.value}, init from {st.init_from or 'backbone weights'}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("interceptor list", lambda: print_tables(args.stages_file))


if __name__ == "__main__":
    raise SystemExit(main())
