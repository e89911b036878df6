"""How every Kafka client of salespulse connects: bootstrap servers, TLS and SASL, built in this one place.

``KafkaConnection.client_options()`` goes into every aiokafka producer, consumer and admin client;
``KafkaConnection.faust_credentials()`` into the Faust app (``broker_credentials``), which hands the same
settings to its own aiokafka clients. ``wait_for_kafka`` is the start-up check of every role and of
``replay``: a refused login or an untrusted certificate is reported at once, in one line, instead of
being retried until a timeout (or forever).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from salespulse.settings import Settings, kafka_bootstrap


class KafkaUnavailable(Exception):
    """Kafka cannot be used as configured; the message is one line that says what to change."""


@dataclass(frozen=True)
class KafkaConnection:
    """Bootstrap servers and security settings, with the meaning of librdkafka's options of the same name."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_key_password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection of ``SALESPULSE_KAFKA_URL`` and the ``SALESPULSE_KAFKA_*`` security settings."""
        return cls(
            bootstrap=settings.kafka_bootstrap,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=_secret(settings.kafka_sasl_password),
            ssl_cafile=settings.kafka_ssl_cafile,
            ssl_certfile=settings.kafka_ssl_certfile,
            ssl_keyfile=settings.kafka_ssl_keyfile,
            ssl_key_password=_secret(settings.kafka_ssl_key_password),
        )

    @classmethod
    def plaintext(cls, url_or_bootstrap: str) -> KafkaConnection:
        """An unauthenticated connection (the embedded broker, tests), from ``kafka://`` or ``host:port``."""
        return cls(bootstrap=kafka_bootstrap(url_or_bootstrap))

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying client context (the CA file, else the system's CAs; the client certificate if given)."""
        if not self.uses_tls:
            return None
        context: ssl.SSLContext = create_ssl_context(  # aiokafka is untyped
            cafile=_str(self.ssl_cafile),
            certfile=_str(self.ssl_certfile),
            keyfile=_str(self.ssl_keyfile),
            password=self.ssl_key_password,
        )
        return context

    def security_options(self) -> dict[str, Any]:
        """aiokafka's keyword arguments for TLS and SASL (no bootstrap servers)."""
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            options.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        return options

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for any ``AIOKafkaProducer``, ``AIOKafkaConsumer`` or ``AIOKafkaAdminClient``."""
        return {"bootstrap_servers": self.bootstrap, **self.security_options()}

    def faust_credentials(self) -> faust.SASLCredentials | faust.SSLCredentials | None:
        """Faust's ``broker_credentials``; Faust passes them to every aiokafka client it creates."""
        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),  # None for SASL_PLAINTEXT, which Faust maps to that protocol
            )
        if self.uses_tls:
            return faust.SSLCredentials(self.ssl_context())
        return None

    def describe(self) -> str:
        """Where and how, for messages: ``host:port (SASL_SSL, SCRAM-SHA-512 as user 'x')``."""
        how = self.security_protocol
        if self.uses_sasl:
            how += f", {self.sasl_mechanism} as user {self.sasl_username!r}"
        return f"{self.bootstrap} ({how})"


async def wait_for_kafka(kafka: KafkaConnection, timeout_s: float) -> None:
    """Return once a bootstrap server answers a metadata request over this connection.

    A broker that is not up yet is retried until ``timeout_s``; a refused login, a mechanism the broker
    does not offer or a TLS failure cannot heal by waiting and raise ``KafkaUnavailable`` at once.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            await asyncio.wait_for(_probe_any(kafka, max(remaining, 0.5)), max(remaining, 0.5))
            return
        except KafkaUnavailable:
            raise
        except (OSError, KafkaError, asyncio.TimeoutError, EOFError) as exc:
            if time.monotonic() + 1.0 >= deadline:
                detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
                raise KafkaUnavailable(
                    f"cannot reach Kafka at {kafka.describe()} within {timeout_s:g} s ({detail}); "
                    "check SALESPULSE_KAFKA_URL and SALESPULSE_KAFKA_SECURITY_PROTOCOL"
                ) from None
            await asyncio.sleep(1.0)


async def _probe_any(kafka: KafkaConnection, timeout_s: float) -> None:
    last: Exception | None = None
    for host, port, _ in collect_hosts(kafka.bootstrap):
        try:
            await _probe(kafka, host, port, timeout_s)
            return
        except KafkaUnavailable:
            raise
        except (OSError, KafkaError, asyncio.TimeoutError, EOFError) as exc:
            last = exc
    assert last is not None
    raise last


async def _probe(kafka: KafkaConnection, host: str, port: int, timeout_s: float) -> None:
    """Connect (TLS handshake, SASL login) and ask for metadata, the first things any client does."""
    where = f"Kafka at {host}:{port}"
    try:
        conn = await create_conn(
            host, port, client_id="salespulse-check", request_timeout_ms=int(timeout_s * 1000),
            **kafka.security_options(),
        )
        try:
            await conn.send(MetadataRequest([]))
        finally:
            conn.close()
    except SaslAuthenticationFailed as exc:
        raise KafkaUnavailable(
            f"{where} refused the {kafka.sasl_mechanism} login of user {kafka.sasl_username!r} ({exc}); "
            "check SALESPULSE_KAFKA_SASL_USERNAME, SALESPULSE_KAFKA_SASL_PASSWORD and SALESPULSE_KAFKA_SASL_MECHANISM"
        ) from None
    except UnsupportedSaslMechanismError:
        raise KafkaUnavailable(
            f"{where} does not offer the SASL mechanism {kafka.sasl_mechanism}: set SALESPULSE_KAFKA_SASL_MECHANISM "
            "to one it does (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        ) from None
    except (OSError, KafkaError, asyncio.TimeoutError) as exc:
        tls_error = _ssl_error(exc)
        if isinstance(tls_error, ssl.SSLCertVerificationError):
            raise KafkaUnavailable(
                f"{where}: the broker's TLS certificate is not trusted ({tls_error.verify_message}); "
                "set SALESPULSE_KAFKA_SSL_CAFILE to the CA that signed it"
            ) from None
        if tls_error is not None:  # e.g. the broker wants a client certificate (TLS 1.3 says so after the handshake)
            raise KafkaUnavailable(
                f"{where}: TLS failed ({tls_error.reason or tls_error}); check SALESPULSE_KAFKA_SECURITY_PROTOCOL "
                "and, if the broker wants a client certificate, SALESPULSE_KAFKA_SSL_CERTFILE and _KEYFILE"
            ) from None
        raise
    except Exception as exc:  # e.g. a SCRAM server signature that does not verify: waiting will not help
        raise KafkaUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind ``exc`` (aiokafka wraps a failed read in KafkaConnectionError)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
