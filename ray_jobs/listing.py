"""``interceptor list``: the registered specialists and the stage chain, as tables."""

from __future__ import annotations

import argparse

from ray_jobs.config import StageChain
from specialists.registry import get_spec, list_specialists


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="interceptor list", description=__doc__)
    ap.add_argument("--stages-file", help="stage chain YAML (default: the packaged one)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    print("specialists:")
    for key in list_specialists():
        s = get_spec(key)
        branches = ", ".join(f"{b.name} {b.channels} k{b.kernel}" for b in s.branches)
        print(f"  {key:3} {s.name:20} {s.channels:3} ch -> {s.features:5} features  view={s.view.value}"
              f"{' +audio' if s.uses_audio else ''}  [{branches}]")
    print("stages:")
    for st in StageChain.load(args.stages_file).stages:
        alias = f" ({'/'.join(st.aliases)})" if st.aliases else ""
        chunks = f" x {st.chunks} chunks" if st.chunks > 1 else ""
        print(f"  {st.name}{alias}: {st.dataset}, lr {st.lr:g}, {st.epochs} epoch(s){chunks}, {st.loss.value}, "
              f"dropout {st.dropout}, {st.preprocessing.value}, init from {st.init_from or 'backbone weights'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
