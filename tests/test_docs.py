"""The docs tell the truth: every config key is documented, and the Docker image runs what
the README says it runs."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

from shadowproxy import config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SKIP = {"source", "digest"}  # filled by the loader, not by users


def key_paths(tp: type, prefix: str = "") -> list[str]:
    out = []
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        if f.name in SKIP:
            continue
        path = f"{prefix}{f.name}"
        sub = hints[f.name]
        if isinstance(sub, types.UnionType) or typing.get_origin(sub) is typing.Union:
            sub = next(a for a in typing.get_args(sub) if a is not type(None))
        if typing.get_origin(sub) is tuple and dataclasses.is_dataclass(typing.get_args(sub)[0]):
            sub = typing.get_args(sub)[0]
            path += "[]"
        # Blocks documented as a whole ("same keys as the global one").
        whole = (config.CompareRules, config.RouteCompare, config.RouteGate)
        if dataclasses.is_dataclass(sub) and sub not in whole:
            out.append(path)
            out.extend(key_paths(sub, path + "."))  # type: ignore[arg-type]
        else:
            out.append(path)
    return out


def documented(path: str) -> bool:
    parts = path.split(".")
    # A key is documented by itself, or by a wildcard on a parent (`shadow.*`), or as one of
    # several keys in one row (`listen.host`, `listen.port`).
    candidates = {path} | {".".join(parts[:i]) + ".*" for i in range(1, len(parts))}
    return any(f"`{c}`" in README for c in candidates) or any(
        f"`{path}`" in cell or cell.endswith(f"`{path}`") for cell in re.findall(r"\| ([^|]*) \|", README)
    )


def test_every_config_key_is_in_the_readme_reference():
    paths = key_paths(config.Config)
    # `secondary`, `routes[]` and the like are containers: their leaves are what users set.
    leaves = [p for p in paths if not any(q.startswith(p + ".") for q in paths)]
    missing = [p for p in sorted(leaves) if not documented(p) and not documented_pair(p)]
    assert missing == [], f"config keys missing from the README: {missing}"


def documented_pair(path: str) -> bool:
    """`shadowing.sticky.header` / `.cookie` style rows document both keys."""
    head, _, last = path.rpartition(".")
    return bool(re.search(rf"`{re.escape(head)}\.[a-z_0-9]+` / `\.{re.escape(last)}`", README)) or bool(
        re.search(rf"`{re.escape(head)}\.{re.escape(last)}` / `", README)
    )


def test_the_docker_entrypoint_and_healthcheck_are_the_documented_ones():
    assert 'ENTRYPOINT ["shadowproxy"]' in DOCKERFILE and 'ENTRYPOINT ["shadowproxy"]' in README
    assert 'CMD ["run", "-c", "/etc/shadowproxy/config.yaml"]' in DOCKERFILE
    assert 'CMD ["run", "-c", "/etc/shadowproxy/config.yaml"]' in README
    health = re.search(r"HEALTHCHECK .*?CMD (.*)", DOCKERFILE, re.S)
    assert health and "http://127.0.0.1:9090/healthz" in health.group(1)
    assert "http://127.0.0.1:9090/healthz" in README
    assert re.search(r"^USER (?!root)\w+", DOCKERFILE, re.M)
    assert "EXPOSE 8080 9090" in DOCKERFILE


def test_the_readme_opens_with_the_two_commands():
    head = README.splitlines()[:12]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_the_ci_script_runs_the_readme_test_command():
    ci = (ROOT / ".ci/run").read_text()
    assert "make test" in ci and "make bench-smoke" in ci
    for pkg in ("prometheus", "chromium", "nginx", "wrk", "nghttp2-client"):
        assert pkg in ci


def test_the_image_compiles_with_the_mypy_ci_tests() -> None:
    # mypyc writes the compiled build's C: another mypy can change what the image runs.
    pyproject = (ROOT / "pyproject.toml").read_text()
    tested = re.findall(r'"(mypy[<>=!~][^"]*)"', pyproject)
    built = re.findall(r'"(mypy[<>=!~][^"]*)"', DOCKERFILE)
    assert len(tested) == 1 and built == tested
