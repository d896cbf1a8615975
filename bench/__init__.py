"""Benchmarks: speed and memory of sharedpg, measured side by side with psql and pg_isready."""
