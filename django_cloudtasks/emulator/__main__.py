"""``python -m django_cloudtasks.emulator``: see :func:`django_cloudtasks.emulator.cli.main`."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
