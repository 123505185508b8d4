"""Every piece of app state, as typed ``web.AppKey``s."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from sona.engine import EngineHost
from sona.engine.registry import ModelRegistry
from sona.events import EventHub
from sona.intake import Intake
from sona.live import LiveSession
from sona.metrics import Metrics
from sona.notify import Notifier
from sona.runtime import Runtime
from sona.settings import ApiKeys, Settings
from sona.store import JobStore
from sona.uploads import UploadDir
from sona.worker import Worker

SETTINGS = web.AppKey("settings", Settings)
API_KEYS = web.AppKey("api_keys", ApiKeys)
STORE = web.AppKey("store", JobStore)
MODELS = web.AppKey("models", ModelRegistry)
EVENTS = web.AppKey("events", EventHub)
UPLOADS = web.AppKey("uploads", UploadDir)
INTAKE = web.AppKey("intake", Intake)
# None on an API node (`sona serve --no-worker`): the workers run elsewhere.
WORKER = web.AppKey[Worker | None]("worker")
ENGINE = web.AppKey[EngineHost | None]("engine")
NOTIFIER = web.AppKey("notifier", Notifier)
RUNTIME = web.AppKey("runtime", Runtime)
METRICS = web.AppKey("metrics", Metrics)


@dataclass
class LiveEntry:
    """A live session open on this node, with its client's socket (None while
    it waits for the client to resume) and the timer that ends it then."""

    session: LiveSession
    ws: web.WebSocketResponse | None
    expiry: asyncio.Task[None] | None = None


@dataclass
class LiveSessions:
    """The live sessions open on this node, by id (api/realtime.py); once
    ``stopping`` (SIGTERM) a dropped one ends at once instead of waiting."""

    entries: dict[str, LiveEntry] = field(default_factory=dict)
    stopping: bool = False


LIVE = web.AppKey("live", LiveSessions)
