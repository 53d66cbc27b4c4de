"""``GET /metrics``: Prometheus text (docs/api.md, "Metrics").

Protected by a metrics token, not by an environment key (metrics span every environment):
``Authorization: Bearer $TRIGGER_METRICS_TOKEN``. Without ``TRIGGER_METRICS_TOKEN`` set the
endpoint answers 404, so nothing is exposed by default.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from worker.api.auth import AuthError
from worker.api.state import api_state, engine_of
from worker.engine import metrics
from worker.engine.errors import NotFound

router = APIRouter()


def _check(request: Request) -> None:
    token = api_state(request).settings.metrics_token
    if not token:
        raise NotFound("metrics are off: set TRIGGER_METRICS_TOKEN on the API to enable /metrics")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             token.encode()):
        raise AuthError("/metrics needs 'Authorization: Bearer <TRIGGER_METRICS_TOKEN>'")


@router.get("/metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    _check(request)
    families = await engine_of(request).gauges()
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(metrics.Families(families))
    body = generate_latest(metrics.REGISTRY) + generate_latest(snapshot)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
