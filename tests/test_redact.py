import json
import pickle

import pytest

from shadowproxy import config
from shadowproxy.redact import REDACTED, Redactor

R = Redactor(config.Redact())
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("name", "value", "hidden"),
    [
        ("Authorization", "Bearer sk_live_X", True),
        ("authorization", "Basic dXNlcjpwYXNz", True),
        ("Cookie", "session=abc; theme=dark", True),
        ("Set-Cookie", "session=abc; HttpOnly", True),
        ("Proxy-Authorization", "Basic eA==", True),
        ("X-Api-Key", "k1", True),  # configured by default
        ("X-Access-Token", "t1", True),  # name contains a secret word
        ("X-Stripe-Secret-Key", "s1", True),
        ("Content-Type", "application/json", False),
        ("Accept", "*/*", False),
    ],
)
def test_header_names(name: str, value: str, hidden: bool) -> None:
    (out,) = R.headers(((name, value),))
    assert out == (name, REDACTED if hidden else value)


def test_headers_keep_order_and_repeats_and_scrub_token_values() -> None:
    h = (("Set-Cookie", "a=1"), ("Vary", "Accept"), ("Set-Cookie", "b=2"), ("X-Trace", f"id {JWT}"))
    assert R.headers(h) == (
        ("Set-Cookie", REDACTED),
        ("Vary", "Accept"),
        ("Set-Cookie", REDACTED),
        ("X-Trace", f"id {REDACTED}"),
    )


def test_configured_names_replace_the_defaults_but_credentials_stay_hidden() -> None:
    r = Redactor(config.Redact(headers=("x-internal",), fields=("pin",)))
    assert r.headers((("X-Internal", "v"), ("Authorization", "v"), ("X-Api-Key", "v"))) == (
        ("X-Internal", REDACTED),
        ("Authorization", REDACTED),
        ("X-Api-Key", "v"),
    )
    assert json.loads(r.body('{"PIN": 1234, "password": "p"}', "application/json")) == {
        "PIN": REDACTED,
        "password": "p",
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ""),
        ("page=2", "page=2"),
        ("access_token=abc&page=2", f"access_token={REDACTED}&page=2"),
        ("page=2&accessToken=abc", f"page=2&accessToken={REDACTED}"),
        ("stripe_secret_key=x;a=1", f"stripe_secret_key={REDACTED};a=1"),
        ("user%5Bpassword%5D=x", f"user%5Bpassword%5D={REDACTED}"),
        # every other byte as received: encoding, '+', repeated keys, a bare key
        ("q=a%2Fb+c&q=d&token=x&flag", f"q=a%2Fb+c&q=d&token={REDACTED}&flag"),
        (f"state={JWT}", f"state={REDACTED}"),
        ("API_KEY=1", f"API_KEY={REDACTED}"),
    ],
)
def test_query(query: str, expected: str) -> None:
    assert R.query(query) == expected


def test_json_body_recursive_and_case_insensitive() -> None:
    body = {
        "user": {"name": "bob", "Password": "hunter2", "stripe_secret_key": "sk"},
        "accessToken": "t",
        "cards": [{"card_number": "4242", "brand": "visa"}],
        "secret": {"nested": "whole subtree"},
        "note": f"see {JWT}",
        "count": 3,
    }
    out = json.loads(R.body(json.dumps(body), "application/json; charset=utf-8"))
    assert out == {
        "user": {"name": "bob", "Password": REDACTED, "stripe_secret_key": REDACTED},
        "accessToken": REDACTED,
        "cards": REDACTED,  # "cards" contains "card": the whole list goes
        "secret": REDACTED,
        "note": f"see {REDACTED}",
        "count": 3,
    }


def test_json_without_content_type_and_vendor_json() -> None:
    assert json.loads(R.body('[{"token": "t"}]', None)) == [{"token": REDACTED}]
    assert json.loads(R.body('{"ssn": "1"}', "application/problem+json")) == {"ssn": REDACTED}


def test_truncated_json_falls_back_to_text_patterns() -> None:
    out = R.body('{"user": "bob", "items": [1, 2], "password": "hunter2 and mo', "application/json")
    assert "hunter2" not in out
    assert '"user": "bob"' in out


def test_form_and_multipart_bodies() -> None:
    assert R.body("user=bob&password=hunter2", "application/x-www-form-urlencoded") == (
        f"user=bob&password={REDACTED}"
    )
    multipart = (
        '--B\r\nContent-Disposition: form-data; name="user"\r\n\r\nbob\r\n'
        '--B\r\nContent-Disposition: form-data; name="api_key"\r\nContent-Type: text/plain\r\n\r\nk-123\r\n'
        "--B--\r\n"
    )
    out = R.body(multipart, "multipart/form-data; boundary=B")
    assert "k-123" not in out and "bob" in out and REDACTED in out


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("GET /cb?code=1&access_token=abc123 HTTP/1.1", "abc123"),
        ("login failed password=hunter2 user=bob", "hunter2"),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("upstream said {'token': 'tok-9'}", "tok-9"),
        ('{"client_secret": "cs-1", "ok": true}', "cs-1"),
        ("<user><password>pw-7</password></user>", "pw-7"),
        (f"cookie jar: {JWT}", JWT),
        ("key sk_live_abcdef and sk_test_123", "sk_"),
        ("Cookie: a=1; b=2", "b=2"),
    ],
)
def test_text(text: str, secret: str) -> None:
    out = R.text(text)
    assert secret not in out
    assert REDACTED in out


def test_text_leaves_plain_text_alone() -> None:
    s = "GET /api/users/42?page=2 took 12 ms; status: 200 <b>bold</b>"
    assert R.text(s) == s


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("$.user.password", "hunter2", REDACTED),
        ("$.data[3].cardNumber", "4242", REDACTED),
        ("$.secret.value", "v", REDACTED),  # under a secret object, as the body hides it
        ("$['api_key']", "k", REDACTED),
        ("header:authorization", "Bearer x", REDACTED),
        ("header:x-trace", f"id {JWT}", f"id {REDACTED}"),
        ("$.user", {"name": "bob", "token": "t"}, {"name": "bob", "token": REDACTED}),
        ("$.items", [{"ssn": "1"}, 2], [{"ssn": REDACTED}, 2]),
        ("$.name", "bob", "bob"),
        ("$.password", None, None),  # "missing" stays visible as missing
        ("status", 500, 500),
        ("line:3", "password=hunter2", f"password={REDACTED}"),
    ],
)
def test_field_diff_values(path: str, value: object, expected: object) -> None:
    assert R.value(path, value) == expected


def test_a_redactor_sent_to_the_store_writer_hides_the_same_things() -> None:
    r = Redactor(config.Redact(headers=("X-Tenant",), fields=("pin",)))
    back = pickle.loads(pickle.dumps(r))
    shown = back.headers((("X-Tenant", "t1"), ("Accept", "*/*")))
    assert shown == (("X-Tenant", REDACTED), ("Accept", "*/*"))
    assert json.loads(back.body('{"pin": "1234", "ok": 1}', "application/json")) == {"pin": REDACTED, "ok": 1}
