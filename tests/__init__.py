"""pandapush's test suite (trial: ``python -m twisted.trial tests``)."""

from hypothesis import HealthCheck, settings

# The property tests check what is generated, not how fast: on a loaded machine (CI beside
# other jobs, or -j2) generating inputs can take longer than Hypothesis's health check and
# per-example deadline allow, which failed runs for reasons no code change could fix.
settings.register_profile("pandapush", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("pandapush")
