"""How salespulse connects to Redis: the URL, TLS (``rediss://``) and an ACL user, built in this one place.

The username and password may come from ``SALESPULSE_REDIS_USERNAME`` / ``SALESPULSE_REDIS_PASSWORD``
instead of the URL, so the secret never shows in a process list or a log line that prints the URL.
``wait_for_redis`` is the start-up check of the roles: a refused login or an untrusted certificate is
reported at once in one line; a server that is not up yet is retried until the startup timeout.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from salespulse.settings import Settings


class RedisUnavailable(Exception):
    """Redis cannot be used as configured; the message is one line that says what to change."""


def redis_client(settings: Settings) -> aioredis.Redis:
    """The client of ``SALESPULSE_REDIS_URL`` with the ``SALESPULSE_REDIS_*`` login and TLS settings."""
    options: dict[str, Any] = {}
    if settings.redis_username is not None:
        options["username"] = settings.redis_username
    if settings.redis_password is not None:
        options["password"] = settings.redis_password.get_secret_value()
    tls = {
        "ssl_ca_certs": settings.redis_ssl_cafile,
        "ssl_certfile": settings.redis_ssl_certfile,
        "ssl_keyfile": settings.redis_ssl_keyfile,
    }
    options.update({name: str(path) for name, path in tls.items() if path is not None})
    return redis_client_for(settings.redis_url or "", **options)


def redis_client_for(url: str, **options: Any) -> aioredis.Redis:
    """A client that retries a command once a connection dropped (e.g. after a Redis restart)."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, TimeoutError],
        health_check_interval=30,
        **options,
    )


def display_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def wait_for_redis(client: aioredis.Redis, url: str, timeout_s: float) -> None:
    """Return once Redis answers PING as this client's user; raise ``RedisUnavailable`` otherwise."""
    where = f"Redis at {display_url(url)}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await asyncio.wait_for(client.ping(), max(deadline - time.monotonic(), 0.5))
            return
        except AuthenticationError as exc:
            raise RedisUnavailable(
                f"{where} refused the login ({exc}); check SALESPULSE_REDIS_USERNAME and SALESPULSE_REDIS_PASSWORD"
            ) from None
        except ResponseError as exc:  # e.g. NOPERM: the ACL user may not even PING
            raise RedisUnavailable(f"{where}: {exc} (check the ACL rules of the user)") from None
        except (RedisConnectionError, OSError, asyncio.TimeoutError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise RedisUnavailable(
                    f"{where}: the server's TLS certificate is not trusted ({cause.verify_message}); "
                    "set SALESPULSE_REDIS_SSL_CAFILE to the CA that signed it"
                ) from None
            if isinstance(cause, ssl.SSLError):
                raise RedisUnavailable(
                    f"{where}: TLS handshake failed ({cause.reason or cause}); check the rediss:// URL and, if the "
                    "server wants a client certificate, SALESPULSE_REDIS_SSL_CERTFILE and _KEYFILE"
                ) from None
            if time.monotonic() + 1.0 >= deadline:
                raise RedisUnavailable(
                    f"cannot reach {where} within {timeout_s:g} s ({type(exc).__name__}: {exc}); "
                    "check SALESPULSE_REDIS_URL"
                ) from None
            await asyncio.sleep(1.0)
