"""Test-suite set-up: pytester for tests that run pytest itself."""

pytest_plugins = ["pytester"]
