"""``python -m corral``: the ``corral`` command."""

from __future__ import annotations

import sys

from corral.daemon.cli import main

sys.exit(main())
