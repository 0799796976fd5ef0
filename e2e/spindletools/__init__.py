"""Python shared by Spindle's e2e tests and benchmarks: the Device/Target manifests, an iSCSI
initiator (iscsi/), and the standalone tests' checks. Run its tools as `python3 -m
spindletools.<module>` with e2e/ on PYTHONPATH (e2e/standalone/lib.sh and bench/py set it)."""
