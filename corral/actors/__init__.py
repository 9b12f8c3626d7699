"""Actors: mailboxes, the Actor API, paths and dead letters."""

from __future__ import annotations
