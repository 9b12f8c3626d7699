"""Supervisors: the pure OTP core (spec, intensity, plan, core) and its async runtime."""

from __future__ import annotations
