"""The HTTP API of the risk service (FastAPI): pre-trade checks, fills, published documents, controls, stream.

``create_app`` builds the application over one warehouse; ``risk-pipeline serve`` runs it on uvicorn
(127.0.0.1 by default). The OpenAPI page is at ``/docs`` (schema at ``/openapi.json``). Every route
except ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <token>`` with a role the route
admits (``ROUTE_ROLES``): no or an unknown token gets 401, a known token of another role 403; both
are logged with the route and the token's name, never the token.
"""

import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pandas as pd
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from risk_pipeline import controls
from risk_pipeline.service import documents
from risk_pipeline.service.auth import OPERATOR, READER, TRADER, Principal, TokenStore, bearer_token, load_tokens
from risk_pipeline.service.core import Conflict, RiskService, ServiceSettings, Unavailable, UnknownSubject
from risk_pipeline.service.schemas import (
    ControlRequest,
    ExecutionRequest,
    ExecutionResponse,
    OrderCheckRequest,
    OrderCheckResponse,
)

log = logging.getLogger("risk_pipeline.service")

ALL_ROLES = (READER, TRADER, OPERATOR)
#: Roles each group of routes admits.
ROUTE_ROLES: dict[str, tuple[str, ...]] = {
    "read": ALL_ROLES,
    "trade": (TRADER,),
    "control": (OPERATOR,),
}
#: Event types of the stream (``/v1/stream?types=...`` selects some).
STREAM_TYPES = ("trading_state", "breach", "hedge_recommendation", "alert", "manual_control", "valuation_published")
BookPath = Annotated[str, Path(min_length=1, max_length=64)]
SymbolPath = Annotated[str, Path(min_length=1, max_length=64)]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _TooLarge(Exception):
    pass


class _Malformed(Exception):
    pass


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over ``max_body_bytes`` (413) and counts/times every request by route."""

    def __init__(self, app: ASGIApp, service: RiskService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        limit = self.service.settings.max_body_bytes
        status = {"code": 500, "started": False}

        async def send_counted(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"], status["started"] = message["status"], True
                took = (time.perf_counter() - began) * 1000.0  # handler time, as Server-Timing (ms)
                message["headers"] = [*message.get("headers", []), (b"server-timing", f"app;dur={took:.3f}".encode())]
            await send(message)

        header = dict(scope.get("headers") or []).get(b"content-length")
        try:
            length = int(header) if header is not None and header.isdigit() else None
            if header is not None and length is None:
                raise _Malformed
            if length is not None and length > limit:
                raise _TooLarge
            received = 0

            async def receive_limited() -> MutableMapping[str, Any]:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _TooLarge
                return message

            await self.app(scope, receive_limited, send_counted)
        except (_TooLarge, _Malformed) as exc:
            if status["started"]:
                raise
            code, detail = 413, f"request body larger than {limit} bytes"
            if isinstance(exc, _Malformed):
                code, detail = 400, "malformed Content-Length header"
            await JSONResponse({"detail": detail}, status_code=code)(scope, receive, send_counted)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.service.metrics.requests.inc(route=label, method=method, status=str(status["code"]))
            if label != "/v1/stream":
                self.service.metrics.latency.observe(time.perf_counter() - began, route=label, method=method)


def create_app(
    settings: ServiceSettings,
    tokens: TokenStore | None = None,
    clock: Callable[[], pd.Timestamp] | None = None,
) -> FastAPI:
    """The API over ``settings.warehouse_url``; tokens default to ``load_tokens()`` (environment or file)."""
    store = tokens if tokens is not None else load_tokens()
    if not len(store):
        log.warning("no tokens configured: every authenticated route answers 401")
    service = RiskService(settings, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        log.info("risk service over %s", service.wh.describe())
        yield
        service.stop()

    app = FastAPI(
        title="risk_pipeline risk service",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(LimitsAndMetrics, service=service)  # type: ignore[arg-type]

    def require(group: str) -> Callable[..., Principal]:
        roles = ROUTE_ROLES[group]

        def dependency(request: Request, authorization: Annotated[str | None, Header()] = None) -> Principal:
            where = f"{request.method} {request.url.path} from {request.client.host if request.client else '?'}"
            token = bearer_token(authorization)
            if token is None:
                service.metrics.auth_failures.inc(reason="missing")
                log.warning("401 no bearer token: %s", where)
                raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
            who = store.authenticate(token)
            if who is None:
                service.metrics.auth_failures.inc(reason="unknown")
                log.warning("401 unknown token: %s", where)
                raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
            if who.role not in roles:
                service.metrics.auth_failures.inc(reason="role")
                log.warning("403 token %s (role %s) not allowed: %s", who.name, who.role, where)
                raise HTTPException(403, f"role {who.role!r} may not call this route (needs one of {list(roles)})")
            return who

        return dependency

    reader = Annotated[Principal, Depends(require("read"))]
    trader = Annotated[Principal, Depends(require("trade"))]
    operator = Annotated[Principal, Depends(require("control"))]

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each field and rule; the input is not echoed (it may be huge or not JSON-safe, e.g. NaN)."""
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(UnknownSubject)
    async def _unknown(request: Request, exc: UnknownSubject) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(documents.NotPublished)
    async def _not_published(request: Request, exc: documents.NotPublished) -> JSONResponse:
        return JSONResponse({"detail": str(exc.args[0])}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(controls.ControlError)
    async def _control(request: Request, exc: controls.ControlError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    # ---------------------------------------------------------------- health
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process answers (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Ready (200) only when the warehouse answers and the latest published valuation is fresh, else 503."""
        ready, body = service.readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics(who: reader) -> PlainTextResponse:
        """Prometheus text format: requests and latency per route, decisions by outcome, data age per table."""
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    # ---------------------------------------------------------------- orders
    @app.post("/v1/orders/check", tags=["orders"], response_model=OrderCheckResponse)
    def check_order(body: OrderCheckRequest, who: trader) -> JSONResponse:
        """Approve, resize (with the size) or reject an order, with every reason; recorded in audit_trail.

        The same ``client_order_id`` (per book) returns the stored answer and records nothing more; the
        same id with a different order is 409. Stale or missing data, an unreachable warehouse or a
        HALTED book give ``reject`` with the reason, never ``approve``.
        """
        timing: dict[str, float] = {}
        answer = service.check(body, who, timing)
        # Server-Timing "check": deciding and recording, without the wait for the book's lock
        headers = {"server-timing": f"check;dur={timing.get('check_ms', float('nan')):.3f}"}
        return JSONResponse(answer.model_dump(mode="json"), headers=headers)

    @app.post("/v1/orders/executions", tags=["orders"], status_code=201)
    def record_execution(body: ExecutionRequest, who: trader) -> ExecutionResponse:
        """Record a fill in risk.executions (append-only); the next valuation applies it to the book.

        A repeat of the same (client_order_id, execution_id) records nothing (``recorded: false``); the
        same ids with different values are 409.
        """
        recorded, row = service.record_execution(body, who)
        return ExecutionResponse(
            client_order_id=row["client_order_id"], execution_id=row["execution_id"], recorded=recorded, execution=row
        )

    # ---------------------------------------------------------------- documents
    @app.get("/v1/books/{book}/risk", tags=["documents"])
    def book_risk(book: BookPath, who: reader) -> dict[str, Any]:
        """State, NAV, drawdown, Greeks, VaR/ES, worst stress, open breaches and compliance of the book,
        at its latest published valuation."""
        service.require_book(book)
        as_of = service.published_as_of(book)
        if as_of is None:
            raise documents.NotPublished(f"no published valuation of book {book!r}")
        halt = service.halt_for(book)
        with service.lock:
            return documents.book_risk(service.wh, book, as_of, halt)

    @app.get("/v1/books/{book}/gap-risk", tags=["documents"])
    def gap_risk(book: BookPath, who: reader) -> dict[str, Any]:
        """Upcoming events, risk level, recommended action and the actions in force (gap_risk_actions)."""
        service.require_book(book)
        as_of = service.published_as_of(book)
        with service.lock:
            return documents.gap_risk(service.wh, book, as_of)

    @app.get("/v1/books/{book}/hedges", tags=["documents"])
    def hedges(book: BookPath, who: reader) -> dict[str, Any]:
        """The latest hedge recommendations of the book (hedge_recommendations), 404 when not published."""
        service.require_book(book)
        as_of = service.published_as_of(book)
        with service.lock:
            return documents.table_document(service.wh, "hedge_recommendations", "hedge recommendations", book, as_of)

    @app.get("/v1/sizing/{book}/{symbol}", tags=["documents"])
    def sizing(book: BookPath, symbol: SymbolPath, who: reader) -> dict[str, Any]:
        """The latest position sizes of a symbol in a book, per method (position_sizing), 404 when not published."""
        service.require_book(book)
        service.require_symbol(symbol)
        as_of = service.published_as_of(book)
        with service.lock:
            return documents.table_document(
                service.wh, "position_sizing", "position sizing", book, as_of, {"symbol": symbol}
            )

    @app.get("/v1/alerts", tags=["documents"])
    def alerts(
        who: reader,
        book: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
        since: dt.datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """The newest alerts (optionally of one book, after ``since``), newest first."""
        if since is not None and since.tzinfo is None:
            raise HTTPException(422, "since needs a time zone (e.g. 2026-11-20T15:30:00Z)")
        with service.lock:
            return documents.alerts(service.wh, book, since, limit)

    # ---------------------------------------------------------------- controls
    @app.post("/v1/books/{book}/halt", tags=["controls"], status_code=201)
    def halt(book: BookPath, body: ControlRequest, who: operator) -> dict[str, Any]:
        """Halt a book (``*``: every book) until resumed or for ``hours``: every order is rejected at once."""
        return service.control(controls.HALT, book, body.reason, who, body.hours)

    @app.post("/v1/books/{book}/resume", tags=["controls"], status_code=201)
    def resume(book: BookPath, body: ControlRequest, who: operator) -> dict[str, Any]:
        """Lift a manual halt (``*``: every halt, the emergency stop included)."""
        if body.hours is not None:
            raise HTTPException(422, "hours applies to a halt only")
        return service.control(controls.RESUME, book, body.reason, who, None)

    # ---------------------------------------------------------------- stream
    @app.get("/v1/stream", tags=["stream"])
    async def stream(who: reader, types: Annotated[str | None, Query(max_length=200)] = None) -> StreamingResponse:
        """Server-sent events: trading_state, breach, hedge_recommendation, alert, manual_control,
        valuation_published (``types`` is a comma-separated subset)."""
        wanted = None
        if types:
            wanted = frozenset(t.strip() for t in types.split(",") if t.strip())
            unknown = sorted(wanted - set(STREAM_TYPES))
            if unknown:
                raise HTTPException(422, f"unknown event types {unknown}; known: {list(STREAM_TYPES)}")
        return StreamingResponse(
            service.broker.events(wanted),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


def settings_from_env() -> ServiceSettings:
    """``ServiceSettings`` from ``RISK_PIPELINE_WAREHOUSE_URL`` and the ``RISK_SERVICE_*`` variables
    (``MAX_AGE_SESSIONS``, ``POLL_SECONDS``, ``MAX_BODY_BYTES``, ``LIMITS_FILE``, ``BOOKS_FILE``,
    ``DB_CONNECTIONS``)."""
    import os
    from pathlib import Path as FilePath

    from risk_pipeline.paths import BOOKS_FILE, LIMITS_FILE, warehouse_url

    env = os.environ
    return ServiceSettings(
        warehouse_url=warehouse_url(),
        limits_file=FilePath(env.get("RISK_SERVICE_LIMITS_FILE") or LIMITS_FILE),
        books_file=FilePath(env.get("RISK_SERVICE_BOOKS_FILE") or BOOKS_FILE),
        max_valuation_age_sessions=int(env.get("RISK_SERVICE_MAX_AGE_SESSIONS", "1")),
        poll_seconds=float(env.get("RISK_SERVICE_POLL_SECONDS", "1.0")),
        max_body_bytes=int(env.get("RISK_SERVICE_MAX_BODY_BYTES", "16384")),
        db_connections=int(env.get("RISK_SERVICE_DB_CONNECTIONS", "4")),
    )


def app_from_env() -> FastAPI:
    """The application configured from the environment (the uvicorn factory ``risk-pipeline serve`` runs)."""
    return create_app(settings_from_env())
