"""Keep the metrics' job table current from the watch: one entry per job, aggregated at scrape.

Watch events (including the initial listing after a restart) carry each job's status, so the
table needs no API calls of its own; a deleted job leaves it.
"""

from __future__ import annotations

from typing import Any

import kopf

from cogwork import metrics
from cogwork.api.common import GROUP, VERSION


@kopf.on.event(GROUP, VERSION, "trainjobs", param="TrainJob")
@kopf.on.event(GROUP, VERSION, "tunejobs", param="TuneJob")
@kopf.on.event(GROUP, VERSION, "labeljobs", param="LabelJob")  # type: ignore[arg-type]
async def job_event(param: str, type: str | None, namespace: str, name: str,
                    body: kopf.Body, **_: Any) -> None:
    if type == "DELETED":
        metrics.JOB_TABLE.forget(param, namespace, name)
    else:
        metrics.JOB_TABLE.observe(param, namespace, name, body.get("status"))
