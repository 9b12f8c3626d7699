"""Calls ``sys.exit(3)`` when imported, as a script mistaken for a module does."""

import sys

sys.exit(3)
