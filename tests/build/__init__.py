"""Tests of the build step (envoyext.build) and the C SDK (envoyext/sdk)."""
