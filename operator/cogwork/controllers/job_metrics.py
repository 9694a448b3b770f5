"""Keep the metrics' job table current from the watch: one entry per job, aggregated at scrape.

Watch events (including the initial listing after a restart) carry each job's status, so the
table needs no API calls of its own; a deleted job leaves it.
"""

from __future__ import annotations

from typing import Any

import kopf

from cogwork import metrics
from cogwork.api.common import GROUP, VERSION
from cogwork.api.crdgen import RESOURCES


async def job_event(param: str, type: str | None, namespace: str, name: str,
                    body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        metrics.JOB_TABLE.forget(param, namespace, name)
    else:
        metrics.JOB_TABLE.observe(param, namespace, name, body.get("status"))


for _resource in RESOURCES:  # every kind, by the plural its resource declares
    kopf.on.event(GROUP, VERSION, _resource.plural,
                  param=_resource.kind)(job_event)  # type: ignore[arg-type]
