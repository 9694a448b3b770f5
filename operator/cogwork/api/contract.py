"""Names fixed by docs/pod-contract.md: labels, annotations, env, paths, audience.

The operator, the report endpoint and the trainer all depend on these strings; change the
contract page first, then here.
"""

from __future__ import annotations

# Labels on every child of a job.
LABEL_JOB_NAME = "cogwork.dev/job-name"
LABEL_KIND = "cogwork.dev/kind"
LABEL_ROLE = "cogwork.dev/role"
LABEL_NODE_INDEX = "cogwork.dev/node-index"
ROLE_RDZV = "rdzv"
ROLE_WORKER = "worker"

# Prefix the operator owns on labels and annotations; user podTemplate keys may not use it.
RESERVED_KEY_PREFIX = "cogwork.dev/"

# Control annotations (operator -> ranks through the downward-API file).
ANNOTATION_CHECKPOINT_REQUEST = "cogwork.dev/checkpoint-request"
ANNOTATION_STOP = "cogwork.dev/stop"

# Report endpoint authentication: projected ServiceAccount token with this audience.
REPORT_AUDIENCE = "cogwork.dev/report"
REPORT_TOKEN_EXPIRATION_SECONDS = 3600

RDZV_PORT = 29400

# Mount points inside training pods.
CHECKPOINT_DIR = "/cogwork/checkpoints"
DATA_DIR = "/cogwork/data"
CONTROL_DIR = "/etc/cogwork/control"
CONTROL_FILE = "annotations"
REPORT_TOKEN_DIR = "/var/run/cogwork/report"
REPORT_TOKEN_FILE = "token"
SHM_DIR = "/dev/shm"
# Where the launcher init container copies the SDK and its torch-only launcher (a bootstrap
# LAUNCHER_FILE) for workers on user images.
LAUNCHER_DIR = "/cogwork/launcher"
LAUNCHER_FILE = "launch.py"

# The trainer's entry points.
TRAIN_MODULE = "cogwork_trainer.train"
RDZV_STORE_MODULE = "cogwork_trainer.rdzv_store"
# The SDK (its own distribution, sdk/; in the trainer image, and copied into user images' pods).
LAUNCH_MODULE = "cogwork_sdk.launch"
INSTALL_SDK_MODULE = "cogwork_sdk.install"
# Worker env of script jobs: JSON list of regexes for zero-code stdout metrics (name, value).
METRICS_FORMAT_ENV = "COGWORK_METRICS_FORMAT"

# Env the operator injects outside the COGWORK_ namespace; user env may not use these names
# (nor any COGWORK_ name).
INJECTED_ENV_NAMES = (
    "POD_IP",
    "POD_NAME",
    "POD_NAMESPACE",
    "OMP_NUM_THREADS",
    "TORCH_DISABLE_SHARE_RDZV_TCP_STORE",
    "PYTHONUNBUFFERED",
)
RESERVED_ENV_PREFIX = "COGWORK_"


def is_reserved_env_name(name: str) -> bool:
    return name.startswith(RESERVED_ENV_PREFIX) or name in INJECTED_ENV_NAMES


# Writable directories of a container whose root filesystem is read-only (the operator's own
# image always; a user's image with spec.podTemplate.readOnlyRootFilesystem): two emptyDirs,
# with HOME pointing at the second.
TMP_DIR = "/tmp"
HOME_DIR = "/cogwork/home"

# What spec.podTemplate volumes and mounts may not take: the operator's volume names (and any
# name starting with cogwork-), and its mount points with every path above or below them.
OPERATOR_VOLUME_NAMES = ("dshm", "checkpoints", "control", "report-token", "data")
RESERVED_VOLUME_PREFIX = "cogwork-"
OPERATOR_MOUNT_ROOTS = (SHM_DIR, "/cogwork", "/etc/cogwork", "/var/run/cogwork", TMP_DIR)


def is_operator_volume_name(name: str) -> bool:
    return name in OPERATOR_VOLUME_NAMES or name.startswith(RESERVED_VOLUME_PREFIX)


def overlaps_operator_mount(path: str) -> bool:
    """Whether a mount at `path` would hide, or be hidden by, one of the operator's mounts."""
    return any(path == root or path.startswith(f"{root}/") or root.startswith(f"{path}/")
               for root in OPERATOR_MOUNT_ROOTS)
