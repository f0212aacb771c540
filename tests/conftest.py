"""Test-wide settings: hypothesis profiles (a bounded run by default, a long one on request)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=300, deadline=None)
# The longer fuzz run: HYPOTHESIS_PROFILE=long bash scripts/test.sh tests/test_fuzz.py
settings.register_profile("long", max_examples=50_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
