"""Benchmarks: `make bench`. Figures are printed as ratios measured side by side in one run."""
