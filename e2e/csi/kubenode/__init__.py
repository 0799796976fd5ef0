"""The pieces of e2e/csi/run-pod."""
