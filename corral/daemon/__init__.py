"""The daemon (corral run, control socket, CLI) builds on the library; see the issues."""

from __future__ import annotations
