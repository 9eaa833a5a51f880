"""specrun-seed-spread: how much a metric moves between seeds, per method (specrun 0.1 plugin API)."""
