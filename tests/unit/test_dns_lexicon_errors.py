"""controller/adapters/dns/lexicon_errors.py: which failures out of dns-lexicon are worth a
retry and which are configuration problems, for the error shapes its providers let through
(requests' with real Response objects, botocore's and the Tencent Cloud SDK's by their class
names and attributes, lexicon's own), and that a detail never quotes a request URL's query."""

from __future__ import annotations

import pytest
import requests

from controller.adapters.dns.lexicon_errors import classify
from tests.fixtures.programs import require_module

lexicon_exceptions = require_module("lexicon.exceptions", why="dns-lexicon, the dns-hosted extra")


def http_error(status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               url: str = "https://alidns.aliyuncs.com/?AccessKeyId=LTAIkey&Signature=sig"
               ) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {})
    response.url = url
    return requests.HTTPError(f"{status} Client Error for url: {url}", response=response)


class ClientError(Exception):  # botocore's shape: .response with Error and ResponseMetadata
    def __init__(self, code: str, status: int, message: str = "") -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": status}}


class TencentCloudSDKException(Exception):  # the Tencent Cloud SDK's shape: .code, .message
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(message)
        self.code, self.message = code, message


class EndpointConnectionError(Exception):  # botocore's: the URL comes in kwargs
    def __init__(self) -> None:
        super().__init__("Could not connect")
        self.kwargs = {"endpoint_url": "https://route53.amazonaws.com/2013-04-01/hostedzone"}


@pytest.mark.parametrize(("exc", "temporary", "shown"), [
    (http_error(401, b'{"success":false,"errors":[{"code":10000,'
                     b'"message":"Authentication error"}]}'),
     False, "HTTP 401 from alidns.aliyuncs.com: Authentication error (10000)"),
    (http_error(404, b'{"Code":"InvalidAccessKeyId.NotFound","Message":"Specified access key is'
                     b' not found."}'), False, "Specified access key is not found."),
    (http_error(400, b'{"Code":"Throttling.User","Message":"Request was denied due to user flow'
                     b' control."}'), True, "(Throttling.User)"),
    (http_error(503, b"<html>down</html>"), True, "HTTP 503 from alidns.aliyuncs.com"),
    (http_error(502), True, "HTTP 502"),
    (http_error(422, b'{"Response":{"Error":{"Code":"InvalidParameter","Message":"bad"}}}'),
     False, "bad (InvalidParameter)"),
    (ClientError("Throttling", 400, "Rate exceeded"), True, "HTTP 400: Rate exceeded"),
    (ClientError("PriorRequestNotComplete", 400), True, "PriorRequestNotComplete"),
    (ClientError("InvalidClientTokenId", 403, "The security token is invalid"), False,
     "The security token is invalid (InvalidClientTokenId)"),
    (ClientError("NoSuchHostedZone", 404), False, "NoSuchHostedZone"),
    (ClientError("ServiceUnavailable", 503), True, "ServiceUnavailable"),
    (TencentCloudSDKException("AuthFailure.SignatureFailure", "signature mismatch"), False,
     "signature mismatch (AuthFailure.SignatureFailure)"),
    (TencentCloudSDKException("ClientNetworkError", "timed out"), True, "ClientNetworkError"),
    (TencentCloudSDKException("RequestLimitExceeded"), True, "RequestLimitExceeded"),
    (EndpointConnectionError(), True, "cannot reach route53.amazonaws.com"),
    (requests.ConnectTimeout(request=requests.Request(
        "GET", "https://alidns.aliyuncs.com/?AccessKeyId=LTAIkey").prepare()), True,
     "no answer from alidns.aliyuncs.com (ConnectTimeout)"),
    (requests.ConnectionError(request=requests.Request(
        "GET", "https://api.cloudflare.com/client/v4/zones").prepare()), True,
     "cannot reach api.cloudflare.com"),
    (KeyError("result"), True, "unexpected reply from the API (KeyError"),
    (Exception("Domain is locked"), True, "Exception: Domain is locked"),
])
def test_classification(exc: BaseException, temporary: bool, shown: str) -> None:
    got_temporary, detail, _ = classify(exc)
    assert (got_temporary, shown in detail) == (temporary, True), detail
    assert "LTAIkey" not in detail and "Signature=" not in detail


def test_lexicons_authentication_error_is_a_config_problem() -> None:
    temporary, detail, _ = classify(lexicon_exceptions.AuthenticationError("No domain found"))
    assert not temporary and "No domain found" in detail


def test_retry_after_is_passed_on_for_temporary_answers() -> None:
    assert classify(http_error(429, headers={"Retry-After": "7"}))[2] == 7.0
    assert classify(http_error(503, headers={"Retry-After": "soon"}))[2] is None
    assert classify(http_error(403, headers={"Retry-After": "7"}))[2] is None


def test_a_long_detail_is_cut() -> None:
    _, detail, _ = classify(Exception("x" * 5000))
    assert len(detail) <= 300 and detail.endswith("...")
