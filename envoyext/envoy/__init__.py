"""Envoy itself: the bootstrap we generate, the process we run, and its admin API."""
