"""Config loading: the README example loads; every mistake is named with its key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowproxy import config

ROOT = Path(__file__).resolve().parent.parent
README_EXAMPLE = """
listen: {host: 0.0.0.0, port: 8080}
admin: {host: 127.0.0.1, port: 9090}
primary: {name: deno, url: "http://127.0.0.1:8001", timeout_s: 30}
shadow: {name: workers, url: "${WORKERS_URL}", timeout_s: 10, host_header: backend}
routes:
  - {name: user, match: "/api/users/{id}"}
  - {name: pitches, match: "/api/pitches/**"}
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(config.ConfigError) as e:
        config.loads(text, source="bad.yaml", env=env or {})
    return e.value.errors


def test_the_readme_example_loads_into_frozen_typed_objects():
    cfg = config.loads(README_EXAMPLE, env={"WORKERS_URL": "https://api.example.workers.dev"})
    assert cfg.shadow.url == "https://api.example.workers.dev"
    assert cfg.shadow.host_header == "backend"
    assert cfg.primary.timeout_s == 30.0 and isinstance(cfg.primary.timeout_s, float)
    assert [r.name for r in cfg.routes] == ["user", "pitches"]
    assert cfg.shadowing.methods == ("GET", "HEAD", "OPTIONS")
    with pytest.raises(AttributeError):
        cfg.primary.url = "http://elsewhere"  # type: ignore[misc]


def test_the_shipped_example_file_matches_the_readme():
    cfg = config.load(ROOT / "config/example.yaml", env={"WORKERS_URL": "https://w.example"})
    assert cfg.primary.url == "http://127.0.0.1:8001"
    assert cfg.digest and cfg.source.endswith("example.yaml")


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${WORKERS_URL}", {"WORKERS_URL": "https://a.example"}, "https://a.example"),
        ("${WORKERS_URL:-https://fallback.example}", {}, "https://fallback.example"),
        (
            "${WORKERS_URL:-https://fallback.example}",
            {"WORKERS_URL": "https://b.example"},
            "https://b.example",
        ),
        ("https://${HOST}/v1", {"HOST": "c.example"}, "https://c.example/v1"),
    ],
)
def test_environment_variables_expand(value, env, expected):
    text = README_EXAMPLE.replace('"${WORKERS_URL}"', f'"{value}"')
    assert config.loads(text, env=env).shadow.url == expected


def test_every_error_is_listed_with_its_key_path():
    errors = errors_of(
        """
listen: {host: 0.0.0.0, port: 99999}
primary: {name: deno, url: "ftp://x", timeout_s: abc}
shadow: {name: workers, url: "${WORKERS_URL}", timeout_s: -1, host_header: bakend, tmeout: 3}
routes:
  - {name: user, match: "api/users/{id}"}
  - {match: "/x"}
gate: {confidence: 1.5}
shadowing: {methods: [GET, FETCH], sample_rate: 2, compare_process_min_bytes: -1}
"""
    )
    expected = [
        "shadow.url: environment variable WORKERS_URL is not set",
        "primary.timeout_s: must be a number, not the string 'abc'",
        "shadow.tmeout: unknown key (did you mean 'timeout_s'?)",
        "shadow.host_header: must be one of preserve, backend, not 'bakend'",
        "routes[1].name: required key is missing",
        "primary.url: 'ftp://x' is not an http:// or https:// URL with a host",
        "listen.port: must be a port number from 0 to 65535, not 99999",
        "shadow.timeout_s: must be greater than 0, not -1",
        "routes[0].match: must start with '/'",
        "gate.confidence: must be strictly between 0 and 1, not 1.5",
        "shadowing.methods: 'FETCH' is not an HTTP method",
        "shadowing.sample_rate: must be between 0 and 1, not 2",
        "shadowing.compare_process_min_bytes: must not be negative",
    ]
    for want in expected:
        assert any(e.startswith(want) for e in errors), f"missing {want!r} in {errors}"
    assert len(errors) == len(expected), errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("primary: [1, 2]\nshadow: {url: 'http://a'}", "primary: must be a mapping, not a list"),
        ("shadow: {url: 'http://a'}", "primary: required key is missing"),
        ("- a\n- b", "the top level must be a mapping"),
        ("primary: {url: 'http://a'\n", "not valid YAML"),
        (
            "primary: {url: 'http://a:99x'}\nshadow: {url: 'http://b'}",
            "primary.url: 'http://a:99x' has an invalid port",
        ),
        (
            "primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\ncompare: {ignore: [data.x]}",
            "compare.ignore[0]: 'data.x': a JSON path starts with '$'",
        ),
        (
            "primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\ncompare: {normalize: [{regex: '('}]}",
            "compare.normalize[0].regex: not a valid regular expression",
        ),
        (
            "primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\n"
            "routes: [{name: a, match: /a}, {name: a, match: /b}]",
            "routes[1].name: route name 'a' is used twice",
        ),
        (
            "primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\nroutes: [{name: a, match: '/a/**/b'}]",
            "routes[0].match: '**' may only end the pattern",
        ),
        (
            "primary: {url: 'http://a'}\nshadow: {url: 'http://b'}\nworkers: true",
            "workers: must be a whole number",
        ),
    ],
)
def test_specific_mistakes_are_named(text, message):
    errors = errors_of(text)
    assert any(message in e for e in errors), errors


def test_a_route_overrides_gate_and_adds_compare_rules():
    cfg = config.loads(
        """
primary: {url: "http://a"}
shadow: {url: "http://b"}
compare: {ignore: ["$.meta"]}
gate: {min_samples: 500}
routes:
  - name: pitches
    match: /api/pitches/**
    critical: true
    compare: {ignore: ["$.data[*].updated_at"], unordered: [{path: "$.items", key: id}]}
    gate: {max_mismatch_rate: 0.01}
""",
        env={},
    )
    rules = cfg.rules_for("pitches")
    assert rules.ignore == ("$.meta", "$.data[*].updated_at")
    assert rules.unordered == (config.Unordered(path="$.items", key="id"),)
    gate = cfg.gate_for("pitches")
    assert (gate.min_samples, gate.max_mismatch_rate, gate.critical) == (500, 0.01, True)
    assert cfg.gate_for("auto/{id}") == cfg.gate


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        config.load(tmp_path / "nope.yaml")
    assert "cannot read file" in str(e.value)
