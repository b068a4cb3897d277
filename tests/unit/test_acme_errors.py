"""How CA failures are classified: retried in place, temporary, permanent or configuration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from controller.adapters.acme.errors import (
    CaResponseError,
    is_transient,
    parse_retry_after,
    to_controller_error,
)
from controller.adapters.acme.order import split_chain
from controller.errors import ConfigError, PermanentError, TemporaryError

CA = "https://ca.example/dir"


def problem(code: str, status: int = 400, retry_after: float | None = None) -> CaResponseError:
    return CaResponseError(
        url=CA, http_status=status, code=code, detail=f"detail of {code}", retry_after=retry_after
    )


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120
    in_a_minute = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    value = parse_retry_after(in_a_minute)
    assert value is not None and 55 <= value <= 61
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (problem("badNonce"), True),
        (problem("serverInternal", 500), True),
        (problem("http-502", 502), True),
        (problem("rateLimited", 429, retry_after=1), True),
        (problem("rateLimited", 429, retry_after=3600), False),
        (problem("rateLimited", 429), False),
        (problem("rejectedIdentifier"), False),
        (requests.exceptions.ConnectionError("refused"), True),
        (requests.exceptions.Timeout("slow"), True),
        (requests.exceptions.SSLError("bad cert"), False),
    ],
)
def test_only_transient_failures_are_retried_in_place(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_rate_limits_become_temporary_errors_with_the_cas_retry_after() -> None:
    limited = problem("rateLimited", 429, 3600)
    err = to_controller_error(limited, context="ordering a.test", ca_url=CA)
    assert isinstance(err, TemporaryError)
    assert err.retry_after == 3600
    assert str(err) == (
        f"ordering a.test: the CA at {CA} answered rateLimited: detail of rateLimited"
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("rejectedIdentifier", PermanentError),
        ("unauthorized", PermanentError),
        ("malformed", PermanentError),
        ("caa", PermanentError),
        ("badNonce", TemporaryError),
        ("serverInternal", TemporaryError),
        ("externalAccountRequired", ConfigError),
        ("invalidContact", ConfigError),
    ],
)
def test_ca_problems_map_to_the_controllers_errors(code: str, kind: type[Exception]) -> None:
    err = to_controller_error(problem(code), context="ordering a.test", ca_url=CA)
    assert type(err) is kind
    assert CA in str(err) and code in str(err)


def test_network_failures_are_temporary_and_name_the_ca() -> None:
    exc = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='ca', port=1): Max retries exceeded (Caused by "
        "NewConnectionError('<x>: Failed to establish a new connection: [Errno 111] "
        "Connection refused'))"
    )
    err = to_controller_error(exc, context="ordering a.test", ca_url=CA)
    assert isinstance(err, TemporaryError)
    assert str(err) == f"ordering a.test: the CA at {CA} is unreachable: Connection refused"


def test_a_full_chain_splits_into_leaf_and_issuer_chain() -> None:
    leaf = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    inter = b"-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"
    root = b"-----BEGIN CERTIFICATE-----\nCCCC\n-----END CERTIFICATE-----"
    assert split_chain(leaf + b"\n" + inter + root) == (leaf, inter + root + b"\n")
    assert split_chain(leaf) == (leaf, b"")
    with pytest.raises(TemporaryError, match="no PEM certificate"):
        split_chain(b"<html>oops</html>")
