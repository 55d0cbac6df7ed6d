"""Test doubles shared by the test suite (a fake upstream LLM server, ...)."""
