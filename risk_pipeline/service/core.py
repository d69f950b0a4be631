"""The risk service's state: the warehouse connection, the pre-trade service, and the watcher thread.

``RiskService`` answers the API's requests (no FastAPI here). All requests share one warehouse
connection guarded by a lock; the watcher thread has its own connection. Every ``poll_seconds`` the
watcher

- follows ``published_valuations``: on a new pointer it loads every published book into a fresh
  ``PreTradeService`` off the request path, then swaps it in (requests never wait for a cold load
  and never see a half-loaded book), and publishes trading-state changes and new breaches;
- drops the cached books whose valuation has become too old, so the next order fails closed;
- publishes new rows of ``hedge_recommendations``, ``alerts`` and ``manual_controls`` on the stream;
- records each watched table's data age for ``/metrics``, and whether the warehouse answered.

Fails closed: a book that cannot be loaded (no published valuation, stale, no VaR/ES, no gap-risk
table, warehouse unreachable) gets ``reject`` with the reason; a failed load is remembered for one poll
so a burst of orders does not reload the book once each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from risk_pipeline import controls
from risk_pipeline.errors import RiskDataError
from risk_pipeline.paths import BOOKS_FILE, LIMITS_FILE
from risk_pipeline.pretrade_service import (
    NOT_POSSIBLE,
    BookHalted,
    BookSnapshot,
    PreTradeService,
    sessions_since,
    utc_now,
)
from risk_pipeline.quant.pretrade import PreTradeDecision
from risk_pipeline.queries import audit_id, book_capital, state_at
from risk_pipeline.service import documents
from risk_pipeline.service.auth import Principal
from risk_pipeline.service.metrics import Labels, ServiceMetrics
from risk_pipeline.service.schemas import ExecutionRequest, LimitView, OrderCheckRequest, OrderCheckResponse
from risk_pipeline.service.stream import Broker
from risk_pipeline.warehouse import Warehouse

log = logging.getLogger("risk_pipeline.service")

#: Tables whose data age /metrics reports.
WATCHED_TABLES: tuple[str, ...] = (
    "published_valuations",
    "position_greeks",
    "book_nav",
    "trading_state",
    "limit_status",
    "var_results",
    "gap_risk_actions",
    "position_sizing",
    "hedge_recommendations",
    "compliance_reports",
    "alerts",
    "manual_controls",
    "audit_trail",
    "executions",
)
#: Tables whose new rows are stream events (table -> event type).
STREAMED_TABLES: dict[str, str] = {
    "hedge_recommendations": "hedge_recommendation",
    "alerts": "alert",
    "manual_controls": "manual_control",
}
#: Rows written up to this long before the watermark are re-read (a slow transaction commits late).
OVERLAP = pd.Timedelta(seconds=120)


class UnknownSubject(LookupError):
    """An unknown book, symbol or order id (HTTP 404)."""


class Conflict(ValueError):
    """An id reused for a different request (HTTP 409)."""


class Unavailable(RuntimeError):
    """The warehouse could not take a write (HTTP 503): the client must retry."""


@dataclass(frozen=True)
class ServiceSettings:
    """Where the data is and how the service fails closed."""

    warehouse_url: str
    limits_file: Path = LIMITS_FILE
    books_file: Path = BOOKS_FILE
    max_valuation_age_sessions: int = 1
    poll_seconds: float = 1.0
    max_body_bytes: int = 16_384
    actor: str = "risk-service"
    #: PostgreSQL connections orders are answered on concurrently (DuckDB: one, orders in turn)
    db_connections: int = 4


def _utc(value: Any) -> pd.Timestamp:
    t = pd.Timestamp(value)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def limit_views(decision: PreTradeDecision) -> list[LimitView]:
    return [
        LimitView(
            limit_name=r.limit_name,
            value=_finite(r.value),
            threshold=_finite(r.threshold),
            warn_threshold=_finite(r.warn_threshold),
            utilization=_finite(r.utilization),
            status=r.status,
            scope=r.scope,
            unit=r.unit,
            drivers=list(r.drivers),
            note=r.note,
        )
        for r in decision.post_trade_limits
    ]


@contextlib.contextmanager
def read_snapshot(wh: Warehouse) -> Iterator[None]:
    """Every read on ``wh`` inside sees one snapshot: a REPEATABLE READ READ ONLY transaction on PostgreSQL
    (a run that rewrites tables meanwhile is seen wholly before or wholly after), a transaction on DuckDB."""
    begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY" if wh.engine == "postgres" else "BEGIN TRANSACTION"
    wh.execute(begin)
    try:
        yield
    finally:
        try:
            wh.execute("COMMIT")  # nothing was written: this only ends the snapshot
        except Exception:
            wh.close()


class HaltCache:
    """Manual halts in force, re-read only when ``manual_controls`` changes or a timed halt lapses.

    ``halt_for(book)`` costs one small query (the table's row count and newest write); the halts are
    replayed with ``controls.active_halts`` only when that changes, so a halt recorded by any process
    applies to the next order here.
    """

    def __init__(self, warehouse: Callable[[], Warehouse], clock: Callable[[], pd.Timestamp]) -> None:
        """``warehouse`` returns the connection of the calling thread's order."""
        self.warehouse, self.clock = warehouse, clock
        self.version: tuple[Any, ...] | None = None
        self.halts: dict[str, dict] = {}
        self.valid_until: pd.Timestamp | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        with self._lock:
            self.version = None

    def halt_for(self, book: str) -> dict | None:
        now = self.clock()
        wh = self.warehouse()
        got = wh.query(f"SELECT COUNT(*) AS n, MAX(materialized_at) AS t FROM risk.{controls.TABLE}")
        version = tuple(got.iloc[0])
        with self._lock:
            if version != self.version or (self.valid_until is not None and now >= self.valid_until):
                self.halts = controls.active_halts(wh, now.to_pydatetime())
                ends = [_utc(h["expires_at_utc"]) for h in self.halts.values() if h.get("expires_at_utc")]
                self.valid_until = min(ends) if ends else None
                self.version = version
            return controls.halt_for_book(self.halts, book)


class ServicePreTrade(PreTradeService):
    """``PreTradeService`` whose manual-halt check uses the service's ``HaltCache`` (one small query per order)."""

    halt_cache: HaltCache | None = None

    def _raise_if_halted(self, book: str) -> None:
        if self.halt_cache is None:
            super()._raise_if_halted(book)
            return
        event = self.halt_cache.halt_for(book)
        if event is not None:
            raise BookHalted(controls.describe(event))


class RiskService:
    """The API's operations over one warehouse (see the module docstring)."""

    def __init__(self, settings: ServiceSettings, clock: Callable[[], pd.Timestamp] | None = None) -> None:
        self.settings = settings
        self.clock = clock or utc_now
        self.lock = threading.RLock()  # guards self.wh (one connection) and the swap of self.pretrade
        self.wh = Warehouse(settings.warehouse_url, keep_open=True, create=False)
        self.watch_wh = Warehouse(settings.warehouse_url, keep_open=True, create=False)
        self.halt_cache = HaltCache(self._order_wh, self.clock)
        self._local = threading.local()
        self.load_lock = threading.Lock()  # one cold load of a book at a time
        # PostgreSQL: orders run concurrently, each on a pooled connection (psycopg connections are
        # thread-safe, the cached books are read-only); DuckDB: in turn on the one connection
        self.concurrent = self.wh.engine == "postgres"
        self.pool: queue.Queue[Warehouse] = queue.Queue()
        for _ in range(max(1, settings.db_connections) if self.concurrent else 0):
            self.pool.put(Warehouse(settings.warehouse_url, keep_open=True, create=False))
        self.pretrade = self._new_pretrade(self.wh)
        self.broker = Broker()
        self.metrics = ServiceMetrics(self._data_age_samples)
        self.configured_books = set(book_capital(settings.books_file)) if Path(settings.books_file).is_file() else set()
        self.published_books: set[str] = set()
        self.known_symbols: set[str] | None = None
        self.failures: dict[str, tuple[float, str]] = {}
        self.table_times: dict[str, pd.Timestamp | None] = {}
        self.reachable = False
        self.last_error = "not polled yet"
        self.pointer: tuple[Any, ...] | None = None
        self.latest_as_of: pd.Timestamp | None = None
        self.published_states: dict[str, str | None] = {}
        self.published_breaches: set[tuple[str, str]] = set()
        self.started = pd.Timestamp.now(tz="UTC")
        self.watermarks: dict[str, pd.Timestamp] = {}
        self.seen: dict[str, dict[str, pd.Timestamp]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tables_ready = False
        self._polls = 0

    def _new_pretrade(self, wh: Warehouse) -> ServicePreTrade:
        svc = ServicePreTrade(
            wh,
            self.settings.limits_file,
            actor=self.settings.actor,
            max_valuation_age_sessions=self.settings.max_valuation_age_sessions,
            clock=self.clock,
        )
        svc.halt_cache = self.halt_cache
        return svc

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """The service's own tables, one synchronous poll (warm books, baseline of the stream), then the watcher."""
        self._ensure_tables()
        self.poll(initial=True)
        self._thread = threading.Thread(target=self._run, name="risk-service-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self.lock:
            self.wh.close()
        self.watch_wh.close()
        while not self.pool.empty():
            self.pool.get_nowait().close()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            self.poll()

    def _ensure_tables(self) -> bool:
        """Create ``audit_trail``, ``executions`` and ``manual_controls`` if missing (False: not reachable)."""
        if self._tables_ready:
            return True
        try:
            with self.lock:
                self.wh.ensure_tables(["audit_trail", "executions", controls.TABLE])
            self._tables_ready = True
        except Exception as exc:
            log.warning("service tables not ensured: %s: %s", type(exc).__name__, exc)
            with self.lock:
                self.wh.close()
        return self._tables_ready

    # ------------------------------------------------------------------ watcher
    def poll(self, initial: bool = False) -> None:
        """One watcher cycle; never raises (an unreachable warehouse makes the service not ready)."""
        try:
            self._poll(initial)
            self.reachable, self.last_error = True, ""
        except Exception as exc:
            self.reachable, self.last_error = False, f"{type(exc).__name__}: {exc}"
            log.warning("watcher: warehouse not usable: %s", self.last_error)
            self.watch_wh.close()  # reconnect on the next cycle
        self._polls += 1

    def _poll(self, initial: bool) -> None:
        wh = self.watch_wh
        if not wh.table_exists("published_valuations"):
            raise RiskDataError(f"no table risk.published_valuations in {wh.describe()}")
        pointer = wh.query(
            "SELECT COUNT(*) AS n, MAX(as_of) AS as_of, MAX(published_at) AS published_at "
            "FROM risk.published_valuations"
        )
        key = tuple(pointer.iloc[0])
        if key != self.pointer:
            self._on_publication(initial=self.pointer is None)  # the first pointer seen is the baseline
            self.pointer = key
        self._expire_stale()
        self._stream_tables()
        if initial or self._polls % 10 == 0:
            self._data_ages()

    def _on_publication(self, initial: bool) -> None:
        """Load every published book from ONE read snapshot of the warehouse, then swap them in."""
        with read_snapshot(self.watch_wh):
            self._load_publication(initial)

    def _load_publication(self, initial: bool) -> None:
        wh = self.watch_wh
        got = wh.query("SELECT session, as_of, kind, books FROM risk.published_valuations ORDER BY as_of DESC LIMIT 50")
        books: set[str] = set()
        for r in got.itertuples(index=False):
            books |= set(json.loads(r.books))
        self.latest_as_of = _utc(got["as_of"].iloc[0]) if len(got) else None
        fresh = self._new_pretrade(wh)
        for book in sorted(books):  # warm every published book off the request path
            try:
                fresh.snapshot(book)
            except Exception as exc:  # it fails closed on its first order, with this reason
                log.info("book %s not checkable: %s", book, exc)
        symbols = (
            set(wh.query("SELECT DISTINCT symbol FROM risk.market_prices")["symbol"])
            if wh.table_exists("market_prices")
            else set()
        )
        fresh.warehouse = self.wh
        with self.lock:
            self.pretrade = fresh
            self.failures.clear()
            self.published_books = books
            self.known_symbols = symbols
        if len(got):
            newest = got.iloc[0]
            if not initial:
                self.emit(
                    "valuation_published",
                    {
                        "session": documents.plain(newest["session"]),
                        "as_of": documents.plain(newest["as_of"]),
                        "kind": newest["kind"],
                        "books": json.loads(newest["books"]),
                    },
                )
            self._state_changes(sorted(json.loads(newest["books"])), _utc(newest["as_of"]), initial)

    def _state_changes(self, books: list[str], as_of: pd.Timestamp, initial: bool) -> None:
        """Trading-state changes and new breaches of the newly published valuation."""
        wh = self.watch_wh
        for book in books:
            state = state_at(wh, book, as_of)
            now = state.state if state else None
            before = self.published_states.get(book)
            self.published_states[book] = now
            if not initial and now != before:
                self.emit(
                    "trading_state",
                    {
                        "book": book,
                        "state": now,
                        "previous_state": before,
                        "as_of": documents.plain(as_of),
                        "reason": state.reason if state else "no trading state stored",
                        "source": "trading_state",
                    },
                )
        breaches = wh.query(
            "SELECT book, limit_name, value, threshold, utilization FROM risk.limit_status "
            "WHERE as_of = ? AND status = 'BREACH'",
            [as_of],
        )
        current = set()
        for r in documents.records(breaches):
            key = (r["book"], r["limit_name"])
            current.add(key)
            if not initial and key not in self.published_breaches:
                self.emit("breach", {**r, "as_of": documents.plain(as_of)})
        self.published_breaches = current

    def _expire_stale(self) -> None:
        """Drop cached books whose valuation is now too old (their next order fails closed)."""
        now = self.clock()
        with self.lock:
            cached: dict[str, BookSnapshot] = self.pretrade._books
            stale = [
                b for b, s in cached.items() if sessions_since(s.as_of, now) > self.settings.max_valuation_age_sessions
            ]
            for book in stale:
                log.warning("book %s: valuation %s is too old; orders are rejected", book, cached[book].as_of)
                cached.pop(book, None)

    def _stream_tables(self) -> None:
        """New rows (written after the service started) of the streamed tables, each published once."""
        wh = self.watch_wh
        for name, event_type in STREAMED_TABLES.items():
            if not wh.table_exists(name):
                continue
            mark = self.watermarks.get(name, self.started)
            rows = wh.query(
                f"SELECT * FROM risk.{name} WHERE materialized_at > ? ORDER BY materialized_at LIMIT 1000",
                [(mark - OVERLAP).to_pydatetime()],
            )
            seen = self.seen.setdefault(name, {})
            for item in documents.records(rows, name):
                stamp = _utc(item["materialized_at"])
                ident = json.dumps(item, sort_keys=True, default=str)
                if stamp <= self.started or ident in seen:
                    continue
                seen[ident] = stamp
                self.emit(event_type, item)
                if name == "manual_controls":
                    self._control_event(item)
            if len(rows):
                mark = max(mark, _utc(rows["materialized_at"].max()))
            self.watermarks[name] = mark
            for ident in [i for i, t in seen.items() if t < mark - OVERLAP]:
                del seen[ident]

    def _control_event(self, item: dict[str, Any]) -> None:
        """A halt or resume changes the effective trading state at once."""
        books = sorted(self.published_states) if item["book"] == controls.ALL_BOOKS else [item["book"]]
        for book in books:
            halted = item["action"] in (controls.HALT, controls.EMERGENCY_STOP)
            self.emit(
                "trading_state",
                {
                    "book": book,
                    "state": "HALTED" if halted else self.published_states.get(book),
                    "previous_state": None,
                    "as_of": item["created_at_utc"],
                    "reason": item["reason"],
                    "source": f"manual_controls:{item['action']}",
                },
            )

    def _data_ages(self) -> None:
        wh = self.watch_wh
        for name in WATCHED_TABLES:
            if not wh.table_exists(name):
                self.table_times[name] = None
                continue
            value = wh.query(f"SELECT MAX(materialized_at) AS t FROM risk.{name}")["t"].iloc[0]
            self.table_times[name] = None if value is None or pd.isna(value) else _utc(value)

    def _data_age_samples(self) -> dict[Labels, float]:
        now = pd.Timestamp.now(tz="UTC")
        return {
            (("table", name),): ((now - t).total_seconds() if t is not None else math.nan)
            for name, t in self.table_times.items()
        }

    def emit(self, event_type: str, data: dict[str, Any]) -> None:
        self.metrics.stream_events.inc(type=event_type)
        self.broker.publish(event_type, data)

    # ------------------------------------------------------------------ readiness
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready when the warehouse answered the last poll and the latest published valuation is fresh."""
        if not self.reachable:
            return False, {"ready": False, "reason": f"warehouse not usable: {self.last_error}"}
        if self.latest_as_of is None:
            return False, {"ready": False, "reason": "no published valuation"}
        age = sessions_since(self.latest_as_of, self.clock())
        body = {
            "valuation_as_of": self.latest_as_of.isoformat(),
            "age_sessions": age,
            "max_age_sessions": self.settings.max_valuation_age_sessions,
        }
        if age > self.settings.max_valuation_age_sessions:
            return False, {"ready": False, "reason": "the latest published valuation is stale", **body}
        return True, {"ready": True, **body}

    # ------------------------------------------------------------------ lookups
    def require_book(self, book: str) -> None:
        if book not in self.configured_books and book not in self.published_books:
            raise UnknownSubject(f"unknown book {book!r}")

    def require_symbol(self, symbol: str) -> None:
        known = self.known_symbols
        if known is not None and symbol not in known:
            raise UnknownSubject(f"unknown symbol {symbol!r} (no price in risk.market_prices)")

    def published_as_of(self, book: str) -> pd.Timestamp | None:
        with self.lock:
            snap = self.pretrade._books.get(book)
        if snap is not None:
            return snap.as_of
        from risk_pipeline.queries import latest_published_as_of

        with self.lock:
            return latest_published_as_of(self.wh, book)

    # ------------------------------------------------------------------ pre-trade
    def _snapshot(self, book: str) -> tuple[PreTradeService, BookSnapshot | None, str | None]:
        """(service, the book's snapshot, None) or (service, None, why it cannot be checked)."""
        svc = self.pretrade
        failed = self.failures.get(book)
        if failed is not None and time.monotonic() - failed[0] < self.settings.poll_seconds:
            return svc, None, failed[1]
        try:
            cached = svc._books.get(book)
            if cached is not None:
                return svc, cached, None
            with self.load_lock:
                return svc, svc.snapshot(book), None
        except RiskDataError as exc:
            reason = f"fail closed: {exc}"
        except Exception as exc:  # the warehouse did not answer: reconnect next time
            reason = f"{NOT_POSSIBLE}: {type(exc).__name__}: {exc}"
            self._order_wh().close()
        self.failures[book] = (time.monotonic(), reason)
        return svc, None, reason

    def _order_wh(self) -> Warehouse:
        """The connection of the calling thread's order (the shared one outside an order)."""
        return getattr(self._local, "wh", None) or self.wh

    @contextlib.contextmanager
    def _order_slot(self, timing: dict[str, float] | None) -> Iterator[None]:
        """A pooled connection (PostgreSQL) or the lock (DuckDB) for one order; times the work in it."""
        if self.concurrent:
            wh = self.pool.get()
            release = lambda: self.pool.put(wh)  # noqa: E731
        else:
            self.lock.acquire()
            wh, release = self.wh, self.lock.release
        self._local.wh = wh
        began = time.perf_counter()
        try:
            yield
        finally:
            if timing is not None:
                timing["check_ms"] = (time.perf_counter() - began) * 1000.0
            self._local.wh = None
            release()

    def _stored_answer(self, key: str) -> dict[str, Any] | None:
        got = self._order_wh().query("SELECT inputs FROM risk.audit_trail WHERE audit_id = ?", [key])
        return json.loads(got["inputs"].iloc[0]) if len(got) else None

    def check(
        self, req: OrderCheckRequest, who: Principal, timing: dict[str, float] | None = None
    ) -> OrderCheckResponse:
        """The pre-trade decision for one order, recorded once in ``audit_trail`` (see the module docstring).

        ``timing["check_ms"]`` receives the time spent deciding and recording (waiting for a connection excluded).
        """
        self.require_book(req.book)
        if req.symbol is not None:
            self.require_symbol(req.symbol)
        order = {
            "book": req.book,
            "side": req.side,
            "quantity": req.quantity,
            "position_id": req.position_id,
            "symbol": req.symbol,
            "expiry": req.expiry.isoformat() if req.expiry else None,
            "strike": req.strike,
            "option_type": req.option_type,
            "strategy": req.strategy,
            "confidence": req.confidence,
        }
        client_key = audit_id("pre_trade_api", req.book, req.client_order_id) if req.client_order_id else None
        with self._order_slot(timing):
            if client_key is not None:
                replay = self._replay(client_key, req, order)
                if replay is not None:
                    return replay
            svc, snap, failure = self._snapshot(req.book)
            if failure is not None:
                decision = PreTradeDecision("reject", 0, float(req.quantity), (failure,), ())
            else:
                decision = svc.check(
                    req.book,
                    req.side,
                    req.quantity,
                    position_id=req.position_id,
                    symbol=req.symbol,
                    expiry=req.expiry,
                    strike=req.strike,
                    option_type=req.option_type,
                    record=False,
                )
            halted = any(r.startswith(("manual halt", "manual emergency stop")) for r in decision.reasons)
            state = "HALTED" if halted else (snap.state.state if snap is not None and snap.state else None)
            valuation = snap.as_of.isoformat() if snap is not None else None
            key = client_key or audit_id(
                "pre_trade",
                req.book,
                valuation,
                json.dumps(order, sort_keys=True),
                decision.decision,
                decision.approved_quantity,
            )
            response = OrderCheckResponse(
                decision=decision.decision,  # type: ignore[arg-type]
                approved_quantity=int(decision.approved_quantity),
                requested_quantity=float(decision.requested_quantity),
                reasons=list(decision.reasons),
                book=req.book,
                trading_state=state,
                valuation_as_of=valuation,
                limits_touched=[r.limit_name for r in decision.post_trade_limits if r.status != "OK"],
                post_trade_limits=limit_views(decision),
                client_order_id=req.client_order_id,
                strategy=req.strategy,
                confidence=req.confidence,
                audit_id=key,
                replayed=False,
            )
            try:
                inserted = self._audit(key, req, order, response, who, svc)
            except Exception as exc:  # not recorded: an approval that cannot be audited is not given
                self._order_wh().close()
                log.error("audit_trail not writable: %s: %s", type(exc).__name__, exc)
                if response.decision != "reject":
                    reason = f"{NOT_POSSIBLE}: the audit trail could not be written ({type(exc).__name__})"
                    response = response.model_copy(
                        update={"decision": "reject", "approved_quantity": 0, "reasons": [reason]}
                    )
                self.metrics.decisions.inc(outcome=response.decision)
                return response
            if not inserted and client_key is not None:  # another worker answered the same id first
                replay = self._replay(client_key, req, order)
                if replay is not None:
                    return replay
        self.metrics.decisions.inc(outcome=response.decision)
        return response

    def _replay(self, key: str, req: OrderCheckRequest, order: dict[str, Any]) -> OrderCheckResponse | None:
        stored = self._stored_answer(key)
        if stored is None:
            return None
        if stored.get("order") != json.loads(json.dumps(order)):
            raise Conflict(
                f"client_order_id {req.client_order_id!r} of book {req.book!r} was already used for a different order"
            )
        response = OrderCheckResponse(**{**stored["response"], "replayed": True})
        self.metrics.decisions.inc(outcome=f"{response.decision}_replayed")
        return response

    def _audit(
        self,
        key: str,
        req: OrderCheckRequest,
        order: dict[str, Any],
        response: OrderCheckResponse,
        who: Principal,
        svc: PreTradeService,
    ) -> bool:
        inputs = {
            "order": order,
            "client_order_id": req.client_order_id,
            "valuation_as_of": response.valuation_as_of,
            "state": response.trading_state,
            "limits_version": svc.limits.version,
            "caller": who.name,
            "response": response.model_dump(exclude={"replayed"}),
        }
        subject = req.position_id or " ".join(
            str(v) for v in (req.symbol, req.expiry, req.strike, req.option_type) if v is not None
        )
        row = {
            "audit_id": key,
            "at": self.clock(),
            "actor": f"{self.settings.actor}:{who.name}",
            "decision_type": "pre_trade",
            "book": req.book,
            "subject": f"{req.side} {req.quantity:g} {subject}",
            "decision": response.decision,
            "inputs": json.dumps(inputs, sort_keys=True, default=str),
        }
        return bool(self._order_wh().append_record("audit_trail", row, run_id=f"service:{self.settings.actor}"))

    # ------------------------------------------------------------------ executions
    def record_execution(self, req: ExecutionRequest, who: Principal) -> tuple[bool, dict[str, Any]]:
        """Append one fill to ``executions``; (newly recorded?, the stored row). A repeat adds nothing."""
        self.require_book(req.book)
        self.require_symbol(req.symbol)
        option = req.expiry is not None
        at = _utc(req.executed_at) if req.executed_at is not None else pd.Timestamp.now(tz="UTC")
        row: dict[str, Any] = {
            "client_order_id": req.client_order_id,
            "execution_id": req.execution_id or req.client_order_id,
            "at": at,
            "as_of_date": at.tz_convert("America/New_York").date(),
            "book": req.book,
            "symbol": req.symbol,
            "instrument_type": "option" if option else "stock",
            "expiry": req.expiry,
            "strike": req.strike,
            "option_type": req.option_type,
            "exercise_style": (req.exercise_style or "american") if option else None,
            "multiplier": req.multiplier or (100.0 if option else 1.0),
            "side": req.side,
            "quantity": float(req.quantity),
            "price": float(req.price),
            "strategy": req.strategy,
            "source": f"{self.settings.actor}:{who.name}",
            "pre_trade_decision": None,
        }
        if not self._ensure_tables():
            raise Unavailable("the warehouse is not reachable: the fill was not recorded; retry")
        with self.lock:
            try:
                stored = self._stored_answer(audit_id("pre_trade_api", req.book, req.client_order_id))
                if stored is not None:
                    row["pre_trade_decision"] = stored["response"]["decision"]
                inserted = self.wh.append_record("executions", row, run_id=f"service:{self.settings.actor}")
                existing = self.wh.read(
                    "executions", {"client_order_id": row["client_order_id"], "execution_id": row["execution_id"]}
                )
            except Exception as exc:
                self.wh.close()
                raise Unavailable(f"the fill was not recorded ({type(exc).__name__}); retry") from exc
        self.metrics.executions.inc(recorded=str(bool(inserted)).lower())
        stored_row = documents.records(existing, "executions")[0]
        if not inserted:
            compare = ("book", "symbol", "side", "quantity", "price", "instrument_type", "expiry", "strike")
            mine = documents.records(pd.DataFrame([row]))[0]
            if any(str(stored_row[c]) != str(mine[c]) for c in compare):
                raise Conflict(
                    f"fill {row['execution_id']!r} of order {row['client_order_id']!r} was already recorded "
                    "with different values"
                )
        return bool(inserted), stored_row

    # ------------------------------------------------------------------ controls
    def control(self, action: str, book: str, reason: str, who: Principal, hours: float | None) -> dict[str, Any]:
        """Halt or resume a book (``'*'``: every book) through ``risk_pipeline.controls``."""
        if book != controls.ALL_BOOKS:
            self.require_book(book)
        actor = f"{self.settings.actor}:{who.name}"
        with self.lock:
            try:
                at = self.clock().to_pydatetime()  # the service's clock, the one its checks use
                if action == controls.HALT:
                    event = controls.halt(self.wh, book, reason, actor, hours=hours, at=at)
                else:
                    event = controls.resume(self.wh, book, reason, actor, at=at)
            except controls.ControlError:
                raise
            except Exception as exc:
                self.wh.close()
                raise Unavailable(f"the {action} was not recorded ({type(exc).__name__}); retry") from exc
            finally:
                self.halt_cache.invalidate()
        return event

    def halt_for(self, book: str) -> dict | None:
        """The manual halt in force for the book (its own or of every book), None when it may trade."""
        with self.lock:
            return self.halt_cache.halt_for(book)
