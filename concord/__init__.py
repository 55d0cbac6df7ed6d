"""Concord: an LLM gateway configured as code."""

__version__ = "0.1.0"
