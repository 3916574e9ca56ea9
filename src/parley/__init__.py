"""Parley: analytics for AI-assistant platforms."""

__version__ = "0.1.0"
