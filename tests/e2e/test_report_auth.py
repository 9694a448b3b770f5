"""The report endpoint trusts only pod-bound tokens, and only for the pod's own TrainJob."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import pytest
from harness.jobs import Jobs, digits_job
from harness.operator import BRIDGE_IP, Operator

pytestmark = pytest.mark.cluster

POSTER = """
import json, ssl, sys, urllib.error, urllib.request
token = open("/var/run/report/token").read()
for job in sys.argv[1:]:
    url = f"https://{BRIDGE}:{PORT}/v1/namespaces/{NS}/trainjobs/{job}/report"
    req = urllib.request.Request(url, data=json.dumps({"event": "progress", "step": 7}).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10) as r:
            code = r.status
    except urllib.error.HTTPError as err:
        code = err.code
    print(f"REPORT {job} {code}", flush=True)
"""


def test_pod_may_report_only_for_its_own_job(jobs: Jobs, operator: Operator) -> None:
    for name in ("job-x", "job-y"):
        job = digits_job(name)
        job["spec"]["suspend"] = True  # the objects exist; no training needed
        jobs.apply(job)
    script = (POSTER.replace("{BRIDGE}", BRIDGE_IP).replace("{PORT}", str(operator.port))
              .replace("{NS}", jobs.namespace))
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "impostor", "labels": {"cogwork.dev/job-name": "job-x"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "poster", "image": "python", "command": ["python", "-c", script,
                                                                  "job-x", "job-y"],
                "volumeMounts": [{"name": "report", "mountPath": "/var/run/report"}],
            }],
            "volumes": [{"name": "report", "projected": {"sources": [{"serviceAccountToken": {
                "audience": "cogwork.dev/report", "expirationSeconds": 3600, "path": "token"}}]}}],
        },
    }
    jobs.apply(pod)
    jobs.wait_for("poster finished", lambda: jobs.get("impostor", "pod")["status"].get("phase")
                  in ("Succeeded", "Failed"), timeout=120)
    log = jobs.cluster.pod_log(jobs.namespace, "impostor")
    assert "REPORT job-x 200" in log, log
    assert "REPORT job-y 403" in log, log
    assert jobs.status("job-x")["progress"]["step"] == 7
    assert "progress" not in jobs.status("job-y")


def test_bad_token_is_rejected(jobs: Jobs, operator: Operator) -> None:
    url = (f"https://127.0.0.1:{operator.port}/v1/namespaces/{jobs.namespace}"
           "/trainjobs/any/report")
    for header in ({}, {"Authorization": "Bearer not-a-token"}):
        req = urllib.request.Request(url, data=json.dumps({"step": 1}).encode(), headers=header)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, context=ssl._create_unverified_context(), timeout=10)
        assert err.value.code == 401
