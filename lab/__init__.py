"""Starts and stops the real services the tests, benchmarks and demo run against."""
