"""`python -m harness.nodeagent`: a small fake kubelet for the local test cluster.

Registers the given Nodes and runs the pods bound to them as local processes, each pod in its
own network namespace. SIGTERM/SIGINT: kill every pod's processes, clean up, exit.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from .agent import Agent, ServingConfig
from .images import ImageMap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.nodeagent")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--nodes", default="node-0", help="comma-separated node names")
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity per node")
    parser.add_argument("--cpu", default="8")
    parser.add_argument("--memory", default="16Gi")
    parser.add_argument("--path-prefix", default=str(Path(sys.executable).parent),
                        help="bin dir of the default image's environment (prepended to PATH)")
    parser.add_argument("--image", action="append", default=[], metavar="IMAGE=DIR",
                        help="run containers of IMAGE in the environment DIR (bin/, workspace/)")
    serve = parser.add_argument_group(
        "kubelet endpoint", "HTTPS containerLogs for `kubectl logs` (all three files: served)")
    serve.add_argument("--tls-cert-file", type=Path, help="serving certificate")
    serve.add_argument("--tls-private-key-file", type=Path, help="its key")
    serve.add_argument("--client-ca-file", type=Path,
                       help="CA that client certificates must be signed by")
    serve.add_argument("--authorized-client", action="append", default=[], metavar="CN",
                       help="client certificate CN allowed in (repeatable; default: "
                            "kube-apiserver-kubelet-client)")
    serve.add_argument("--kubelet-port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    files = (args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
    if any(files) and not all(files):
        parser.error("--tls-cert-file, --tls-private-key-file and --client-ca-file go together")
    serving = None
    if all(files):
        serving = ServingConfig(
            cert=args.tls_cert_file, key=args.tls_private_key_file,
            client_ca=args.client_ca_file, port=args.kubelet_port,
            authorized=frozenset(args.authorized_client or ["kube-apiserver-kubelet-client"]))

    logging.basicConfig(
        stream=sys.stdout, level=logging.INFO,
        format="%(asctime)s.%(msecs)03d %(levelname).1s [%(threadName)s] %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    agent = Agent(
        kubeconfig=args.kubeconfig, workdir=args.workdir.resolve(),
        nodes=[n for n in args.nodes.split(",") if n], gpus=args.gpus, cpu=args.cpu,
        memory=args.memory, images=ImageMap.parse(args.image, args.path_prefix),
        serving=serving,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.request_stop())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
