"""The pod contract (docs/pod-contract.md) as names, defined once for both sides: the operator
renders them into pods and serves the report route, the trainer and the SDK read them in the
pods. Standard library only (it is copied into user images' pods with the rest of the SDK);
the operator (cogwork) and the trainer (cogwork_trainer) both import this module and neither
imports the other. What only the operator needs (labels of children, reserved-name rules, the
token audience) stays in cogwork.api.contract.

Change docs/pod-contract.md first, then here.
"""

from __future__ import annotations

# -- control annotations (operator -> ranks, through the downward-API file CONTROL_FILE) ------

ANNOTATION_CHECKPOINT_REQUEST = "cogwork.dev/checkpoint-request"
ANNOTATION_STOP = "cogwork.dev/stop"

# -- mount points and files inside the pods ---------------------------------------------------

CHECKPOINT_DIR = "/cogwork/checkpoints"
DATA_DIR = "/cogwork/data"
CONTROL_DIR = "/etc/cogwork/control"
CONTROL_FILE = "annotations"  # in CONTROL_DIR: the pod's annotations, `key="value"` lines
REPORT_TOKEN_DIR = "/var/run/cogwork/report"
REPORT_TOKEN_FILE = "token"  # in REPORT_TOKEN_DIR: the projected ServiceAccount token
SHM_DIR = "/dev/shm"
# Where the launcher init container copies the SDK and a bootstrap LAUNCHER_FILE for workers
# on user images.
LAUNCHER_DIR = "/cogwork/launcher"
LAUNCHER_FILE = "launch.py"
# Writable directories of a container whose root filesystem is read-only (the operator's own
# image always; a user's image with spec.podTemplate.readOnlyRootFilesystem): two emptyDirs,
# with HOME pointing at the second.
TMP_DIR = "/tmp"
HOME_DIR = "/cogwork/home"
# The trainer's liveness file unless ENV_HEARTBEAT_FILE names another.
HEARTBEAT_FILE = f"{TMP_DIR}/cogwork-heartbeat"

# The container's termination message (Kubernetes' default terminationMessagePath): a rank that
# ends the run for a reason the operator reports writes one line there, which the kubelet puts
# in the pod's status (state.terminated.message). ENV_TERMINATION_MESSAGE_FILE overrides it.
TERMINATION_MESSAGE_FILE = "/dev/termination-log"

# -- exit codes of the trainer container (the launcher passes a worker's code on) -------------

# The training loss became NaN or infinite (spec.task/script.failOnNonFiniteLoss, default on):
# the operator fails the job with reason NonFiniteLoss and restarts nothing; the launcher does
# not restart the worker group either (a restart from the checkpoint would diverge again).
EXIT_NON_FINITE_LOSS = 86
REASON_NON_FINITE_LOSS = "NonFiniteLoss"
# spec.script.command names a program that is not in the image (a shell's code): the launcher
# says so in the termination message instead of torchrun's traceback and generic exit 1.
EXIT_COMMAND_NOT_FOUND = 127

# -- the rendezvous store (a c10d TCPStore in its own pod) and the entry points ---------------

RDZV_PORT = 29400
TRAIN_MODULE = "cogwork_trainer.train"
RDZV_STORE_MODULE = "cogwork_trainer.rdzv_store"
# The SDK (its own distribution, sdk/; in the trainer image, and copied into user images' pods).
LAUNCH_MODULE = "cogwork_sdk.launch"
INSTALL_SDK_MODULE = "cogwork_sdk.install"

# -- environment of the pods ------------------------------------------------------------------

# Downward API (the operator injects them; the kubelet fills them in).
ENV_POD_IP = "POD_IP"
ENV_POD_NAME = "POD_NAME"
ENV_POD_NAMESPACE = "POD_NAMESPACE"
# The contract's own, all under COGWORK_ (which user env may not use).
ENV_JOB_NAME = "COGWORK_JOB_NAME"
ENV_JOB_NAMESPACE = "COGWORK_JOB_NAMESPACE"
ENV_JOB_UID = "COGWORK_JOB_UID"
ENV_TASK = "COGWORK_TASK"  # JSON: the built-in task, or {"script": {"module": ..., "args": [...]}}
ENV_CHECKPOINT_DIR = "COGWORK_CHECKPOINT_DIR"
ENV_CHECKPOINT_EVERY = "COGWORK_CHECKPOINT_EVERY"
ENV_CHECKPOINT_KEEP = "COGWORK_CHECKPOINT_KEEP"
ENV_CONTROL_DIR = "COGWORK_CONTROL_DIR"
ENV_REPORT_URL = "COGWORK_REPORT_URL"
ENV_REPORT_TOKEN_FILE = "COGWORK_REPORT_TOKEN_FILE"
ENV_REPORT_CA = "COGWORK_REPORT_CA"  # PEM text (or a path to a PEM file)
ENV_BACKEND = "COGWORK_BACKEND"
# Not injected by the operator; local runs and tests set them.
ENV_HEARTBEAT_FILE = "COGWORK_HEARTBEAT_FILE"
ENV_COLLECTIVE_TIMEOUT = "COGWORK_COLLECTIVE_TIMEOUT"
ENV_STEP_DELAY_SECONDS = "COGWORK_STEP_DELAY_SECONDS"
ENV_TERMINATION_MESSAGE_FILE = "COGWORK_TERMINATION_MESSAGE_FILE"
# Script jobs: JSON list of regexes for zero-code stdout metrics (name, value).
ENV_METRICS_FORMAT = "COGWORK_METRICS_FORMAT"
# LabelJob steps: their configuration, JSON in the LabelJob spec's shape.
ENV_LABELJOB = "COGWORK_LABELJOB"
# Set by Katib's pod webhook (Push collector) on node 0 of a Katib trial, not by the operator.
ENV_KATIB_TRIAL_NAME = "KATIB_TRIAL_NAME"

# -- reports (rank 0 -> operator) -------------------------------------------------------------

# The operator's report endpoint: POST, the pod's token as bearer (ENV_REPORT_URL is the whole
# URL, so pods never build it).
REPORT_PATH = "/v1/namespaces/{namespace}/trainjobs/{name}/report"
EVENT_PROGRESS = "progress"
EVENT_CHECKPOINT = "checkpoint"
EVENT_RESUMED = "resumed"
EVENT_COMPLETED = "completed"
EVENT_STOPPED = "stopped"
REPORT_EVENTS = (EVENT_PROGRESS, EVENT_CHECKPOINT, EVENT_RESUMED, EVENT_COMPLETED,
                 EVENT_STOPPED)
# Where there is no report endpoint (`cogwork run`), each report is one stdout line:
# PROGRESS_PREFIX + its JSON.
PROGRESS_PREFIX = "COGWORK_PROGRESS "
