"""Route resolution: configured patterns first, then bounded automatic templates."""

from __future__ import annotations

import pytest

from shadowproxy import config
from shadowproxy.routes import OTHER, Router, auto_template

ROUTES = (
    config.Route(name="user", match="/api/users/{id}"),
    config.Route(name="user_pitches", match="/api/users/{id}/pitches"),
    config.Route(name="pitches", match="/api/pitches/**"),
    config.Route(name="root", match="/"),
)


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/api/users/42", "user"),
        ("/api/users/42/", "user"),
        ("/api/users/42/pitches", "user_pitches"),
        ("/api/pitches", "pitches"),
        ("/api/pitches/9/comments/3", "pitches"),
        ("/", "root"),
        ("/api/users", "/api/users"),
        ("/api/users/42/pitches/7", "/api/users/{id}/pitches/{id}"),
    ],
)
def test_configured_routes_win_in_order(path, route):
    assert Router(ROUTES).resolve(path) == route


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api/orders/12345", "/api/orders/{id}"),
        ("/api/orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301/items", "/api/orders/{id}/items"),
        ("/api/blobs/9f86d081884c7d659a2feaa0c55ad015", "/api/blobs/{id}"),
        ("/api/tokens/dGhpc2lzYWxvbmdiYXNlNjR0b2tlbjEy", "/api/tokens/{id}"),
        ("/api/health", "/api/health"),
        ("/api/very-long-human-readable-slug", "/api/very-long-human-readable-slug"),
    ],
)
def test_automatic_templates_replace_id_like_segments(path, template):
    assert auto_template(path) == template


def test_distinct_routes_are_capped_and_the_rest_fold_into_other():
    router = Router((), config.Routing(max_routes=3))
    names = {router.resolve(f"/api/thing{i}/x") for i in range(10)}
    assert names == {"/api/thing0/x", "/api/thing1/x", "/api/thing2/x", OTHER}
    assert router.resolve("/api/thing1/x") == "/api/thing1/x"


def test_without_auto_templates_unknown_paths_are_other():
    router = Router(ROUTES, config.Routing(auto_templates=False))
    assert router.resolve("/api/unknown") == OTHER
    assert router.resolve("/api/users/1") == "user"


def test_a_route_can_be_limited_to_methods():
    routes = (
        config.Route(name="pitch_create", match="/api/pitches", methods=("POST",)),
        config.Route(name="pitch_list", match="/api/pitches"),
    )
    router = Router(routes)
    assert router.resolve("/api/pitches", "POST") == "pitch_create"
    assert router.resolve("/api/pitches", "GET") == "pitch_list"
    assert router.resolve("/api/pitches", "POST") == "pitch_create"
