"""`python -m mrcnn_teach ...` (and `torchrun -m mrcnn_teach ...`): see cli.py."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
