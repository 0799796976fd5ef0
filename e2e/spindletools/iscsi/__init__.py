"""The iSCSI initiator: pdu.py (the PDUs, sans I/O), session.py (one blocking session, for
tests that misbehave on purpose) and reader.py (many asyncio sessions reading, for bench/scale)."""
