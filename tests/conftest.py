"""Shared fixtures live in tests/plugins/, one concern per module."""

pytest_plugins = [
    "tests.plugins.home",
    "tests.plugins.model",
    "tests.plugins.sshd",
    "tests.plugins.queen",
    "tests.plugins.testbed",
    "tests.plugins.fakehub",
    "tests.plugins.gpu",
    "tests.plugins.postgres",
]
