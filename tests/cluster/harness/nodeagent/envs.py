"""Container environment and the field/resource references shared with downwardAPI volumes."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

Obj = dict[str, Any]

NODE_ALLOCATABLE = {"cpu": "8", "memory": "16Gi", "ephemeral-storage": "100Gi"}


class ConfigError(Exception):
    """A referenced ConfigMap/Secret/key is missing: the container waits
    (CreateContainerConfigError) and the worker retries, as a kubelet does."""


# -- quantities -----------------------------------------------------------------------------
_SUFFIX: dict[str, int | Decimal] = {
    "": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "E": 10**18, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
_QTY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float) -> Decimal:
    match = _QTY.match(str(value).strip())
    if not match or match.group(2) not in _SUFFIX:
        raise ValueError(f"bad quantity {value!r}")
    return Decimal(match.group(1)) * Decimal(_SUFFIX[match.group(2)])


def resource_value(pod: Obj, container_name: str | None, ref: Obj) -> str:
    resource = str(ref["resource"])  # e.g. limits.cpu, requests.memory
    kind, _, name = resource.partition(".")
    containers = (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
    wanted = ref.get("containerName") or container_name
    container = next((c for c in containers if c["name"] == wanted), None)
    resources = (container or {}).get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:  # unset limits default to node allocatable, as in the kubelet
        raw = NODE_ALLOCATABLE.get(name, "0") if kind == "limits" else "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(raw) / (divisor or 1)))


# -- fieldRef -------------------------------------------------------------------------------
def go_quote(s: str) -> str:
    """Go's %q (strconv.Quote): the kubelet's downwardAPI label/annotation file format."""
    out = ['"']
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
               "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    for ch in s:
        code = ord(ch)
        if ch in escapes:
            out.append(escapes[ch])
        elif ch == " " or ch.isprintable():
            out.append(ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(m: dict[str, str]) -> str:
    return "\n".join(f"{k}={go_quote(m[k])}" for k in sorted(m))


_SUBSCRIPT = re.compile(r"^(metadata\.(?:labels|annotations))\['(.+)'\]$")


def field_value(pod: Obj, path: str, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod["metadata"], pod["spec"]
    sub = _SUBSCRIPT.match(path)
    if sub:
        mapping = meta.get(sub.group(1).split(".")[1]) or {}
        return str(mapping.get(sub.group(2), ""))
    simple: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: meta["name"],
        "metadata.namespace": lambda: meta["namespace"],
        "metadata.uid": lambda: meta["uid"],
        "metadata.labels": lambda: format_map(meta.get("labels") or {}),
        "metadata.annotations": lambda: format_map(meta.get("annotations") or {}),
        "spec.nodeName": lambda: spec.get("nodeName") or "",
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName") or "default",
        "status.podIP": lambda: pod_ip,
        "status.podIPs": lambda: pod_ip,
        "status.hostIP": lambda: host_ip,
        "status.hostIPs": lambda: host_ip,
    }
    if path not in simple:
        raise ValueError(f"unsupported fieldRef {path!r}")
    return simple[path]()


# -- env ------------------------------------------------------------------------------------
def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: $$ escapes, unknown references stay verbatim."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


class Sources:
    """ConfigMap/Secret reads with a per-use cache (one env build reads each object once)."""

    def __init__(self, get: Callable[[str], Obj | None], namespace: str) -> None:
        self._get, self.namespace = get, namespace
        self._cache: dict[str, Obj | None] = {}

    def data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        raw = self.raw(kind, name, optional)
        return None if raw is None else {k: v.decode(errors="replace") for k, v in raw.items()}

    def raw(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """Key → bytes, for volumes (binary-safe)."""
        key = f"{kind}/{name}"
        if key not in self._cache:
            self._cache[key] = self._get(f"/api/v1/namespaces/{self.namespace}/{kind}/{name}")
        obj = self._cache[key]
        if obj is None:
            if optional:
                return None
            raise ConfigError(f'{kind[:-1]} "{name}" not found')
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out


def _key_ref(sources: Sources, kind: str, ref: Obj) -> str | None:
    data = sources.data(kind, ref["name"], bool(ref.get("optional")))
    if data is None:
        return None
    if ref["key"] not in data:
        if ref.get("optional"):
            return None
        raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind[:-1]} {ref["name"]}')
    return data[ref["key"]]


def container_env(pod: Obj, container: Obj, sources: Sources, pod_ip: str, host_ip: str,
                  base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, field in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            if field in src:
                ref = src[field]
                data = sources.data(kind, ref["name"], bool(ref.get("optional"))) or {}
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name, value_from = var["name"], var.get("valueFrom")
        value: str | None
        if value_from is None:
            value = expand(var.get("value") or "", env)
        elif "fieldRef" in value_from:
            value = field_value(pod, value_from["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "resourceFieldRef" in value_from:
            value = resource_value(pod, container["name"], value_from["resourceFieldRef"])
        elif "configMapKeyRef" in value_from:
            value = _key_ref(sources, "configmaps", value_from["configMapKeyRef"])
        elif "secretKeyRef" in value_from:
            value = _key_ref(sources, "secrets", value_from["secretKeyRef"])
        else:
            raise ValueError(f"unsupported valueFrom for env {name}: {sorted(value_from)}")
        if value is not None:
            env[name] = value
    return env
