"""Helpers shared by the tests: real speech fixtures and real service subprocesses."""
