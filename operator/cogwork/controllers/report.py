"""HTTPS endpoint where training pods push progress; authenticated by TokenReview.

A pod presents its projected ServiceAccount token (audience `cogwork.dev/report`). The apiserver
tells us which pod the token was bound to; the report is accepted only for the TrainJob that pod
belongs to. Training pods therefore need no RBAC at all, and cannot write another job's status.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass

from aiohttp import web
from cogwork_sdk import contract as pod_contract
from pydantic import ValidationError

from cogwork import kube, metrics
from cogwork.api import contract
from cogwork.api.common import rfc3339
from cogwork.api.trainjob import TRAINJOB_RESOURCE
from cogwork.plan.progress import ProgressReport, status_patch

log = logging.getLogger(__name__)
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
MAX_BODY = 256 * 1024
_REVIEW_TTL = 60.0


@dataclass(frozen=True)
class Caller:
    namespace: str
    pod: str
    job: str


class Authenticator:
    """TokenReview with a short cache so a chatty trainer costs one review a minute."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    async def caller(self, token: str) -> Caller | None:
        hit = self._cache.get(token)
        if hit and time.monotonic() - hit[0] < _REVIEW_TTL:
            return hit[1]
        result = await self._review(token)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[token] = (time.monotonic(), result)
        return result

    @staticmethod
    async def _review(token: str) -> Caller | None:
        review = await kube.token_review(token, [contract.REPORT_AUDIENCE])
        if not review.get("authenticated"):
            return None
        user = review.get("user") or {}
        parts = str(user.get("username", "")).split(":")
        if len(parts) != 4 or parts[:2] != ["system", "serviceaccount"]:
            return None
        extra = user.get("extra") or {}
        pod_names, pod_uids = extra.get(POD_NAME_EXTRA) or [], extra.get(POD_UID_EXTRA) or []
        if not pod_names:
            return None  # not a pod-bound token
        namespace = parts[2]
        pod = await kube.get_pod(namespace, pod_names[0])
        if pod is None or (pod_uids and pod["metadata"]["uid"] != pod_uids[0]):
            return None
        job = (pod["metadata"].get("labels") or {}).get(contract.LABEL_JOB_NAME, "")
        return Caller(namespace=namespace, pod=pod_names[0], job=job)


def make_app(auth: Authenticator | None = None) -> web.Application:
    auth = auth or Authenticator()

    async def report(request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            metrics.REPORTS.labels(result="unauthenticated").inc()
            return web.json_response({"error": "missing bearer token"}, status=401)
        caller = await auth.caller(header.removeprefix("Bearer ").strip())
        if caller is None:
            metrics.REPORTS.labels(result="unauthenticated").inc()
            return web.json_response({"error": "token not accepted"}, status=401)
        if (caller.namespace, caller.job) != (namespace, name):
            metrics.REPORTS.labels(result="forbidden").inc()
            return web.json_response(
                {"error": f"pod {caller.namespace}/{caller.pod} may only report for its own "
                          f"TrainJob, not {namespace}/{name}"},
                status=403,
            )
        if (request.content_length or 0) > MAX_BODY:
            return web.json_response({"error": "report too large"}, status=413)
        try:
            parsed = ProgressReport.model_validate(json.loads(await request.read()))
        except (ValueError, ValidationError) as err:
            metrics.REPORTS.labels(result="invalid").inc()
            return web.json_response({"error": f"invalid report: {err}"}, status=400)
        job = await kube.get_custom(TRAINJOB_RESOURCE.plural, namespace, name)
        if job is None:
            return web.json_response({"error": "no such TrainJob"}, status=404)
        patch = status_patch(job.get("status") or {}, parsed, rfc3339())
        await kube.patch_custom_status(TRAINJOB_RESOURCE.plural, namespace, name, patch)
        metrics.REPORTS.labels(result="accepted").inc()
        return web.json_response({"accepted": True})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post(pod_contract.REPORT_PATH, report)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(host: str, port: int, cert_file: str, key_file: str) -> web.AppRunner:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    log.info("report endpoint listening on https://%s:%d", host, port)
    return runner
