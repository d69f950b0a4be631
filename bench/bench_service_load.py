"""Load test of the risk service: concurrent clients calling POST /v1/orders/check over loopback.

Builds the 5,000-position book of ``bench_pretrade.py`` (400 underlyings, 250 sessions of prices) in a
fresh warehouse (a new PostgreSQL database, dropped afterwards, or a temporary DuckDB file), starts
``risk-pipeline serve`` as a subprocess on 127.0.0.1 with ``--workers`` processes, and runs
``--clients`` concurrent keep-alive clients (split over ``--load-processes`` processes) for
``--duration`` seconds: closed loop (each client sends its next order when the answer arrives) or, with
``--rate-per-client R``, an open loop of Poisson arrivals at R orders/s per client with latency counted
from each order's scheduled send time. Every request carries a unique client order id, except that every tenth
request repeats the previous one (a replay). Afterwards it counts the ``audit_trail`` rows: there must
be exactly one per distinct client order id answered (none lost, none duplicated).

``--rewrite`` (PostgreSQL only) runs an end-of-day-like writer during the load: every
``--rewrite-every`` seconds it replaces the book's ``position_greeks``, ``book_nav``, ``var_results``
and ``trading_state`` partitions in ONE transaction (``Warehouse.write_many``) and then moves the
published-valuation pointer, so the service reloads the book while answering.

Targets for /v1/orders/check: p50 <= 5 ms, p99 <= 50 ms, no errors. Latency is measured by the
clients (request sent to response read, including queueing) and by the server (``Server-Timing``).
The book is valued at 2026-11-20, so the service runs with ``--max-age-sessions 100000``.

    python bench/bench_service_load.py --engine postgres --workers 2 --duration 60 --clients 100 --rewrite
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pretrade import N_POSITIONS, build

from risk_pipeline.warehouse import Warehouse

TOKEN = "bench-trader-token-" + uuid.uuid4().hex
PG_ADMIN_URL = os.environ.get("RISK_PIPELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
#: Hard bounds whatever the arguments say (the bench must stay bounded in count and time).
MAX_DURATION_SECONDS, MAX_CLIENTS = 600, 1000


class BenchWarehouse(Warehouse):
    """Writes the bench rows, leaving NULL the nullable contract columns ``bench_pretrade.build`` does not set."""

    def prepare(self, name: str, frame: pd.DataFrame) -> pd.DataFrame:
        from risk_pipeline.contracts import table

        missing = [c.name for c in table(name).columns if c.nullable and c.name not in frame.columns]
        return super().prepare(name, frame.assign(**dict.fromkeys(missing)))


def _pg_reachable() -> bool:
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, body: dict
) -> tuple[int, dict[str, str], bytes]:
    """One keep-alive HTTP/1.1 POST with a hand-written request (a light client leaves the CPU to the server)."""
    payload = json.dumps(body).encode()
    writer.write(head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def _client(
    base: str,
    token: str,
    index: int,
    proc: int,
    stop_at: float,
    rng: np.random.Generator,
    out: list[tuple[Any, ...]],
    rate: float = 0.0,
) -> None:
    """One keep-alive client. ``rate`` 0: closed loop (the next order as soon as the answer is read); else an
    open loop of Poisson arrivals at ``rate`` orders/s, latency counted from each order's scheduled time (so a
    slow answer that delays the next order counts against the service: no coordinated omission)."""
    host, port = base.removeprefix("http://").split(":")
    head = (
        f"POST /v1/orders/check HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    n, previous = 0, None
    scheduled = time.perf_counter() + (rng.exponential(1.0 / rate) if rate > 0 else 0.0)
    while time.monotonic() < stop_at:
        if rate > 0:
            wait = scheduled - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.monotonic() >= stop_at:
                break
        if previous is not None and n % 10 == 9:
            body = previous  # a replay of the previous order: same id, same answer, no new audit row
        else:
            body = {
                "book": "bench",
                "side": "buy" if rng.random() < 0.5 else "sell",
                "quantity": int(rng.integers(1, 50)),
                "position_id": f"p{int(rng.integers(0, N_POSITIONS))}",
                "client_order_id": f"load-{proc}-{index}-{n}",
            }
        began = scheduled if rate > 0 else time.perf_counter()
        scheduled += rng.exponential(1.0 / rate) if rate > 0 else 0.0
        try:
            if reader.at_eof():  # the server closed the idle keep-alive connection (uvicorn: after 5 s)
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
            try:
                status, headers, content = await asyncio.wait_for(_post(reader, writer, head, body), 60)
            except (IndexError, ConnectionError, asyncio.IncompleteReadError):
                # closed while idle before the request reached it (no status line came back): as an HTTP client
                # with a connection pool does, reconnect and send again (the client order id makes it idempotent)
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
                status, headers, content = await asyncio.wait_for(_post(reader, writer, head, body), 60)
            took = (time.perf_counter() - began) * 1000.0
            timings = dict(
                part.strip().split(";dur=") for part in headers.get("server-timing", "").split(",") if "dur=" in part
            )
            decision = json.loads(content).get("decision") if status == 200 else None
            out.append(
                (
                    took,
                    float(timings.get("app", "nan")),
                    status,
                    decision,
                    body["client_order_id"],
                    float(timings.get("check", "nan")),
                )
            )
        except Exception as exc:  # counted as an error; reconnect
            out.append(((time.perf_counter() - began) * 1000.0, float("nan"), 0, type(exc).__name__, "", float("nan")))
            writer.close()
            reader, writer = await asyncio.open_connection(host, int(port))
        previous = body
        n += 1
    writer.close()


def _load_process(
    base: str, token: str, clients: int, proc: int, start_at: float, duration: float, queue: Any, rate: float = 0.0
) -> None:
    """One load process: ``clients`` concurrent clients on one event loop (``rate``: see ``_client``)."""

    async def main() -> list[tuple[Any, ...]]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        stop_at = time.monotonic() + duration
        out: list[tuple[Any, ...]] = []
        rngs = [np.random.default_rng(1000 * proc + i) for i in range(clients)]
        await asyncio.gather(*(_client(base, token, i, proc, stop_at, rngs[i], out, rate) for i in range(clients)))
        return out

    queue.put(asyncio.run(main()))


def rewriter(url: str, every: float, stop: threading.Event, log: list[str]) -> None:
    """Re-publish the book like an end-of-day re-run: one transaction, then the pointer moves."""
    wh = Warehouse(url)
    names = ("position_greeks", "book_nav", "var_results", "trading_state")
    as_of = wh.read("published_valuations")["as_of"].max()
    frames = {n: wh.read(n, {"as_of": as_of}).drop(columns=["run_id", "materialized_at"]) for n in names}
    pointer = wh.read("published_valuations", {"as_of": as_of}).drop(columns=["run_id", "materialized_at"])
    k = 0
    while not stop.wait(every):
        k += 1
        began = time.perf_counter()
        wh.write_many([(n, f, [{"as_of": as_of}]) for n, f in frames.items()], run_id=f"rewrite-{k}")
        wh.write(
            "published_valuations",
            pointer.assign(published_at=pd.Timestamp.now(tz="UTC"), published_run_id=f"rewrite-{k}"),
            run_id=f"rewrite-{k}",
        )
        log.append(f"rewrite {k}: {time.perf_counter() - began:.2f} s")


def summarize(label: str, rows: list[tuple[Any, ...]], duration: float) -> dict[str, float]:
    ok = [r for r in rows if r[2] == 200]
    errors = len(rows) - len(ok)
    client = np.array([r[0] for r in ok])
    server = np.array([r[1] for r in ok])
    check = np.array([r[5] for r in ok])
    out = {
        "requests": len(rows),
        "errors": errors,
        "throughput_per_s": len(ok) / duration,
        "client_p50_ms": float(np.percentile(client, 50)) if len(ok) else float("nan"),
        "client_p99_ms": float(np.percentile(client, 99)) if len(ok) else float("nan"),
        "server_p50_ms": float(np.nanpercentile(server, 50)) if len(ok) else float("nan"),
        "server_p99_ms": float(np.nanpercentile(server, 99)) if len(ok) else float("nan"),
        "check_p50_ms": float(np.nanpercentile(check, 50)) if len(ok) else float("nan"),
        "check_p99_ms": float(np.nanpercentile(check, 99)) if len(ok) else float("nan"),
    }
    decisions = pd.Series([r[3] for r in ok]).value_counts().to_dict()
    print(f"\n{label}")
    print(
        f"  requests {out['requests']}, errors {errors}, throughput {out['throughput_per_s']:.0f}/s, "
        f"decisions {decisions}"
    )
    print(f"  client-observed latency: p50 {out['client_p50_ms']:.2f} ms, p99 {out['client_p99_ms']:.2f} ms")
    print(
        f"  server, request in the app (queueing for the book included): p50 {out['server_p50_ms']:.2f} ms, "
        f"p99 {out['server_p99_ms']:.2f} ms"
    )
    print(
        f"  server, deciding and recording one order (on its connection): p50 {out['check_p50_ms']:.2f} ms, "
        f"p99 {out['check_p99_ms']:.2f} ms"
    )
    if errors:
        print(
            "  error kinds:", pd.Series([r[2] if r[2] else r[3] for r in rows if r[2] != 200]).value_counts().to_dict()
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--engine",
        choices=["auto", "postgres", "duckdb"],
        default="auto",
        help="auto: PostgreSQL when RISK_PIPELINE_TEST_PG_URL (default 127.0.0.1:5432/test) answers, else DuckDB",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (PostgreSQL for > 1)")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (at most 600)")
    parser.add_argument("--load-processes", type=int, default=2, help="processes the clients are split over")
    parser.add_argument(
        "--rate-per-client",
        type=float,
        default=0.0,
        help="orders/s each client sends (Poisson arrivals, latency from the scheduled time); 0: closed loop",
    )
    parser.add_argument("--rewrite", action="store_true", help="rewrite the book's tables during the load")
    parser.add_argument("--rewrite-every", type=float, default=10.0)
    args = parser.parse_args()
    duration = min(args.duration, MAX_DURATION_SECONDS)
    if args.engine == "auto":
        args.engine = "postgres" if _pg_reachable() else "duckdb"
        if args.engine == "duckdb" and (args.workers > 1 or args.rewrite):
            print("PostgreSQL not reachable: running on DuckDB with one worker and no rewrite")
            args.workers, args.rewrite = 1, False
    clients = min(args.clients, MAX_CLIENTS)
    if args.engine == "duckdb" and (args.workers > 1 or args.rewrite):
        parser.error("DuckDB takes one process: --workers 1 and no --rewrite (use --engine postgres)")

    import psycopg

    tmp = tempfile.TemporaryDirectory()
    db = None
    if args.engine == "postgres":
        db = f"risk_service_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{db}"')
        url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{db}"
    else:
        url = os.path.join(tmp.name, "bench_warehouse.duckdb")
    server = None
    try:
        began = time.perf_counter()
        wh = BenchWarehouse(url, keep_open=True)
        wh.ensure_tables()
        limits = Path(tmp.name) / "limits.yaml"
        build(wh, limits)
        wh.close()
        print(f"built the {N_POSITIONS}-position book on {args.engine} in {time.perf_counter() - began:.1f} s")
        port = free_port()
        env = {**os.environ, "RISK_PIPELINE_WAREHOUSE_URL": url, "RISK_SERVICE_TOKEN_TRADER": TOKEN}
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "risk_pipeline.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--no-access-log",
                "--log-level",
                "warning",
                "--limits-file",
                str(limits),
                "--max-age-sessions",
                "100000",
            ],
            env=env,
        )
        import httpx

        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit("the service did not become ready in 120 s")
        warm = httpx.post(
            f"{base}/v1/orders/check",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"book": "bench", "side": "buy", "quantity": 1, "position_id": "p0"},
            timeout=60,
        )
        assert warm.json()["decision"] != "reject", warm.text
        stop = threading.Event()
        rewrites: list[str] = []
        thread = None
        if args.rewrite:
            thread = threading.Thread(target=rewriter, args=(url, args.rewrite_every, stop, rewrites), daemon=True)
            thread.start()
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        n_proc = max(1, min(args.load_processes, clients))
        per = [clients // n_proc + (1 if i < clients % n_proc else 0) for i in range(n_proc)]
        start_at = time.time() + 3.0
        procs = [
            ctx.Process(
                target=_load_process, args=(base, TOKEN, per[i], i, start_at, duration, queue, args.rate_per_client)
            )
            for i in range(n_proc)
        ]
        for p in procs:
            p.start()
        rows: list[tuple[Any, ...]] = []
        for _ in procs:
            rows += queue.get(timeout=duration + 120)
        for p in procs:
            p.join()
        stop.set()
        if thread is not None:
            thread.join()
        pacing = (
            f"open loop, {args.rate_per_client:g} orders/s per client" if args.rate_per_client > 0 else "closed loop"
        )
        label = f"{args.engine}, {args.workers} worker(s), {clients} clients ({pacing}), {duration:.0f} s" + (
            f", tables rewritten every {args.rewrite_every:g} s ({len(rewrites)} rewrites)" if args.rewrite else ""
        )
        summary = summarize(label, rows, duration)
        answered = {r[4] for r in rows if r[2] == 200}
        server.terminate()  # DuckDB: the service's lock on the file goes with it
        server.wait(timeout=60)
        audit = Warehouse(url)
        stored = int(
            audit.query("SELECT COUNT(*) AS n FROM risk.audit_trail WHERE decision_type = 'pre_trade'")["n"].iloc[0]
        )
        # the warm-up order has no client id: one row of its own
        print(f"  audit rows: {stored} stored for {len(answered)} distinct client order ids answered (+1 warm-up)")
        lost_or_dup = stored - (len(answered) + 1)
        print(f"  lost or duplicated audit rows: {lost_or_dup}")
        print(
            f"  targets: p50 <= 5 ms, p99 <= 50 ms; clients measured: p50 {summary['client_p50_ms']:.2f} ms, "
            f"p99 {summary['client_p99_ms']:.2f} ms"
        )
        if rewrites:
            print("  " + "; ".join(rewrites))
        return 0 if summary["errors"] == 0 and lost_or_dup == 0 else 1
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if db is not None:
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as con:
                con.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        tmp.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
