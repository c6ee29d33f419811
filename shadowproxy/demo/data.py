"""The pitch platform's data for the demo backends: deterministic from a seed, no I/O.

Both simulated backends build the same dataset from the same seed, the way the Deno
server and the Workers port read the same Neon database. Account identities (id, email,
portal) do not depend on the seed, so the traffic generator can log in without sharing
the backends' seed.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Portal = Literal["creator", "investor", "production"]
PORTALS: tuple[Portal, ...] = ("creator", "investor", "production")
USERS = 50
PITCHES = 200
# Loopback-only demo: one shared password for every seeded account; real secrets never live here.
DEMO_PASSWORD = "Demo123!"
JWT_SECRET = b"demo-jwt-secret-shared-by-deno-and-workers"
STRIPE_WEBHOOK_SECRET = "whsec_demo_0123456789abcdef"
# Created pitches are numbered apart from the seeded ones so the two never collide.
FIRST_CREATED_PITCH_ID = 10_001

GENRES = ("drama", "comedy", "thriller", "horror", "sci-fi", "documentary", "animation", "action")
FORMATS = ("feature", "series", "limited-series", "short")
STATUSES = ("draft", "published", "in_review", "funded")
NOTIFICATION_KINDS = ("pitch_view", "pitch_like", "nda_request", "investment_interest", "message", "follow")

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_FIRST = ("Alex", "Sam", "Jordan", "Priya", "Mateo", "Aiko", "Noor", "Lena", "Kwame", "Ines", "Tom", "Zoe")
_LAST = ("Rivera", "Chen", "Okafor", "Novak", "Haddad", "Larsen", "Silva", "Kowalski", "Mbeki", "Dubois")
_COMPANIES = (
    "Northlight Pictures",
    "Blue Harbor Films",
    "Redwood Studios",
    "Tandem Media",
    "Oxbow Entertainment",
)
_ADJ = (
    "Silent",
    "Last",
    "Hidden",
    "Broken",
    "Golden",
    "Midnight",
    "Crimson",
    "Distant",
    "Electric",
    "Hollow",
)
_NOUN = (
    "Harbor",
    "Frontier",
    "Signal",
    "Orchard",
    "Witness",
    "Empire",
    "Tide",
    "Archive",
    "Garden",
    "Circuit",
)
_CITIES = ("London", "Los Angeles", "Lagos", "Berlin", "Mumbai", "Toronto", "Seoul", "Mexico City")
_TAGS = (
    "female-led",
    "true-story",
    "ensemble",
    "period",
    "low-budget",
    "franchise",
    "festival",
    "coming-of-age",
)


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    email: str
    portal: Portal


@dataclass(frozen=True, slots=True)
class User:
    account: Account
    name: str
    company: str | None
    bio: str
    location: str
    verified: bool
    created_at: datetime

    @property
    def id(self) -> int:
        return self.account.id


@dataclass(frozen=True, slots=True)
class Pitch:
    id: int
    creator_id: int
    title: str
    logline: str
    synopsis: str
    genre: str
    format: str
    status: str
    budget: int
    investor_count: int
    view_count: int
    like_count: int
    tags: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    user_id: int
    kind: str
    title: str
    pitch_id: int | None
    read: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Dataset:
    users: Mapping[int, User]
    pitches: tuple[Pitch, ...]  # newest first: the list endpoint's order
    pitch_by_id: Mapping[int, Pitch]
    notifications: Mapping[int, tuple[Notification, ...]]  # per user, newest first

    def login(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.account.email == email), None)


def accounts() -> tuple[Account, ...]:
    """Every seeded account; independent of the seed (the traffic generator relies on it)."""
    return tuple(
        Account(id=i, email=f"{PORTALS[(i - 1) % 3]}{i:02d}@pitchdemo.test", portal=PORTALS[(i - 1) % 3])
        for i in range(1, USERS + 1)
    )


@functools.lru_cache(maxsize=8)
def build(seed: int = 7) -> Dataset:
    rng = random.Random(seed)
    users = {a.id: _user(rng, a) for a in accounts()}
    creators = [u.id for u in users.values() if u.account.portal == "creator"]
    pitches = [_pitch(rng, i, rng.choice(creators)) for i in range(1, PITCHES + 1)]
    pitches.sort(key=lambda p: (p.created_at, p.id), reverse=True)
    notes: dict[int, tuple[Notification, ...]] = {}
    next_id = 1
    for uid in users:
        batch = []
        for _ in range(rng.randint(4, 12)):
            batch.append(_notification(rng, next_id, uid))
            next_id += 1
        # Newest first; ids are not in time order, so a port sorting by id reorders the list.
        notes[uid] = tuple(sorted(batch, key=lambda n: (n.created_at, n.id), reverse=True))
    return Dataset(users, tuple(pitches), {p.id: p for p in pitches}, notes)


def _user(rng: random.Random, account: Account) -> User:
    name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
    company = rng.choice(_COMPANIES) if account.portal != "creator" else None
    role = {"creator": "Writer-director", "investor": "Angel investor", "production": "Head of development"}
    return User(
        account=account,
        name=name,
        company=company,
        bio=f"{role[account.portal]} based in {rng.choice(_CITIES)}.",
        location=rng.choice(_CITIES),
        verified=rng.random() < 0.7,
        created_at=_EPOCH + timedelta(minutes=rng.randint(0, 200_000)),
    )


def _pitch(rng: random.Random, pid: int, creator_id: int) -> Pitch:
    title = f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    genre = rng.choice(GENRES)
    created = _EPOCH + timedelta(minutes=rng.randint(0, 400_000))
    return Pitch(
        id=pid,
        creator_id=creator_id,
        title=title,
        logline=f"A {genre} about what the {title.split()[-1].lower()} keeps from the people who built it.",
        synopsis=f"{title} follows three strangers in {rng.choice(_CITIES)} over one long winter.",
        genre=genre,
        format=rng.choice(FORMATS),
        status=rng.choices(STATUSES, weights=(2, 10, 3, 1))[0],
        budget=rng.randrange(50_000, 25_000_000, 5_000),
        investor_count=rng.randint(0, 40),
        view_count=rng.randint(0, 20_000),
        like_count=rng.randint(0, 2_000),
        tags=tuple(sorted(rng.sample(_TAGS, rng.randint(1, 3)))),
        created_at=created,
        updated_at=created + timedelta(minutes=rng.randint(0, 50_000)),
    )


def _notification(rng: random.Random, nid: int, user_id: int) -> Notification:
    kind = rng.choice(NOTIFICATION_KINDS)
    pitch_id = None if kind in ("message", "follow") else rng.randint(1, PITCHES)
    return Notification(
        id=nid,
        user_id=user_id,
        kind=kind,
        title=kind.replace("_", " ").capitalize() + (f" on pitch {pitch_id}" if pitch_id else ""),
        pitch_id=pitch_id,
        read=rng.random() < 0.5,
        created_at=_EPOCH + timedelta(minutes=rng.randint(0, 400_000)),
    )


# --------------------------------------------------------------------------- JSON shapes


def iso(dt: datetime) -> str:
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def user_json(u: User) -> dict[str, Any]:
    return {
        "id": u.id,
        "email": u.account.email,
        "name": u.name,
        "user_type": u.account.portal,
        "company_name": u.company,
        "bio": u.bio,
        "location": u.location,
        "verified": u.verified,
        "created_at": iso(u.created_at),
    }


def creator_json(u: User | None) -> dict[str, Any] | None:
    return None if u is None else {"id": u.id, "name": u.name}


def pitch_summary(p: Pitch, creator: User | None) -> dict[str, Any]:
    """The list view: no budget or investor figures (those are on the detail view only)."""
    return {
        "id": p.id,
        "title": p.title,
        "logline": p.logline,
        "genre": p.genre,
        "format": p.format,
        "status": p.status,
        "creator": creator_json(creator),
        "view_count": p.view_count,
        "like_count": p.like_count,
        "created_at": iso(p.created_at),
    }


def pitch_detail(p: Pitch, creator: User | None) -> dict[str, Any]:
    return {
        **pitch_summary(p, creator),
        "synopsis": p.synopsis,
        "budget": p.budget,
        "investor_count": p.investor_count,
        "tags": list(p.tags),
        "updated_at": iso(p.updated_at),
    }


def notification_json(n: Notification) -> dict[str, Any]:
    return {
        "id": n.id,
        "type": n.kind,
        "title": n.title,
        "pitch_id": n.pitch_id,
        "read": n.read,
        "created_at": iso(n.created_at),
    }
