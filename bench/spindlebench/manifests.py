"""Spindle Device + Target manifests for the standalone agent (pure text rendering)."""

from __future__ import annotations

from dataclasses import dataclass

IQN_PREFIX = "iqn.2026-11.dev.spindle"
NAMESPACE = "default"


@dataclass(frozen=True)
class Export:
    """One file-backed Device exported as one LUN of its own Target (same name)."""

    name: str
    file: str  # relative to the agent's data dir
    size_bytes: int
    lun: int = 0

    @property
    def iqn(self) -> str:
        return f"{IQN_PREFIX}:{NAMESPACE}.{self.name}"


WRITE_CACHE_MODES = ("writeback", "writethrough")

# The iSCSI parameters both targets offer, so that they are compared on equal terms (tgt's own
# defaults differ: FirstBurstLength 64 KiB, MaxBurstLength 256 KiB, InitialR2T Yes,
# MaxRecvDataSegmentLength 8 KiB). Key: (Spindle manifest field, tgt/RFC 7143 key, value).
ISCSI_PARAMS = (
    ("maxRecvDataSegmentLength", "MaxRecvDataSegmentLength", 262144),
    ("maxBurstLength", "MaxBurstLength", 1048576),
    ("firstBurstLength", "FirstBurstLength", 262144),
    ("initialR2T", "InitialR2T", False),
    ("immediateData", "ImmediateData", True),
    ("maxOutstandingR2T", "MaxOutstandingR2T", 1),
)


def iscsi_value(v: bool | int) -> str:
    """A parameter's value as iSCSI text spells it (RFC 7143: Yes/No, decimal numbers)."""
    return ("Yes" if v else "No") if isinstance(v, bool) else str(v)


def iscsi_params() -> dict[str, str]:
    """The parameters as iSCSI keys and values."""
    return {key: iscsi_value(v) for _, key, v in ISCSI_PARAMS}


def iscsi_params_text() -> str:
    """The parameters as a report line: `Key=Value, ...` in RFC 7143 spelling."""
    return ", ".join(f"{key}={value}" for key, value in iscsi_params().items())


def _yaml_value(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def render(export: Export, write_cache: str = "writeback", block_size: int = 512) -> str:
    """A two-document YAML manifest: the Device and the Target serving it.

    O_DIRECT with the write cache on (WCE=1: a write completes when the O_DIRECT write
    does; SYNCHRONIZE CACHE flushes) is what tgt's aio backing store and raw fio do;
    `writethrough` makes every write durable first and is not comparable with them.
    Every ACL is open because the clients log in with their default initiator names.
    """
    if write_cache not in WRITE_CACHE_MODES:
        raise ValueError(f"writeCache must be one of {WRITE_CACHE_MODES}, not {write_cache!r}")
    if export.size_bytes % block_size:
        raise ValueError(f"size {export.size_bytes} is not a multiple of {block_size}")
    return f"""apiVersion: spindle.dev/v1alpha1
kind: Device
metadata:
  name: {export.name}
  namespace: {NAMESPACE}
spec:
  nodeName: local
  source:
    file:
      path: {export.file}
      sizeBytes: {export.size_bytes}
  blockSize: {block_size}
  directIO: true
  writeCache: {write_cache}
---
apiVersion: spindle.dev/v1alpha1
kind: Target
metadata:
  name: {export.name}
  namespace: {NAMESPACE}
spec:
  iqn: {export.iqn}
  luns:
    - lun: {export.lun}
      deviceRef: {export.name}
  acl:
    allowAll: true
  iscsi:
""" + "".join(f"    {field}: {_yaml_value(v)}\n" for field, _, v in ISCSI_PARAMS)
