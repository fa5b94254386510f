"""The PostgreSQL audit sink against a real server: one table for a fleet's chains.

Each test works in its own schema (`kt_test_<random>`, dropped at the end). An
unreachable PostgreSQL is a TCP proxy the test starts between the gateway and the
server, then stops (closing every connection through it) and starts again.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from ktproxy.audit.postgres_sink import (
    MIGRATIONS,
    PostgresSink,
    SchemaError,
    migrate,
    partition_name,
)
from ktproxy.audit.record import AuditRecord, ChainHead, ChainProblem, PolicyDecision, seal
from ktproxy.audit.sink import Query
from ktproxy.audit.writer import HeadUnknown
from tests.conftest import GatewayFactory
from tests.harness import free_port
from tests.test_cli import gateway_process, http, process_env
from tests.test_process import KT, ask, config_text, gateway_args, wait_until

DAY = 86400


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _sql(dsn: str, sql: str, *args: object) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def sql(dsn: str, text: str, *args: object) -> list[Any]:
    return list(run(_sql(dsn, text, *args)))


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema name, dropped (with everything in it) at the end."""
    name = f"kt_test_{secrets.token_hex(6)}"
    try:
        yield name
    finally:
        sql(postgres_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def migrated(postgres_dsn: str, schema: str) -> str:
    assert run(migrate(postgres_dsn, schema)) == (0, 2)
    return schema


def records(chain: str, n: int, head: ChainHead | None = None, ts: float | None = None,
            **fields: Any) -> list[tuple[AuditRecord, bytes]]:  # fmt: skip
    """`n` sealed records continuing `chain` from `head`."""
    head = head or ChainHead()
    out = []
    for i in range(n):
        record = AuditRecord(
            id=f"req-{chain}-{head.seq + 1}",
            ts=(time.time() if ts is None else ts) + i * 0.001,
            endpoint="/v1/chat/completions",
            model=fields.get("model", "gpt-4o"),
            streamed=fields.get("streamed", False),
            status=fields.get("status", 200),
            consumer=fields.get("consumer"),
            target="echo",
            decisions=fields.get("decisions", []),
        )
        sealed, data = seal(record, chain, head.seq + 1, head.hash)
        out.append((sealed, data))
        head = ChainHead(sealed.seq, sealed.hash)
    return out


def tip(rows: list[tuple[AuditRecord, bytes]]) -> ChainHead:
    return ChainHead(rows[-1][0].seq, rows[-1][0].hash)


@pytest.fixture
def sink(postgres_dsn: str, migrated: str) -> Iterator[PostgresSink]:
    s = PostgresSink(postgres_dsn, migrated)
    s.open()
    try:
        yield s
    finally:
        s.close()


# -- schema ---------------------------------------------------------------------------


def test_an_unmigrated_schema_is_refused_with_what_to_run(postgres_dsn: str, schema: str) -> None:
    s = PostgresSink(postgres_dsn, schema)
    with pytest.raises(SchemaError) as info:
        s.open()
    s.close()
    assert str(info.value) == (
        f"audit schema {schema} in PostgreSQL is at version 0, this ktproxy needs version 2: "
        "run `kt audit migrate --policy-config <your config>`"
    )


def test_migrate_is_idempotent(postgres_dsn: str, schema: str) -> None:
    assert run(migrate(postgres_dsn, schema)) == (0, 2)
    assert run(migrate(postgres_dsn, schema)) == (2, 2)
    versions = sql(postgres_dsn, f'SELECT version FROM "{schema}".schema_version')
    assert [r[0] for r in versions] == [1, 2]


# -- write, read, verify --------------------------------------------------------------


def test_two_chains_in_one_table_query_and_verify(sink: PostgresSink) -> None:
    block = [PolicyDecision("prompt-injection", "block", "prompt_injection.override")]
    a = records("gw-a", 5, consumer="team-a")
    b = records("gw-b", 3, model="gpt-4o-mini", streamed=True, status=422, decisions=block)
    sink.write(a)
    sink.write(b)
    a2 = records("gw-a", 2, tip(a), consumer="team-a")
    sink.write(a2)
    assert sink.head("gw-a") == tip(a2) and sink.head("gw-b") == tip(b)
    assert sink.head("gw-new") == ChainHead()
    assert sink.chains() == {"gw-a": tip(a2), "gw-b": tip(b)}
    assert list(sink.verify()) == []

    def ids(**q: Any) -> list[str]:
        return [r.id for r in sink.query(Query(**q)).records]

    assert len(ids()) == 10
    assert ids(consumer="team-a") == [r.id for r, _ in reversed(a + a2)]
    assert ids(model="gpt-4o-mini") == ids(streamed=True) == ids(status=422)
    assert ids(decision="blocked") == ids(decision="prompt_injection.override")
    assert ids(decision="prompt-injection") == [r.id for r, _ in reversed(b)]
    assert ids(request_id="req-gw-a-3") == ["req-gw-a-3"]
    # Keyset pages, newest first, cover everything once.
    seen: list[str] = []
    cursor = None
    while True:
        page = sink.query(Query(limit=3, cursor=cursor))
        seen += [r.id for r in page.records]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids()


def test_an_edited_row_fails_verify_naming_it(postgres_dsn: str, sink: PostgresSink) -> None:
    sink.write(records("gw-a", 5))
    sql(
        postgres_dsn,
        f'UPDATE "{sink.schema}".audit_events SET record = '
        "convert_to(replace(convert_from(record, 'UTF8'), 'gpt-4o', 'gpt-5'), 'UTF8') "
        "WHERE chain = 'gw-a' AND seq = 3",
    )
    problems = list(sink.verify())
    assert ChainProblem("gw-a", 3, "content does not match its hash (edited)") in problems
    sql(postgres_dsn, f'UPDATE "{sink.schema}".audit_events SET status = 500 WHERE seq = 4')
    assert ChainProblem("gw-a", 4, "indexed columns differ from the record") in list(sink.verify())


def test_a_deleted_row_fails_verify(postgres_dsn: str, sink: PostgresSink) -> None:
    sink.write(records("gw-a", 5))
    sql(postgres_dsn, f'DELETE FROM "{sink.schema}".audit_events WHERE seq = 2')
    assert list(sink.verify()) == [ChainProblem("gw-a", 3, "records 2..2 are missing")]


def test_retention_drops_old_partitions_and_what_stays_verifies(
    postgres_dsn: str, sink: PostgresSink
) -> None:
    now = time.time()
    today = int(now // DAY) * DAY
    old = records("gw-a", 4, ts=today - 3 * DAY + 60)
    older_b = records("gw-b", 2, ts=today - 2 * DAY + 60)
    mid = records("gw-a", 3, tip(old), ts=today - 2 * DAY + 120)
    new = records("gw-a", 2, tip(mid), ts=now)
    new_b = records("gw-b", 2, tip(older_b), ts=now)
    for batch in (old, older_b, mid, new, new_b):
        sink.write(batch)
    names = sink.partitions()
    assert partition_name(today - 3 * DAY) in names and partition_name(today) in names
    # Records before the start of the day two days ago: that day's partition goes whole.
    removed = sink.purge(today - 2 * DAY + 3600)
    assert removed == 4
    names = sink.partitions()
    assert partition_name(today - 3 * DAY) not in names
    assert partition_name(today - 2 * DAY) in names
    assert list(sink.verify()) == []
    anchors = sql(postgres_dsn, f'SELECT chain, seq FROM "{sink.schema}".audit_anchors')
    assert [tuple(r) for r in anchors] == [("gw-a", 4)]
    # Everything older than today goes; gw-b's chain keeps its anchor too.
    assert sink.purge(today) == 5
    assert list(sink.verify()) == []
    assert sink.head("gw-a") == tip(new)
    more = records("gw-a", 2, tip(new))
    sink.write(more)
    assert list(sink.verify()) == []
    assert len(sink.query(Query()).records) == 6


def test_a_late_record_follows_its_chain_into_the_newer_partition(sink: PostgresSink) -> None:
    """A record that started before midnight but was written after later ones lands in
    their partition, so retention never cuts a chain in the middle."""
    today = int(time.time() // DAY) * DAY
    first = records("gw-a", 1, ts=today + 10)
    late = records("gw-a", 1, tip(first), ts=today - 10)  # started yesterday, ended today
    sink.write(first + late)
    assert sink.purge(today) == 0  # yesterday's partition holds nothing of the chain
    assert list(sink.verify()) == []


# -- unreachable: spool and replay ----------------------------------------------------


class TcpProxy:
    """A TCP relay on `port` to PostgreSQL, in its own event loop; `stop` closes the
    listener and every connection through it, `start` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers -= {writer, up_writer}

    async def _start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def start(self) -> None:
        self._call(self._start())

    def stop(self) -> None:
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def through(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@pytest.fixture
def proxy(postgres_dsn: str) -> Iterator[TcpProxy]:
    parts = urlsplit(postgres_dsn)
    p = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    p.start()
    try:
        yield p
    finally:
        p.close()


def count(dsn: str, schema: str) -> int:
    return int(sql(dsn, f'SELECT count(*) FROM "{schema}".audit_events')[0][0])


def test_unreachable_spools_then_replays_in_order(
    postgres_dsn: str, migrated: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    s = PostgresSink(
        through(postgres_dsn, proxy.port), migrated, spool_path=tmp_path / "spool.jsonl",
        connect_timeout=2,
    )  # fmt: skip
    s.open()
    first = records("gw-a", 3)
    s.write(first)
    proxy.stop()
    away = records("gw-a", 4, tip(first))
    s.write(away[:2])
    s.write(away[2:])
    assert s.backlog() == 4 and s.spool is not None and s.spool.size > 0
    assert not s.replay()  # still away
    proxy.start()
    # The next write goes behind the spool: the spool is replayed first, in order.
    after = records("gw-a", 2, tip(away))
    deadline = time.monotonic() + 10
    while s.backlog() and time.monotonic() < deadline:
        s.replay()
        time.sleep(0.2)
    s.write(after)
    assert s.backlog() == 0 and s.spool.size == 0
    assert count(postgres_dsn, migrated) == 9
    assert list(s.verify()) == []
    # A replay repeated (a crash before the spool was cleared) duplicates nothing.
    s.spool.append([(r.ts, data) for r, data in away])
    assert s.replay() and count(postgres_dsn, migrated) == 9
    s.close()


def test_a_full_spool_drops_and_counts(
    postgres_dsn: str, migrated: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    s = PostgresSink(
        through(postgres_dsn, proxy.port), migrated, spool_path=tmp_path / "spool.jsonl",
        spool_max_bytes=4096,
    )  # fmt: skip
    s.open()
    proxy.stop()
    rows = records("gw-a", 40)
    for i in range(0, 40, 5):
        s.write(rows[i : i + 5])
    assert s.spool is not None and s.spool.size <= 4096
    assert s.spool.dropped > 0 and s.spool.records + s.spool.dropped == 40
    s.close()


# -- the gateway as processes ---------------------------------------------------------


def pg_config(schema: str, instance: str) -> str:
    return config_text(
        "[audit-logger]",
        f"""gateway:
  instance: {instance}
policy:
  audit-logger:
    sink: postgres
    flush_interval_ms: 20
    postgres: {{dsn_ref: {{env: KT_AUDIT_DSN}}, schema: {schema}, connect_timeout_s: 2}}
""",
    )


def kt(args: list[str], dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ktproxy", *args],
        env=process_env(KT_AUDIT_DSN=dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M)
    return float(match[1]) if match else -1.0


def test_two_gateways_one_table_verify_and_an_edit(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    config_a, port_a, args_a = gateway_args(tmp_path / "a", pg_config(schema, "gw-a"))
    config_b, port_b, args_b = gateway_args(tmp_path / "b", pg_config(schema, "gw-b"))
    unmigrated = kt(["audit", "verify", "-c", str(config_a)], postgres_dsn)
    assert unmigrated.returncode == 1 and "kt audit migrate" in unmigrated.stderr
    done = kt(["audit", "migrate", "-c", str(config_a)], postgres_dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"audit schema {schema}: migrated from version 0 to 2\n"
    again = kt(["audit", "migrate", "-c", str(config_b)], postgres_dsn)
    assert again.stdout == f"audit schema {schema}: already at version 2\n"
    env = process_env(KT_AUDIT_DSN=postgres_dsn)
    with gateway_process(KT, args_a, env) as a, gateway_process(KT, args_b, env) as b:
        a.wait_for_stdout("Gateway listening")
        b.wait_for_stdout("Gateway listening")
        for i in range(10):
            assert ask(port_a, f"a {i}") == f"a {i}"
            assert ask(port_b, f"b {i}") == f"b {i}"
        assert wait_until(lambda: count(postgres_dsn, schema) == 20), count(postgres_dsn, schema)
    chains = sql(postgres_dsn, f'SELECT chain, count(*) FROM "{schema}".audit_events GROUP BY 1')
    assert sorted(tuple(r) for r in chains) == [("gw-a", 10), ("gw-b", 10)]
    ok = kt(["audit", "verify", "-c", str(config_a)], postgres_dsn)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.endswith(f"{config_a}: OK (2 chain(s) verified)\n")
    listed = kt(["audit", "query", "-c", str(config_b), "--format", "jsonl"], postgres_dsn)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 20
    sql(
        postgres_dsn,
        f'UPDATE "{schema}".audit_events SET record = '
        "convert_to(replace(convert_from(record, 'UTF8'), '\"status\":200', '\"status\":201'), "
        "'UTF8') WHERE chain = 'gw-b' AND seq = 7",
    )
    bad = kt(["audit", "verify", "-c", str(config_a)], postgres_dsn)
    assert bad.returncode == 1
    assert "chain gw-b record 7: content does not match its hash (edited)" in bad.stdout


def test_postgres_away_spools_and_nothing_is_lost(
    postgres_dsn: str, migrated: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    admin = "admin: {key: {env: KT_TEST_ADMIN_KEY}}\n"
    _, port, args = gateway_args(tmp_path, pg_config(migrated, "gw-spool") + admin)
    env = process_env(
        KT_AUDIT_DSN=through(postgres_dsn, proxy.port), KT_TEST_ADMIN_KEY="kt-admin-0123456789"
    )

    def events() -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/kt/events?limit=100",
            headers={"x-kt-admin-key": "kt-admin-0123456789"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    sent = 0
    with gateway_process(KT, args, env) as gw:
        gw.wait_for_stdout("Gateway listening")
        for i in range(5):
            ask(port, f"before {i}")
            sent += 1
        assert wait_until(lambda: count(postgres_dsn, migrated) == 5)
        status, body = events()  # opens the reader the admin API keeps
        assert status == 200 and len(body["data"]) == 5, body
        proxy.stop()
        for i in range(20):
            assert ask(port, f"away {i}") == f"away {i}"  # requests still succeed
            sent += 1
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 20), gw.output()
        assert metric(port, "ktproxy_audit_spool_bytes") > 0
        assert count(postgres_dsn, migrated) == 5
        status, body = events()  # the events API says the store is away, clearly
        assert status == 503 and body["error"]["code"] == "audit_store_unavailable", body
        proxy.start()
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 0, 30)
        for i in range(5):
            ask(port, f"after {i}")
            sent += 1
        assert wait_until(lambda: count(postgres_dsn, migrated) == sent), gw.output()
        status, body = events()
        assert status == 200 and len(body["data"]) == sent, body
    assert count(postgres_dsn, migrated) == sent == 30
    ok = kt(["audit", "verify", "-c", str(tmp_path / "c.yaml")], postgres_dsn)
    assert ok.returncode == 0, ok.stdout + ok.stderr


# -- started while PostgreSQL is away -------------------------------------------------


def at_version_1(dsn: str, schema: str) -> None:
    """The audit schema as `kt audit migrate` of a ktproxy that knew only version 1 left it."""
    s = f'"{schema}"'
    sql(dsn, f"CREATE SCHEMA {s}")
    sql(
        dsn,
        f"CREATE TABLE {s}.schema_version "
        "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    run(_script(dsn, MIGRATIONS[0].format(s=s)))
    sql(dsn, f"INSERT INTO {s}.schema_version (version) VALUES (1)")


async def _script(dsn: str, text: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(text)
    finally:
        await conn.close()


def test_a_sink_with_a_spool_opens_while_unreachable_and_knows_no_head(
    postgres_dsn: str, migrated: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    proxy.stop()
    reader = PostgresSink(through(postgres_dsn, proxy.port), migrated, connect_timeout=2)
    with pytest.raises(OSError):
        reader.open()  # a reader (kt audit ..., the admin API) says so, as before
    reader.close()
    s = PostgresSink(
        through(postgres_dsn, proxy.port), migrated, spool_path=tmp_path / "spool.jsonl",
        connect_timeout=2,
    )  # fmt: skip
    s.open()
    with pytest.raises(HeadUnknown):
        s.head("gw-a")
    rows = records("gw-a", 2)
    s.write(rows)
    assert s.head("gw-a") == tip(rows)  # its own spool knows
    assert not s.replay()
    proxy.start()
    assert wait_until(s.replay, 10)
    assert count(postgres_dsn, migrated) == 2 and list(s.verify()) == []
    s.close()


def test_a_wrong_schema_on_a_reachable_server_still_refuses_start_up(
    postgres_dsn: str, schema: str, tmp_path: Path
) -> None:
    at_version_1(postgres_dsn, schema)
    s = PostgresSink(postgres_dsn, schema, spool_path=tmp_path / "spool.jsonl")
    with pytest.raises(SchemaError, match="at version 1, this ktproxy needs version 2"):
        s.open()
    s.close()
    _, _, args = gateway_args(tmp_path, pg_config(schema, "gw-old"))
    with gateway_process(KT, args, process_env(KT_AUDIT_DSN=postgres_dsn)) as gw:
        assert gw.wait() != 0
    assert "kt audit migrate" in gw.output()


def new_chain(gw: Any, instance: str) -> str:
    """The chain the gateway's warning names for this process."""
    pattern = rf"new chain ({re.escape(instance)}\+\d{{8}}T\d{{6}}Z)"
    assert wait_until(lambda: re.search(pattern, "\n".join(gw.stderr))), gw.output()
    match = re.search(pattern, "\n".join(gw.stderr))
    assert match is not None
    return match[1]


def test_a_gateway_starts_while_postgres_is_away_and_nothing_is_lost(
    postgres_dsn: str, migrated: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    from openai import OpenAI

    _, port, args = gateway_args(tmp_path, pg_config(migrated, "gw-cold"))
    env = process_env(KT_AUDIT_DSN=through(postgres_dsn, proxy.port))
    proxy.stop()
    with gateway_process(KT, args, env) as gw:
        gw.wait_for_stdout("Gateway listening")
        assert wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/readyz")[0] == 200)
        chain = new_chain(gw, "gw-cold")
        with OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any", max_retries=0) as client:
            for i in range(6):
                reply = client.chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": f"cold {i}"}]
                )
                assert reply.choices[0].message.content == f"cold {i}"
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 6), gw.output()
        proxy.start()
        assert wait_until(lambda: count(postgres_dsn, migrated) == 6), gw.output()
        # The rows are in before the spool is cleared: wait for both.
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 0)
        for i in range(2):
            ask(port, f"warm {i}")
        assert wait_until(lambda: count(postgres_dsn, migrated) == 8), gw.output()
    chains = sql(postgres_dsn, f'SELECT chain, max(seq) FROM "{migrated}".audit_events GROUP BY 1')
    assert [tuple(r) for r in chains] == [(chain, 8)]
    ok = kt(["audit", "verify", "-c", str(tmp_path / "c.yaml")], postgres_dsn)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.endswith("OK (1 chain(s) verified)\n")


def test_postgres_back_with_an_old_schema_keeps_the_spool_until_migrated(
    postgres_dsn: str, schema: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    at_version_1(postgres_dsn, schema)
    config, port, args = gateway_args(tmp_path, pg_config(schema, "gw-old"))
    env = process_env(KT_AUDIT_DSN=through(postgres_dsn, proxy.port))
    proxy.stop()
    with gateway_process(KT, args, env) as gw:
        gw.wait_for_stdout("Gateway listening")
        chain = new_chain(gw, "gw-old")
        for i in range(3):
            ask(port, f"old {i}")
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 3), gw.output()
        proxy.start()
        error = "in PostgreSQL is at version 1, this ktproxy needs version 2"
        assert wait_until(lambda: any(error in line for line in gw.stderr)), gw.output()
        ask(port, "old 3")  # written while the schema is wrong: spooled too
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 4), gw.output()
        assert count(postgres_dsn, schema) == 0
        done = kt(["audit", "migrate", "-c", str(config)], postgres_dsn)
        assert done.returncode == 0, done.stderr
        assert wait_until(lambda: count(postgres_dsn, schema) == 4), gw.output()
        # The rows are in before the spool is cleared: wait for both.
        assert wait_until(lambda: metric(port, "ktproxy_audit_spool_records") == 0)
    rows = sql(postgres_dsn, f'SELECT DISTINCT chain FROM "{schema}".audit_events')
    assert [r[0] for r in rows] == [chain]
    ok = kt(["audit", "verify", "-c", str(config)], postgres_dsn)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_the_admin_api_keeps_one_reader_connection(
    postgres_dsn: str,
    migrated: str,
    make_gateway: GatewayFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The console polls every 2 s: each poll used to open (and close) a connection and
    # a loop thread. The reader is opened once per worker and kept.
    text = pg_config(migrated, "gw-reader") + "admin: {key: {env: KT_TEST_ADMIN_KEY}}\n"
    spool = tmp_path / "spool-{instance}.jsonl"
    text = text.replace("connect_timeout_s: 2}", f'connect_timeout_s: 2, spool_path: "{spool}"}}')
    monkeypatch.setenv("KT_AUDIT_DSN", postgres_dsn)  # the sink reads the process's env
    gw = make_gateway(
        text, {"KT_AUDIT_DSN": postgres_dsn, "KT_TEST_ADMIN_KEY": "kt-admin-0123456789"}
    )
    headers = {"x-kt-admin-key": "kt-admin-0123456789"}
    for _ in range(5):
        assert httpx.get(f"{gw.base_url}/kt/events?limit=5", headers=headers).status_code == 200
        assert httpx.get(f"{gw.base_url}/kt/stats?since=1h", headers=headers).status_code == 200
    runtime = gw.state.runtime
    assert runtime is not None
    readers = list(runtime.resources._readers.values())
    assert len(readers) == 1 and isinstance(readers[0], PostgresSink)
    first = readers[0]._conn
    assert first is not None and not first.is_closed()
    httpx.get(f"{gw.base_url}/kt/events?limit=5", headers=headers)
    assert readers[0]._conn is first  # the same connection, not a new one per call
