"""Kafka security and Redis TLS/ACL settings: each mistake refused naming the variable; the client options built
once and the same for aiokafka and Faust."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
import trustme
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from salespulse.kafka_connection import KafkaConnection
from salespulse.redis_connection import display_url, redis_client
from salespulse.settings import Settings

KAFKA = {"kafka_url": "kafka://broker-1:9092;broker-2:9092"}


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    client = ca.issue_cert("client@example.com")
    files = {"ca": directory / "ca.pem", "cert": directory / "client.pem", "key": directory / "client.key"}
    ca.cert_pem.write_to_path(str(files["ca"]))
    client.cert_chain_pems[0].write_to_path(str(files["cert"]))
    client.private_key_pem.write_to_path(str(files["key"]))
    return files


def refused(**values: object) -> str:
    with pytest.raises(ValidationError) as caught:
        Settings(**values)
    return str(caught.value)


def test_defaults_are_plaintext_without_login() -> None:
    kafka = KafkaConnection.from_settings(Settings(**KAFKA))
    assert kafka.client_options() == {"bootstrap_servers": "broker-1:9092,broker-2:9092", "security_protocol": "PLAINTEXT"}
    assert kafka.faust_credentials() is None


@pytest.mark.parametrize(("values", "named"), [
    ({"kafka_security_protocol": "SASL_SSL"}, "SALESPULSE_KAFKA_SASL_USERNAME is required"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}, "SALESPULSE_KAFKA_SASL_PASSWORD is required"),
    ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "PLAINTEXT does not log in"),
    ({"kafka_security_protocol": "TLS"}, "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI", "kafka_sasl_username": "u",
      "kafka_sasl_password": "p"}, "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'"),
    ({"kafka_ssl_cafile": "/no/such/ca.pem", "kafka_security_protocol": "SSL"}, "kafka_ssl_cafile"),
])
def test_a_kafka_security_mistake_is_refused_naming_what_to_set(values: dict[str, object], named: str) -> None:
    assert named in refused(**KAFKA, **values)


def test_tls_files_without_a_tls_protocol_are_refused(pem: dict[str, Path]) -> None:
    assert "SALESPULSE_KAFKA_SSL_CAFILE is set but PLAINTEXT does not use TLS" in refused(
        **KAFKA, kafka_ssl_cafile=pem["ca"])
    assert "SALESPULSE_KAFKA_SSL_KEYFILE needs SALESPULSE_KAFKA_SSL_CERTFILE" in refused(
        **KAFKA, kafka_security_protocol="SSL", kafka_ssl_keyfile=pem["key"])


def test_security_needs_an_external_broker() -> None:
    assert "SALESPULSE_KAFKA_URL is required with SALESPULSE_KAFKA_SECURITY_PROTOCOL=SSL" in refused(
        kafka_security_protocol="SSL")


def test_protocol_and_mechanism_are_case_insensitive() -> None:
    settings = Settings(**KAFKA, kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="scram-sha-512",
                        kafka_sasl_username="u", kafka_sasl_password="p")
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")


def test_the_password_never_shows_in_a_repr_or_description() -> None:
    settings = Settings(**KAFKA, kafka_security_protocol="SASL_SSL", kafka_sasl_username="u",
                        kafka_sasl_password="hunter2-secret")
    kafka = KafkaConnection.from_settings(settings)
    assert "hunter2-secret" not in repr(settings) + repr(kafka) + kafka.describe()
    assert kafka.describe() == "broker-1:9092,broker-2:9092 (SASL_SSL, PLAIN as user 'u')"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_gets_the_same_sasl_ssl_options_as_every_aiokafka_client(mechanism: str, pem: dict[str, Path]) -> None:
    settings = Settings(**KAFKA, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username="app", kafka_sasl_password="pw", kafka_ssl_cafile=pem["ca"])
    kafka = KafkaConnection.from_settings(settings)
    ours = kafka.security_options()
    credentials = kafka.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    faust_options = credentials_to_aiokafka_auth(credentials)  # what Faust hands its aiokafka clients
    for options in (ours, faust_options):
        assert options["security_protocol"] == "SASL_SSL"
        assert options["sasl_mechanism"] == mechanism
        assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("app", "pw")
        context = options["ssl_context"]
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_sasl_plaintext_reaches_faust_without_tls() -> None:
    settings = Settings(**KAFKA, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-256",
                        kafka_sasl_username="app", kafka_sasl_password="pw")
    options = credentials_to_aiokafka_auth(KafkaConnection.from_settings(settings).faust_credentials())
    assert options["security_protocol"] == "SASL_PLAINTEXT" and options["ssl_context"] is None


def test_mutual_tls_loads_the_client_certificate_for_faust_and_aiokafka(pem: dict[str, Path]) -> None:
    settings = Settings(**KAFKA, kafka_security_protocol="SSL", kafka_ssl_cafile=pem["ca"],
                        kafka_ssl_certfile=pem["cert"], kafka_ssl_keyfile=pem["key"])
    kafka = KafkaConnection.from_settings(settings)
    credentials = kafka.faust_credentials()
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kafka.client_options()


def test_a_client_key_that_does_not_match_fails_when_the_context_is_built(pem: dict[str, Path], tmp_path: Path) -> None:
    other_key = tmp_path / "other.key"
    trustme.CA().issue_cert("x").private_key_pem.write_to_path(str(other_key))
    settings = Settings(**KAFKA, kafka_security_protocol="SSL", kafka_ssl_certfile=pem["cert"],
                        kafka_ssl_keyfile=other_key)
    with pytest.raises(ssl.SSLError):
        KafkaConnection.from_settings(settings).ssl_context()


@pytest.mark.parametrize(("values", "named"), [
    ({"redis_ssl_cafile": "CA"}, "SALESPULSE_REDIS_SSL_CAFILE needs a rediss:// SALESPULSE_REDIS_URL"),
    ({"redis_url": "redis://:pw@r:6379/0", "redis_password": "pw"}, "both in SALESPULSE_REDIS_URL and SALESPULSE_REDIS_PASSWORD"),
    ({"redis_url": "redis://u@r:6379/0", "redis_username": "u"}, "both in SALESPULSE_REDIS_URL and SALESPULSE_REDIS_USERNAME"),
    ({"redis_url": None, "redis_password": "pw"}, "SALESPULSE_REDIS_PASSWORD needs SALESPULSE_REDIS_URL"),
])
def test_a_redis_mistake_is_refused_naming_what_to_set(
    values: dict[str, object], named: str, pem: dict[str, Path]
) -> None:
    values = {"redis_url": "redis://r:6379/0", **values}
    values = {k: (pem["ca"] if v == "CA" else v) for k, v in values.items()}
    assert named in refused(**values)


async def test_the_redis_client_takes_tls_and_the_acl_user_from_their_variables(pem: dict[str, Path]) -> None:
    settings = Settings(redis_url="rediss://redis.example.com:6380/2", redis_username="app", redis_password="pw",
                        redis_ssl_cafile=pem["ca"], redis_ssl_certfile=pem["cert"], redis_ssl_keyfile=pem["key"])
    client = redis_client(settings)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "pw", 2)
        assert kwargs["ssl_ca_certs"] == str(pem["ca"]) and kwargs["ssl_certfile"] == str(pem["cert"])
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    finally:
        await client.aclose()


def test_messages_show_a_redis_url_without_its_password() -> None:
    assert display_url("rediss://app:hunter2@r:6380/0") == "rediss://app:***@r:6380/0"
    assert display_url("redis://r:6379/0") == "redis://r:6379/0"


def test_the_replication_factor_reaches_faust_changelogs() -> None:
    from salespulse.engine.worker import faust_settings

    assert faust_settings(Settings(**KAFKA, kafka_replication_factor=3))["topic_replication_factor"] == 3
