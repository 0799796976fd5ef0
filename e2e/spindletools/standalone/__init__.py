"""The checks e2e/standalone's scripts run against an agent (python3 -m spindletools.standalone.X)."""
