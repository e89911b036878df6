"""Configuration from the environment (``SALESPULSE_*``), the single place every setting is read."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from salespulse.families.registry import NAMES

#: The metric families a worker can run, in the order it renders them (``families/registry.py``).
METRIC_FAMILIES = NAMES

#: Contract limits of the generic webhook endpoint.
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS_PER_REQUEST = 500
SIGNATURE_TOLERANCE_SECONDS = 300

#: URL schemes redis-py connects with: plain TCP, TLS, a Unix socket.
REDIS_SCHEMES = ("redis", "rediss", "unix")


class Settings(BaseSettings):
    """Every knob of salespulse; see the configuration table in the README."""

    # An empty variable (``KEY=`` in an env file) is unset, never an empty secret or URL.
    model_config = SettingsConfigDict(env_prefix="SALESPULSE_", extra="ignore", env_ignore_empty=True)

    kafka_url: str | None = Field(None, description="kafka://host:port[;host:port]; unset = embedded broker")
    redis_url: str | None = Field(
        None, description="redis://host:port/db, rediss:// (TLS) or unix:///path; unset = embedded server"
    )
    # Managed Kafka (docs/operations.md, "Managed Kafka and Redis"): the same names and meanings as librdkafka's.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = Field(None, description="PEM CA bundle; unset = the system's trusted CAs")
    kafka_ssl_certfile: FilePath | None = Field(None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_keyfile: FilePath | None = Field(None, description="PEM key of the client certificate")
    kafka_ssl_key_password: SecretStr | None = None
    # Redis TLS (rediss://) and ACL user: kept out of the URL so no secret shows in a process list.
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_ssl_cafile: FilePath | None = Field(None, description="PEM CA bundle for rediss://")
    redis_ssl_certfile: FilePath | None = Field(None, description="PEM client certificate for rediss://")
    redis_ssl_keyfile: FilePath | None = Field(None, description="PEM key of the Redis client certificate")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    # Slow and excess clients (docs/operations.md): every role's HTTP server.
    http_header_timeout_s: float = Field(
        10.0, gt=0, description="a connection's request headers must be in within this of opening or of its last answer"
    )
    http_body_timeout_s: float = Field(30.0, gt=0, description="a request body must arrive within this (else 408)")
    http_max_connections: int = Field(512, ge=1, description="open HTTP connections at most (more get 503)")
    webhook_secret: SecretStr | None = None
    # CRM endpoints: each is served only when its secret or setting is present (docs/crm.md).
    hubspot_client_secret: SecretStr | None = Field(None, description="enables /webhooks/hubspot (signature v3/v2/v1)")
    pipedrive_basic_auth: SecretStr | None = Field(None, description="user:password; enables /webhooks/pipedrive")
    close_signature_key: SecretStr | None = Field(None, description="hex key; enables /webhooks/close")
    salesforce_org_id: str | None = Field(None, description="enables /webhooks/salesforce/outbound and /cdc")
    hubspot_access_token: SecretStr | None = Field(
        None, description="HubSpot private-app token: HubSpot webhooks are enriched through the CRM API (docs/crm.md)"
    )
    hubspot_api_url: str = Field("https://api.hubapi.com", description="HubSpot's API (a stand-in server in tests)")
    hubspot_requests_per_10s: int = Field(
        90, ge=1, le=1000, description="HubSpot API calls per 10 s (the portal's burst limit is 100 or 190)"
    )
    # Read only by `salespulse crm check` (lists pipelines, stages and owners).
    pipedrive_api_token: SecretStr | None = Field(None, description="crm check: a Pipedrive API token")
    pipedrive_api_url: str = Field("https://api.pipedrive.com", description="crm check: Pipedrive's API")
    salesforce_instance_url: str | None = Field(None, description="crm check: https://<domain>.my.salesforce.com")
    salesforce_access_token: SecretStr | None = Field(None, description="crm check: a Salesforce OAuth access token")
    close_api_key: SecretStr | None = Field(None, description="crm check: a Close API key")
    close_api_url: str = Field("https://api.close.com", description="crm check: Close's API")
    enrich_http_timeout_s: float = Field(10.0, gt=0, le=120, description="HubSpot API: one request's timeout")
    public_url: str | None = Field(
        None, description="the https://host[:port] the CRMs call; HubSpot signs the full URL (default: from the request)"
    )
    lead_response_sla_seconds: int = Field(300, gt=0)
    alertmanager_url: str | None = Field(
        None, description="comma-separated Alertmanager base URLs; workers post per-lead alerts to /api/v2/alerts"
    )
    timezone: str = "UTC"
    config: Path | None = None

    app_id: str = Field("salespulse", description="Kafka consumer group and table-topic prefix")
    partitions: int = Field(4, ge=1, le=1024, description="partitions of salespulse.events and changelogs")
    kafka_replication_factor: int = Field(
        1, ge=1, le=32, description="replicas of the topics salespulse creates (3 on Confluent Cloud and most clusters)"
    )
    retention_days: int = Field(35, ge=1, description="calendar windows kept for late events")
    dedup_horizon_hours: float = Field(72.0, gt=0, description="how long an event_id is remembered")
    flush_interval_ms: int = Field(250, ge=10, description="publisher flush period")
    flush_max_updates: int = Field(5000, ge=1, description="flush early once this many updates are pending")
    flush_slow_budget: int = Field(
        250, ge=1, description="per flush, at most this many week/month/rolling aggregates (all-time and today: all)"
    )
    families: str = Field(
        ",".join(METRIC_FAMILIES),
        description="comma-separated metric families this worker runs (docs/operations.md: split them across "
        "consumer groups to scale out)",
    )
    batch_max_events: int = Field(2000, ge=1, description="events per worker batch")
    batch_within_ms: int = Field(100, ge=1, description="longest wait to fill a worker batch")
    commit_interval_s: float = Field(2.8, gt=0, description="worker: how often consumed offsets are committed")
    startup_timeout_s: float = Field(30.0, gt=0, description="how long a role waits for Kafka and Redis at start")
    publish_timeout_seconds: float = Field(5.0, gt=0, description="ingest: give up writing to Kafka (503) after this")
    tansu_compat: bool | None = Field(
        None,
        description="apply the Tansu workarounds (one record per producer batch, short group timeouts); "
        "default: on for the embedded broker, off for an external one",
    )
    data_dir: Path = Field(
        Path(".salespulse"), description="salespulse run: where the event journal, Redis and the logs live"
    )
    journal_days: int = Field(
        400,
        ge=0,
        description="salespulse run: at start, delete journal days older than this (0: keep all); at least "
        "SALESPULSE_RETENTION_DAYS. What a restart then forgets: docs/operations.md",
    )
    state_store: Literal["memory", "rocksdb"] = Field(
        "memory",
        description="worker state store: 'rocksdb' keeps it on local disk under data_dir (a restart reads it "
        "instead of replaying the changelog; one data_dir per worker process), 'memory' replays the changelog",
    )

    @field_validator("kafka_url")
    @classmethod
    def _kafka_url(cls, value: str | None) -> str | None:
        return None if value is None else check_kafka_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in REDIS_SCHEMES:
            # The value is not echoed: a Redis URL may carry a password.
            raise ValueError(f"expected a URL starting with {', '.join(s + '://' for s in REDIS_SCHEMES)}")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper_case(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security_consistent(self) -> Self:
        protocol = self.kafka_security_protocol
        given = f"with SALESPULSE_KAFKA_SECURITY_PROTOCOL={protocol}"
        if protocol != "PLAINTEXT" and self.kafka_url is None:
            raise ValueError(
                f"SALESPULSE_KAFKA_URL is required {given} (the embedded broker speaks PLAINTEXT only)"
            )
        sasl = protocol.startswith("SASL_")
        if sasl and not self.kafka_sasl_username:
            raise ValueError(f"SALESPULSE_KAFKA_SASL_USERNAME is required {given}")
        if sasl and self.kafka_sasl_password is None:
            raise ValueError(f"SALESPULSE_KAFKA_SASL_PASSWORD is required {given}")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password is not None):
            raise ValueError(
                f"SALESPULSE_KAFKA_SASL_USERNAME/PASSWORD are set but {protocol} does not log in: "
                "set SALESPULSE_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
            )
        files = {"CAFILE": self.kafka_ssl_cafile, "CERTFILE": self.kafka_ssl_certfile,
                 "KEYFILE": self.kafka_ssl_keyfile}
        tls = protocol in ("SSL", "SASL_SSL")
        for name, path in files.items():
            if path is not None and not tls:
                raise ValueError(
                    f"SALESPULSE_KAFKA_SSL_{name} is set but {protocol} does not use TLS: "
                    "set SALESPULSE_KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL"
                )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("SALESPULSE_KAFKA_SSL_KEYFILE needs SALESPULSE_KAFKA_SSL_CERTFILE (the client certificate)")
        if self.kafka_ssl_key_password is not None and self.kafka_ssl_certfile is None:
            raise ValueError("SALESPULSE_KAFKA_SSL_KEY_PASSWORD needs SALESPULSE_KAFKA_SSL_CERTFILE (and _KEYFILE)")
        return self

    @model_validator(mode="after")
    def _redis_security_consistent(self) -> Self:
        tls_files = {"CAFILE": self.redis_ssl_cafile, "CERTFILE": self.redis_ssl_certfile,
                     "KEYFILE": self.redis_ssl_keyfile}
        login = {"USERNAME": self.redis_username, "PASSWORD": self.redis_password}
        for name, value in {**{f"SSL_{k}": v for k, v in tls_files.items()}, **login}.items():
            if value is not None and self.redis_url is None:
                raise ValueError(f"SALESPULSE_REDIS_{name} needs SALESPULSE_REDIS_URL (the embedded Redis has no TLS or users)")
        if self.redis_url is None:
            return self
        url = urlsplit(self.redis_url)
        for name, value in tls_files.items():
            if value is not None and url.scheme != "rediss":
                raise ValueError(f"SALESPULSE_REDIS_SSL_{name} needs a rediss:// SALESPULSE_REDIS_URL")
        if self.redis_ssl_keyfile is not None and self.redis_ssl_certfile is None:
            raise ValueError("SALESPULSE_REDIS_SSL_KEYFILE needs SALESPULSE_REDIS_SSL_CERTFILE")
        if url.password and self.redis_password is not None:
            raise ValueError("the Redis password is both in SALESPULSE_REDIS_URL and SALESPULSE_REDIS_PASSWORD: keep one")
        if url.username and self.redis_username is not None:
            raise ValueError("the Redis user is both in SALESPULSE_REDIS_URL and SALESPULSE_REDIS_USERNAME: keep one")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("families")
    @classmethod
    def _known_families(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        unknown = sorted(set(names) - set(METRIC_FAMILIES))
        if unknown:
            raise ValueError(f"unknown metric families {unknown}; known: {', '.join(METRIC_FAMILIES)}")
        if not names:
            raise ValueError(f"name at least one metric family of {', '.join(METRIC_FAMILIES)}")
        return ",".join(name for name in METRIC_FAMILIES if name in names)

    @property
    def family_names(self) -> tuple[str, ...]:
        """The metric families this worker runs, in rendering order."""
        return tuple(self.families.split(","))

    @field_validator("pipedrive_basic_auth")
    @classmethod
    def _user_colon_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("expected user:password")
        return value

    @field_validator("close_signature_key")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                bytes.fromhex(value.get_secret_value())
            except ValueError:
                raise ValueError("expected the hex signature_key Close returned for the subscription") from None
        return value

    @field_validator("salesforce_org_id")
    @classmethod
    def _org_id(cls, value: str | None) -> str | None:
        if value is not None and (len(value) not in (15, 18) or not value.isalnum()):
            raise ValueError("expected a 15- or 18-character Salesforce organization id (00D...)")
        return value

    @field_validator("alertmanager_url")
    @classmethod
    def _alertmanager_urls(cls, value: str | None) -> str | None:
        if value is None:
            return None
        urls = [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        bad = [url for url in urls if not url.startswith(("http://", "https://"))]
        if bad or not urls:
            raise ValueError(f"expected comma-separated http(s)://host:port URLs, got {value!r}")
        return ",".join(urls)

    @property
    def alertmanager_urls(self) -> list[str]:
        return self.alertmanager_url.split(",") if self.alertmanager_url else []

    @field_validator("public_url", "hubspot_api_url", "pipedrive_api_url", "salesforce_instance_url", "close_api_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected http(s)://host[:port]")
        return value.rstrip("/") if value else value

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def use_tansu_workarounds(self) -> bool:
        return self.kafka_url is None if self.tansu_compat is None else self.tansu_compat

    @property
    def kafka_bootstrap(self) -> str:
        """``host:port,host:port`` for aiokafka, from the ``kafka://`` URL."""
        if self.kafka_url is None:
            raise RuntimeError("kafka_url is not set (the embedded broker sets it when it starts)")
        return kafka_bootstrap(self.kafka_url)


def kafka_bootstrap(url: str) -> str:
    """Turn ``kafka://h1:9092;h2:9092`` (Faust's form) into aiokafka's ``h1:9092,h2:9092``."""
    servers = url.split("://", 1)[-1]
    return ",".join(part for part in servers.replace(";", ",").split(",") if part)


def check_kafka_url(url: str) -> str:
    """Accept only ``kafka://host:port[;host:port...]``, the form Faust's broker setting takes."""
    expected = "expected kafka://host:port, several brokers separated by ';' (kafka://k1:9092;k2:9092)"
    scheme, sep, servers = url.partition("://")
    if not sep or scheme != "kafka":
        raise ValueError(f"{expected}; got scheme {scheme + '://' if sep else 'none'}")
    listed = [server.strip() for server in servers.replace(",", ";").split(";") if server.strip()]
    if not listed:
        raise ValueError(f"{expected}; got no broker")
    for server in listed:
        host, colon, port = server.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{expected}; got {server!r}")
    return url
