"""Managed Kafka and Redis (issue #15): every role and ``replay`` through TLS, mutual TLS, SASL PLAIN and
SCRAM-SHA-256/512 with Redis over TLS as an ACL user; a wrong password or an untrusted CA fails fast in one
line. How the broker side is built from real parts: tests/integration/secure_services.py."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from salespulse.embedded.broker import EmbeddedBroker
from salespulse.kafka_connection import KafkaConnection, KafkaUnavailable, wait_for_kafka
from tests.integration.secure_services import PASSWORD, USER, Pki, SecureKafka, TlsRedis, make_pki
from tests.integration.stack import SalespulseProcess, call, post_events, wait_for_hash

pytestmark = pytest.mark.integration
STARTUP_TIMEOUT_S = 20


@dataclass(frozen=True)
class Mode:
    """How a managed Kafka wants to be spoken to, and the settings salespulse is given for it."""

    name: str
    tls: bool
    sasl: bool
    mechanism: str = "PLAIN"
    client_cert: bool = False

    @property
    def protocol(self) -> str:
        return ("SASL_" if self.sasl else "") + ("SSL" if self.tls else "PLAINTEXT")

    def env(self, kafka: SecureKafka, pki: Pki, password: str = PASSWORD, ca: Path | None = None) -> dict[str, str]:
        env = {"SALESPULSE_KAFKA_URL": kafka.url, "SALESPULSE_KAFKA_SECURITY_PROTOCOL": self.protocol}
        if self.sasl:
            env |= {"SALESPULSE_KAFKA_SASL_MECHANISM": self.mechanism, "SALESPULSE_KAFKA_SASL_USERNAME": USER,
                    "SALESPULSE_KAFKA_SASL_PASSWORD": password}
        if self.tls:
            env["SALESPULSE_KAFKA_SSL_CAFILE"] = str(ca or pki.ca)
        if self.client_cert:
            env |= {"SALESPULSE_KAFKA_SSL_CERTFILE": str(pki.client_cert),
                    "SALESPULSE_KAFKA_SSL_KEYFILE": str(pki.client_key)}
        return env


MUTUAL_TLS = Mode("mutual-tls", tls=True, sasl=False, client_cert=True)
SCRAM_256 = Mode("scram-sha-256", tls=False, sasl=True, mechanism="SCRAM-SHA-256")
SCRAM_512_TLS = Mode("scram-sha-512-tls", tls=True, sasl=True, mechanism="SCRAM-SHA-512")  # Amazon MSK's
PLAIN_TLS = Mode("plain-tls", tls=True, sasl=True, mechanism="PLAIN")  # Confluent Cloud's


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_redis(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    with TlsRedis(pki, tmp_path_factory.mktemp("redis-tls")) as server:
        yield server


def redis_env(redis: TlsRedis, pki: Pki, password: str = PASSWORD, ca: Path | None = None) -> dict[str, str]:
    """rediss:// without secrets in the URL; user and password from their own variables."""
    return {
        "SALESPULSE_REDIS_URL": redis.url, "SALESPULSE_REDIS_USERNAME": USER, "SALESPULSE_REDIS_PASSWORD": password,
        "SALESPULSE_REDIS_SSL_CAFILE": str(ca or pki.ca), "SALESPULSE_REDIS_SSL_CERTFILE": str(pki.client_cert),
        "SALESPULSE_REDIS_SSL_KEYFILE": str(pki.client_key),
    }


@pytest_asyncio.fixture
async def tls_redis_client(tls_redis: TlsRedis, pki: Pki) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(tls_redis.url, username=USER, password=PASSWORD, ssl_ca_certs=str(pki.ca),
                                     ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.client_key))
    try:
        yield client
    finally:
        await client.aclose()


def common_env(app_id: str) -> dict[str, str]:
    return {"SALESPULSE_APP_ID": app_id, "SALESPULSE_TANSU_COMPAT": "true", "SALESPULSE_PARTITIONS": "4",
            "SALESPULSE_STARTUP_TIMEOUT_S": str(STARTUP_TIMEOUT_S)}


def cli(args: list[str], env: dict[str, str], timeout_s: float = 60) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``salespulse ARGS`` to its end; returns the result and how long it took."""
    import os

    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "salespulse", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout_s)
    return done, time.monotonic() - started


def output_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


@pytest.mark.parametrize("mode", [MUTUAL_TLS, SCRAM_256, SCRAM_512_TLS, PLAIN_TLS], ids=lambda m: m.name)
async def test_worker_ingest_replay_and_run_work_end_to_end_through_secured_kafka_and_redis(
    mode: Mode, pki: Pki, tls_redis: TlsRedis, tls_redis_client: aioredis.Redis, tmp_path: Path, unique_id: str
) -> None:
    rep = f"rep-{mode.name}-{unique_id}"
    with SecureKafka(tmp_path, pki, tls=mode.tls, sasl=mode.sasl, verify_clients=mode.client_cert) as kafka:
        env = common_env(f"managed-{unique_id}") | mode.env(kafka, pki) | redis_env(tls_redis, pki)
        key = f"salespulse:activity:rep:{rep}:all"
        async with SalespulseProcess("worker", tmp_path / "worker.log", env) as worker:
            async with SalespulseProcess("ingest", tmp_path / "ingest.log", env, ["--insecure"]) as ingest:
                events = [call(f"{unique_id}-{n}", rep, "team-managed") for n in range(2)]
                assert (await post_events(ingest.url, events))[0] == 202
                history = tmp_path / "history.jsonl"
                history.write_bytes(orjson.dumps(call(f"{unique_id}-replayed", rep, "team-managed")) + b"\n")
                replayed, _ = cli(["replay", str(history)], env)
                assert replayed.returncode == 0, replayed.stderr
                assert "replayed 1 events" in replayed.stderr
                await wait_for_hash(tls_redis_client, key, {"total": "3"})
            assert worker.stop() == 0, worker.log_tail()
        # `run` against the same external Kafka and Redis: the same group takes over from the changelog.
        async with SalespulseProcess("run", tmp_path / "run.log", env) as run:
            assert (await post_events(run.url, call(f"{unique_id}-run", rep, "team-managed")))[0] == 202
            await wait_for_hash(tls_redis_client, key, {"total": "4"})
        log = (tmp_path / "run.log").read_text()
        assert "embedded" not in log.lower(), log[-3000:]


@pytest.mark.parametrize(
    ("role", "mode", "wrong", "expected"),
    [
        ("worker", SCRAM_512_TLS, "password", "refused the SCRAM-SHA-512 login of user 'salespulse-app'"),
        ("ingest", SCRAM_256, "password", "refused the SCRAM-SHA-256 login of user 'salespulse-app'"),
        ("replay", PLAIN_TLS, "password", "refused the PLAIN login of user 'salespulse-app'"),
        ("worker", MUTUAL_TLS, "ca", "the broker's TLS certificate is not trusted"),
        ("ingest", PLAIN_TLS, "ca", "the broker's TLS certificate is not trusted"),
        ("replay", SCRAM_512_TLS, "ca", "the broker's TLS certificate is not trusted"),
        ("run", MUTUAL_TLS, "client-cert", "TLS failed (TLSV13_ALERT_CERTIFICATE_REQUIRED)"),
    ],
    ids=lambda v: v.name if isinstance(v, Mode) else v,
)
def test_a_wrong_kafka_password_or_certificate_ends_the_start_at_once_in_one_line(
    role: str, mode: Mode, wrong: str, expected: str, pki: Pki, tls_redis: TlsRedis, tmp_path: Path, unique_id: str
) -> None:
    with SecureKafka(tmp_path, pki, tls=mode.tls, sasl=mode.sasl, verify_clients=mode.client_cert) as kafka:
        env = common_env(f"wrong-{unique_id}") | redis_env(tls_redis, pki) | mode.env(
            kafka, pki, password="not-the-password" if wrong == "password" else PASSWORD,
            ca=pki.other_ca if wrong == "ca" else None,
        )
        if wrong == "client-cert":
            env = {k: v for k, v in env.items() if not k.startswith("SALESPULSE_KAFKA_SSL_") or k.endswith("CAFILE")}
        history = tmp_path / "history.jsonl"
        history.write_bytes(orjson.dumps(call(unique_id, "rep-x", "team-x")) + b"\n")
        args = {"worker": ["worker"], "ingest": ["ingest", "--insecure"], "run": ["run"],
                "replay": ["replay", str(history)]}[role]
        done, took = cli(args, env)
    assert done.returncode != 0
    errors = [line for line in output_lines(done) if "error" in line.lower()]
    assert len(errors) == 1 and expected in errors[0], output_lines(done)
    assert "Traceback" not in done.stdout + done.stderr
    # Besides the error: replay's progress bar, run's banner (a few lines); no log spew.
    assert len(output_lines(done)) <= {"worker": 1, "ingest": 1, "replay": 3, "run": 10}[role], output_lines(done)
    assert took < STARTUP_TIMEOUT_S, f"took {took:.1f} s: waited for the timeout instead of failing at once"
    assert PASSWORD not in done.stdout + done.stderr and "not-the-password" not in done.stdout + done.stderr


@pytest.mark.parametrize(("wrong", "expected"), [
    ("password", "refused the login (invalid username-password pair or user is disabled.)"),
    ("ca", "the server's TLS certificate is not trusted"),
])
def test_a_wrong_redis_password_or_ca_ends_the_start_at_once_in_one_line(
    wrong: str, expected: str, broker: EmbeddedBroker, pki: Pki, tls_redis: TlsRedis, unique_id: str
) -> None:
    env = common_env(f"redis-{unique_id}") | {"SALESPULSE_KAFKA_URL": broker.url} | redis_env(
        tls_redis, pki, password="not-the-password" if wrong == "password" else PASSWORD,
        ca=pki.other_ca if wrong == "ca" else None,
    )
    done, took = cli(["worker"], env)
    assert done.returncode != 0
    assert len(output_lines(done)) == 1 and expected in output_lines(done)[0], output_lines(done)
    assert f"Redis at {tls_redis.url}" in output_lines(done)[0]
    assert took < STARTUP_TIMEOUT_S


async def test_the_acl_login_may_also_be_in_the_rediss_url_and_never_shows_in_a_message(
    tls_redis: TlsRedis, pki: Pki
) -> None:
    from salespulse.redis_connection import RedisUnavailable, redis_client, wait_for_redis
    from salespulse.settings import Settings

    tls = {"redis_ssl_cafile": pki.ca, "redis_ssl_certfile": pki.client_cert, "redis_ssl_keyfile": pki.client_key}
    for password in (PASSWORD, "not-the-password"):
        url = f"rediss://{USER}:{password}@127.0.0.1:{tls_redis.port}/0"
        client = redis_client(Settings(redis_url=url, **tls))
        try:
            if password == PASSWORD:
                await wait_for_redis(client, url, 5)
                assert await client.set("salespulse:url-login", "1")
            else:
                with pytest.raises(RedisUnavailable) as refused:
                    await wait_for_redis(client, url, 5)
                assert f"rediss://{USER}:***@127.0.0.1:{tls_redis.port}/0 refused the login" in str(refused.value)
                assert password not in str(refused.value)
        finally:
            await client.aclose()


def test_the_sasl_stand_in_refuses_a_client_that_does_not_log_in(pki: Pki, tmp_path: Path) -> None:
    """The stand-in is a gate, not a pass-through: without SASL no request but ApiVersions gets an answer."""
    import asyncio

    with SecureKafka(tmp_path, pki, tls=False, sasl=True) as kafka:
        anonymous = KafkaConnection.plaintext(kafka.url)
        with pytest.raises(KafkaUnavailable, match="cannot reach Kafka .* within 3 s .*closed"):
            asyncio.run(wait_for_kafka(anonymous, 3))


def test_a_mechanism_the_cluster_does_not_offer_ends_the_start_at_once(pki: Pki, tmp_path: Path) -> None:
    import asyncio

    with SecureKafka(tmp_path, pki, tls=False, sasl=True, mechanisms="SCRAM-SHA-512") as kafka:
        connection = KafkaConnection(bootstrap=kafka.url.removeprefix("kafka://"), security_protocol="SASL_PLAINTEXT",
                                     sasl_mechanism="SCRAM-SHA-256", sasl_username=USER, sasl_password=PASSWORD)
        started = time.monotonic()
        with pytest.raises(KafkaUnavailable, match="does not offer the SASL mechanism SCRAM-SHA-256: set "
                                                   "SALESPULSE_KAFKA_SASL_MECHANISM"):
            asyncio.run(wait_for_kafka(connection, STARTUP_TIMEOUT_S))
        assert time.monotonic() - started < 5


def test_a_broker_that_does_not_know_the_scram_password_is_not_trusted(pki: Pki, tmp_path: Path, unique_id: str) -> None:
    """SCRAM authenticates the broker too: a stand-in that accepts any proof but cannot sign is refused."""
    with SecureKafka(tmp_path, pki, tls=False, sasl=True, impostor=True) as kafka:
        env = common_env(f"impostor-{unique_id}") | SCRAM_256.env(kafka, pki) | {"SALESPULSE_REDIS_URL": "redis://127.0.0.1:1/0"}
        done, took = cli(["worker"], env)
    assert done.returncode != 0
    assert output_lines(done) == [f"error: Kafka at 127.0.0.1:{kafka.front_port}: ValueError: Server sent wrong signature!"]
    assert took < STARTUP_TIMEOUT_S


async def test_redis_refuses_the_default_user_so_the_acl_user_is_what_gets_in(
    tls_redis: TlsRedis, pki: Pki, tls_redis_client: aioredis.Redis
) -> None:
    """The ACL user reaches its salespulse:* keys only; the default user is off (what the worker test relies on)."""
    import redis.exceptions

    anonymous = aioredis.Redis.from_url(tls_redis.url, ssl_ca_certs=str(pki.ca), ssl_certfile=str(pki.client_cert),
                                        ssl_keyfile=str(pki.client_key))
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await anonymous.ping()
    finally:
        await anonymous.aclose()
    with pytest.raises(redis.exceptions.NoPermissionError):
        await tls_redis_client.set("other:key", "1")
    assert await tls_redis_client.set("salespulse:probe", "1")
