"""Configuration from the environment (``SALESPULSE_*``), the single place every setting is read."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from salespulse.families.registry import NAMES

#: The metric families a worker can run, in the order it renders them (``families/registry.py``).
METRIC_FAMILIES = NAMES

#: Contract limits of the generic webhook endpoint.
MAX_BODY_BYTES = 1024 * 1024
MAX_EVENTS_PER_REQUEST = 500
SIGNATURE_TOLERANCE_SECONDS = 300


class Settings(BaseSettings):
    """Every knob of salespulse; see the configuration table in the README."""

    model_config = SettingsConfigDict(env_prefix="SALESPULSE_", extra="ignore")

    kafka_url: str | None = Field(None, description="kafka://host:port[;host:port]; unset = embedded broker")
    redis_url: str | None = Field(None, description="redis://host:port/db; unset = embedded server")
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    webhook_secret: SecretStr | None = None
    # CRM endpoints: each is served only when its secret or setting is present (docs/crm.md).
    hubspot_client_secret: SecretStr | None = Field(None, description="enables /webhooks/hubspot (signature v3/v2/v1)")
    pipedrive_basic_auth: SecretStr | None = Field(None, description="user:password; enables /webhooks/pipedrive")
    close_signature_key: SecretStr | None = Field(None, description="hex key; enables /webhooks/close")
    salesforce_org_id: str | None = Field(None, description="enables /webhooks/salesforce/outbound and /cdc")
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
    startup_timeout_s: float = Field(30.0, gt=0, description="how long a role waits for Kafka at start")
    publish_timeout_seconds: float = Field(5.0, gt=0, description="ingest: give up writing to Kafka (503) after this")
    tansu_compat: bool | None = Field(
        None,
        description="apply the Tansu workarounds (one record per producer batch, short group timeouts); "
        "default: on for the embedded broker, off for an external one",
    )
    data_dir: Path = Field(Path(".salespulse"), description="where the embedded broker and Redis keep files")

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

    @field_validator("public_url")
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
