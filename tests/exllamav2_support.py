"""What the tests/test_exllamav2_*.py files share."""

from __future__ import annotations

import pytest

from tests.plugins.gpu import no_gpu_reason

needs_no_gpu = pytest.mark.skipif(
    no_gpu_reason() is None, reason="a usable GPU is present: the backend would load"
)
