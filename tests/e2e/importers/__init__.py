"""Modules that misbehave when imported, named by a config's ``start`` (each is imported by a
daemon subprocess, never by the tests themselves)."""
