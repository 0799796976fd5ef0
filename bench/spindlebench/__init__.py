"""Spindle benchmark harness (bench/run)."""
