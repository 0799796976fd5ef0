"""Helpers of the local control plane's scripts (e2e/cluster)."""
