"""``python -m data_pipeline.synthetic``: the generator's command line."""

from .generation import main

if __name__ == "__main__":
    raise SystemExit(main())
