"""A first server_name longer than a CN may be (issue 13 item 15): the CSR carries the first name
that fits (or no CN), `diff` says which, and the name checks agree with it (policy tests in
test_policy_chain.py)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from controller.certinfo import csr_common_name, generate_private_key, make_csr_pem
from controller.model import ActionKind, CertificateSpec, KeyType
from controller.plan import Action, Plan
from controller.reasons import Reason
from controller.render import plan_to_dict, plan_to_text

LONG = "a" * 60 + ".long.test"  # 70 characters
LONGER = "b" * 60 + ".long.test"


def csr_of(names: tuple[str, ...]) -> x509.CertificateSigningRequest:
    return x509.load_pem_x509_csr(make_csr_pem(generate_private_key(KeyType.EC256), names))


@pytest.mark.parametrize(
    ("names", "cn"),
    [
        (("a.test", "www.a.test"), "a.test"),
        ((LONG, "www.a.test", "b.test"), "www.a.test"),
        ((LONG, LONGER), None),
    ],
    ids=["first fits", "first too long", "none fits"],
)
def test_the_csr_carries_the_first_name_that_fits_as_cn_and_every_name_in_the_san(
    names: tuple[str, ...], cn: str | None
) -> None:
    csr = csr_of(names)
    got = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    assert got == ([cn] if cn else []) and csr_common_name(names) == cn
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == list(names)
    assert csr.is_signature_valid


def issue(*names: str) -> Plan:
    spec = CertificateSpec(domain=names[0], names=names)
    return Plan(actions=(Action(ActionKind.ISSUE, names[0], Reason.MISSING,
                                "no certificate stored", spec=spec, key_type=KeyType.EC256),))


def test_diff_says_which_cn_a_too_long_first_name_gets() -> None:
    assert plan_to_text(issue(LONG, "www.a.test")) == (
        f"+ issue  {LONG} www.a.test key=ec256 cn=www.a.test  [Missing] no certificate stored")
    assert " cn=(none)  [Missing]" in plan_to_text(issue(LONG, LONGER))
    assert " cn=" not in plan_to_text(issue("a.test", "www.a.test"))
    assert [a["common_name"] for a in plan_to_dict(issue(LONG, "www.a.test"))["actions"]] == [
        "www.a.test"]
    assert [a["common_name"] for a in plan_to_dict(issue(LONG, LONGER))["actions"]] == [None]
