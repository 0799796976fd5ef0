"""Spindle Device + Target manifests (pure text rendering): the one builder of the Python tools
(bench/, e2e/kernel's harness, e2e/standalone's checks), and the benchmark's own exports with the
iSCSI parameters both of its targets are given."""

from __future__ import annotations

from dataclasses import dataclass

IQN_PREFIX = "iqn.2026-11.dev.spindle"
NAMESPACE = "default"


API_VERSION = "spindle.dev/v1alpha1"


def default_iqn(name: str, namespace: str = NAMESPACE) -> str:
    """The IQN a Target without spec.iqn gets (the operator's and the agent's default)."""
    return f"{IQN_PREFIX}:{namespace}.{name}"


def yaml_scalar(v) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def yaml_lines(value, indent: int = 0) -> list[str]:
    """A mapping (or a list of mappings) in block style; keys keep their order. The scalars
    this module writes (names, IQNs, paths, numbers) need no quotes."""
    pad = " " * indent
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                out.append(f"{pad}{k}:")
                out += yaml_lines(v, indent + 2)
            else:
                out.append(f"{pad}{k}: {yaml_scalar(v)}")
    else:
        for item in value:
            if isinstance(item, (dict, list)):
                first, *rest = yaml_lines(item, indent + 2)
                out += [f"{pad}- {first.lstrip()}", *rest]
            else:
                out.append(f"{pad}- {yaml_scalar(item)}")
    return out


def document(kind: str, name: str, body: dict, namespace: str = NAMESPACE,
             api_version: str = API_VERSION) -> str:
    """One YAML document: apiVersion, kind, metadata, then `body` (spec:, stringData:, ...)."""
    return "\n".join(yaml_lines({"apiVersion": api_version, "kind": kind,
                                 "metadata": {"name": name, "namespace": namespace},
                                 **body})) + "\n"


def device(name: str, source: dict, *, node: str = "local", namespace: str = NAMESPACE,
           **spec) -> str:
    """A Device on `node`: `source` is {"file": {"path", "sizeBytes"}} or {"block": {"path"}};
    the other spec fields (blockSize, writeCache, ...) follow in the order given."""
    return document("Device", name, {"spec": {"nodeName": node, "source": source, **spec}},
                    namespace)


def target(name: str, luns: list[tuple[int, str]], *, namespace: str = NAMESPACE, **spec) -> str:
    """A Target serving `luns` ((LUN, Device name) pairs); `iqn`, `acl`, `chap`, `iscsi`
    ... as given (spec.iqn first when given, as the operator prints it)."""
    iqn = {"iqn": spec.pop("iqn")} if "iqn" in spec else {}
    body = {**iqn, "luns": [{"lun": lun, "deviceRef": dev} for lun, dev in luns], **spec}
    return document("Target", name, {"spec": body}, namespace)


@dataclass(frozen=True)
class Export:
    """One file-backed Device exported as one LUN of its own Target (same name)."""

    name: str
    file: str  # relative to the agent's data dir
    size_bytes: int
    lun: int = 0

    @property
    def iqn(self) -> str:
        return default_iqn(self.name)


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
    return "---\n".join([
        device(export.name, {"file": {"path": export.file, "sizeBytes": export.size_bytes}},
               blockSize=block_size, directIO=True, writeCache=write_cache),
        target(export.name, [(export.lun, export.name)], iqn=export.iqn,
               acl={"allowAll": True},
               iscsi={field: value for field, _, value in ISCSI_PARAMS}),
    ])
