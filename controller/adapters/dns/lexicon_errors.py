"""What a failed dns-lexicon call means: worth retrying (unreachable, timeout, 429, 5xx, an
unexpected reply) or a configuration problem (credentials rejected, unknown zone, other 4xx).

Called by lexicon_provider.py, which words the final message (provider, action, name) and cuts
credential values out of it. Knows the shapes of the errors lexicon's providers let through:
requests' (most providers), botocore's (route53), the Tencent Cloud SDK's (qcloud) and lexicon's
own, without importing any SDK. A detail never quotes a request URL (aliyun signs its query
string with the access key id in it), only its host, the HTTP status and the provider's own
error code and message.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit

_DETAIL_MAX = 300
_TEMPORARY_STATUS = frozenset({408, 409, 425, 429})
# API error codes meaning "slow down" or "try again" although they come with a 4xx status
_TEMPORARY_CODES = ("Throttl", "PriorRequestNotComplete", "RequestLimitExceeded",
                    "ServiceUnavailable", "InternalError", "InternalFailure",
                    "ClientNetworkError", "ServerNetworkError", "ResourceUnavailable",
                    "LastOperationUnfinished")
_CONFIG_CODE_PREFIXES = ("AuthFailure", "UnauthorizedOperation", "InvalidParameter",
                         "MissingParameter", "ResourceNotFound", "OperationDenied",
                         "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden",
                         "InvalidClientTokenId", "AccessDenied", "NoSuchHostedZone",
                         "InvalidDomainName")


def classify(exc: BaseException) -> tuple[bool, str, float | None]:
    """(temporary, detail, retry_after seconds or None) for an exception out of lexicon."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    response = getattr(exc, "response", None)
    if "AuthenticationError" in names:  # lexicon's: credentials refused or no such zone
        return False, _short(f"credentials refused or zone unknown to the account: {exc}"), None
    if "ProviderNotAvailableError" in names:
        return False, _short(str(exc)), None
    if "HTTPError" in names and response is not None and hasattr(response, "status_code"):
        return _http(response)
    if isinstance(response, dict) and "Error" in response:  # botocore's ClientError
        return _coded(_int(response.get("ResponseMetadata", {}).get("HTTPStatusCode")),
                      str(response["Error"].get("Code", "")),
                      str(response["Error"].get("Message", "")))
    if "TencentCloudSDKException" in names:
        code = str(getattr(exc, "code", "") or "")
        return _coded(None, code, str(getattr(exc, "message", "") or ""))
    if names & {"NoCredentialsError", "PartialCredentialsError", "NoRegionError"}:
        return False, _short(str(exc)), None
    if names & {"JSONDecodeError", "InvalidJSONError", "KeyError", "IndexError", "TypeError",
                "ValueError", "AttributeError"}:
        return True, _short(f"unexpected reply from the API ({type(exc).__name__}: {exc})"), None
    if names & {"Timeout", "TimeoutError", "ConnectTimeoutError", "ReadTimeoutError"}:
        return True, f"no answer from {_host_of(exc)} ({type(exc).__name__})", None
    if names & {"ConnectionError", "HTTPClientError", "EndpointConnectionError", "OSError"}:
        return True, f"cannot reach {_host_of(exc)} ({type(exc).__name__})", None
    if "RequestException" in names:
        return True, f"request to {_host_of(exc)} failed ({type(exc).__name__})", None
    # lexicon's providers raise a bare Exception with the API's message (dnspod's status)
    return True, _short(f"{type(exc).__name__}: {exc}"), None


def _http(response: Any) -> tuple[bool, str, float | None]:
    status = int(response.status_code)
    code, message = _api_error(response)
    temporary = status >= 500 or status in _TEMPORARY_STATUS or _temporary_code(code)
    detail = f"HTTP {status} from {_host(getattr(response, 'url', ''))}"
    if code or message:
        detail += f": {_coded_text(code, message)}"
    retry_after = _retry_after(response) if temporary else None
    return temporary, _short(detail), retry_after


def _coded(status: int | None, code: str, message: str) -> tuple[bool, str, float | None]:
    if _temporary_code(code):
        temporary = True
    elif code.startswith(_CONFIG_CODE_PREFIXES):
        temporary = False
    elif status is not None:
        temporary = status >= 500 or status in _TEMPORARY_STATUS
    else:
        temporary = True
    head = f"HTTP {status}: " if status is not None else ""
    return temporary, _short(head + _coded_text(code, message)), None


def _coded_text(code: str, message: str) -> str:
    return f"{message} ({code})" if code and message else code or message


def _temporary_code(code: str) -> bool:
    return any(part in code for part in _TEMPORARY_CODES)


def _api_error(response: Any) -> tuple[str, str]:
    """(code, message) from the common error bodies: Cloudflare's `errors`, Alibaba Cloud's
    `Code`/`Message`, DNSPod's `status`, Tencent Cloud's `Response.Error`."""
    try:
        body = response.json()
    except Exception:  # not JSON: the status says enough
        return "", ""
    if not isinstance(body, dict):
        return "", ""
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code", "")), str(errors[0].get("message", ""))
    nested = body.get("Response")
    if isinstance(nested, dict) and isinstance(nested.get("Error"), dict):
        body = nested["Error"]
    if "Code" in body or "Message" in body:
        return str(body.get("Code", "")), str(body.get("Message", ""))
    status = body.get("status")
    if isinstance(status, dict):
        return str(status.get("code", "")), str(status.get("message", ""))
    return "", ""


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None) or {}
    with contextlib.suppress(TypeError, ValueError):
        seconds = float(headers.get("Retry-After", ""))
        if seconds >= 0:
            return seconds
    return None


def _host_of(exc: BaseException) -> str:
    request = getattr(exc, "request", None)
    url = getattr(request, "url", None) or getattr(exc, "kwargs", {}).get("endpoint_url", "")
    return _host(url) if url else "the API"


def _host(url: object) -> str:
    try:
        return urlsplit(str(url)).hostname or "the API"
    except ValueError:
        return "the API"


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."
