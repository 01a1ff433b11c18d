"""Aliyun's RPC signature (version 1.0) as Aliyun documents it: its published example signs to the published
value, and a request whose parameters changed after signing no longer matches."""

from __future__ import annotations

from datetime import UTC, datetime

from channels.aliyun_signing import percent_encode, signature, signature_matches, signed_params

# Aliyun's worked example of the RPC signature (DescribeRegions, AccessKey secret `testsecret`).
EXAMPLE = {
    "AccessKeyId": "testid", "Action": "DescribeRegions", "Format": "XML", "SignatureMethod": "HMAC-SHA1",
    "SignatureNonce": "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf", "SignatureVersion": "1.0",
    "Timestamp": "2016-02-23T12:46:24Z", "Version": "2014-05-26",
}  # fmt: skip


def test_aliyuns_published_example_signs_to_its_published_signature() -> None:
    assert signature("GET", EXAMPLE, "testsecret") == "OLeaidS1JvxuMvnyHOwuJ+uX5qY="


def test_percent_encoding_is_rfc_3986_over_utf_8() -> None:
    assert percent_encode("a b*~/") == "a%20b%2A~%2F"
    assert percent_encode("退订") == "%E9%80%80%E8%AE%A2"


def test_a_signed_form_matches_until_a_parameter_changes() -> None:
    form = signed_params("SendSms", {"PhoneNumbers": "13800138000", "TemplateParam": '{"name":"王"}'}, "id", "secret",
                         datetime(2026, 3, 1, 8, 0, tzinfo=UTC))  # fmt: skip
    assert form["Timestamp"] == "2026-03-01T08:00:00Z" and form["Version"] == "2017-05-25"
    assert signature_matches("POST", form, "secret")
    assert not signature_matches("POST", {**form, "PhoneNumbers": "13900139000"}, "secret")
    assert not signature_matches("POST", form, "other") and not signature_matches("GET", form, "secret")
