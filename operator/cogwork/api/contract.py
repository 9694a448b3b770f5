"""The operator's side of docs/pod-contract.md: labels of children, reserved names, the report
token's audience. What the pods read too (paths, annotations, env names, entry points, report
route and events) is in cogwork_sdk.contract, defined once for both sides. Change the contract
page first, then here.
"""

from __future__ import annotations

from cogwork_sdk import contract as pod_contract

# Labels on every child of a job.
LABEL_JOB_NAME = "cogwork.dev/job-name"
LABEL_KIND = "cogwork.dev/kind"
LABEL_ROLE = "cogwork.dev/role"
LABEL_NODE_INDEX = "cogwork.dev/node-index"
ROLE_RDZV = "rdzv"
ROLE_WORKER = "worker"

# Prefix the operator owns on labels and annotations; user podTemplate keys may not use it.
RESERVED_KEY_PREFIX = "cogwork.dev/"

# Report endpoint authentication: projected ServiceAccount token with this audience.
REPORT_AUDIENCE = "cogwork.dev/report"
REPORT_TOKEN_EXPIRATION_SECONDS = 3600

# Env the operator injects outside the COGWORK_ namespace; user env may not use these names
# (nor any COGWORK_ name).
INJECTED_ENV_NAMES = (
    pod_contract.ENV_POD_IP,
    pod_contract.ENV_POD_NAME,
    pod_contract.ENV_POD_NAMESPACE,
    "OMP_NUM_THREADS",
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
    "PYTHONUNBUFFERED",
)
RESERVED_ENV_PREFIX = "COGWORK_"


def is_reserved_env_name(name: str) -> bool:
    return name.startswith(RESERVED_ENV_PREFIX) or name in INJECTED_ENV_NAMES


# What spec.podTemplate volumes and mounts may not take: the operator's volume names (and any
# name starting with cogwork-), and its mount points with every path above or below them.
OPERATOR_VOLUME_NAMES = ("dshm", "checkpoints", "control", "report-token", "data")
RESERVED_VOLUME_PREFIX = "cogwork-"
OPERATOR_MOUNT_ROOTS = (pod_contract.SHM_DIR, "/cogwork", "/etc/cogwork", "/var/run/cogwork",
                        pod_contract.TMP_DIR)


def is_operator_volume_name(name: str) -> bool:
    return name in OPERATOR_VOLUME_NAMES or name.startswith(RESERVED_VOLUME_PREFIX)


def overlaps_operator_mount(path: str) -> bool:
    """Whether a mount at `path` would hide, or be hidden by, one of the operator's mounts."""
    return any(path == root or path.startswith(f"{root}/") or root.startswith(f"{path}/")
               for root in OPERATOR_MOUNT_ROOTS)
