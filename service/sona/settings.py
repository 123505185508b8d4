"""The one configuration model. Precedence: CLI flags > SONA_* environment >
config file (SONA_CONFIG_FILE, TOML) > defaults."""

from __future__ import annotations

import hmac
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from sona.errors import ConfigError

LOOPBACK_HOSTS = {"127.0.0.1", "::1", "localhost"}


# SONA_* variables that are not settings: the client's, the config file's
# name, and test hooks (any SONA_TEST_*).
NON_SETTINGS_ENV = {"SONA_URL", "SONA_API_KEY", "SONA_CONFIG_FILE"}

# Kubernetes service links (a pod's enableServiceLinks, on by default) give
# every pod variables for each Service in its namespace; a Service named `sona`
# yields these, which are not Sona's to read. SONA_PORT is also the port
# setting: the service link's is a URL (tcp://10.0.0.7:8765), the setting's a number.
_SERVICE_LINK = re.compile(
    r"SONA_SERVICE_(?:HOST|PORT(?:_[A-Z0-9_]+)?)"
    r"|SONA_PORT_\d+_(?:TCP|UDP|SCTP)(?:_(?:ADDR|PORT|PROTO))?"
)
_SERVICE_LINK_URL = re.compile(r"(?:tcp|udp|sctp)://.*")


def is_service_link(name: str, value: str) -> bool:
    """Is ``name=value`` a variable Kubernetes injected for a Service named sona?"""
    name = name.upper()
    if name == "SONA_PORT":
        return _SERVICE_LINK_URL.fullmatch(value.strip()) is not None
    return _SERVICE_LINK.fullmatch(name) is not None


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """A misspelt SONA_* variable is an error, not silently ignored."""
    env = os.environ if environ is None else environ
    known = {f"SONA_{name.upper()}" for name in Settings.model_fields} | NON_SETTINGS_ENV
    for name in sorted(env):
        upper = name.upper()
        if (
            upper.startswith("SONA_")
            and upper not in known
            and not upper.startswith("SONA_TEST_")
            and not is_service_link(upper, env[name])
        ):
            raise ConfigError(f"unknown environment variable {name} (not a Sona setting)")


def unparsable(exc: SettingsError) -> ConfigError:
    """A SONA_* value that pydantic-settings cannot parse (a list setting that
    is not JSON) as a configuration error. The value is never repeated: it may
    be a key."""
    found = re.search(r'field "(\w+)"', str(exc))
    name = found.group(1) if found else "?"
    return ConfigError(
        f"invalid setting {name}: SONA_{name.upper()} is not valid JSON "
        f'(a list is written like SONA_{name.upper()}=\'["first", "second"]\')'
    )


class EnvSource(EnvSettingsSource):
    """The SONA_* environment, less what Kubernetes service links put there
    (a ``SONA_PORT=tcp://…`` must not be read as the port)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = super()._load_env_vars()
        return {k: v for k, v in env.items() if not is_service_link(k, v or "")}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (SONA_CONFIG_FILE)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in config file {path}")
    return data


def _without_password(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``;
    a ``password=`` query parameter (libpq's other spelling) is masked too."""
    try:
        password = urlsplit(url).password if "://" in url else None
    except ValueError:
        password = None
    masked = url.replace(f":{password}@", ":***@", 1) if password else url
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", masked, flags=re.IGNORECASE)


class ApiKeys:
    """The API keys in force, compared in constant time. They never show in a
    repr or str, so no log line or traceback can carry them."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = tuple(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def matches(self, given: str) -> bool:
        """Whether ``given`` is one of the keys; every key is compared."""
        found = [hmac.compare_digest(given.encode(), k.encode()) for k in self._keys]
        return any(found)

    def __repr__(self) -> str:
        return f"ApiKeys(<{len(self._keys)} masked>)"

    __str__ = __repr__


class TomlFileSource(PydanticBaseSettingsSource):
    """Reads the TOML file named by SONA_CONFIG_FILE, lowest priority above defaults."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("SONA_CONFIG_FILE")
        self._data: dict[str, Any] = _read_toml(Path(path)) if path else {}

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SONA_", extra="ignore")

    # Network
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    socket: Path | None = None
    insecure: bool = False
    api_keys: list[SecretStr] = Field(default_factory=list)
    api_key_file: Path | None = None
    # Browser origins (scheme://host[:port]) besides the daemon's own allowed to
    # send state-changing requests; "*": any (docs/security.md, cross-origin).
    allowed_origins: list[str] = Field(default_factory=list)
    pidfile: Path | None = None

    # Storage
    data_dir: Path = Path("./data")
    store: str = ""  # "" → sqlite:<data_dir>/sona.db
    retention_hours: float = 24 * 7
    # A11: a submission with the same file and options as a completed job is
    # answered from it at once (cached: true). Off by default; a request's
    # `dedupe` field overrides it.
    dedupe: bool = False

    # Models
    model: str | None = None  # loaded at start
    default_model: str | None = "tiny.en"  # used when a job names none
    model_dir: Path | None = None  # local cache of CTranslate2 model directories
    allow_download: bool = False  # fetch unknown names from the model hub
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"  # int8 on a CPU, float16 on CUDA
    cpu_threads: int = Field(default=0, ge=0)  # per parallel step; 0: the cores shared out

    # Execution (A10): chunks of every job in flight share batches.
    chunk_s: float = Field(default=20, ge=5, le=30)  # most speech in one chunk
    # Windows per engine step; None: 4 on a CPU, 8 on CUDA. A CPU's decoder
    # reads a small model's weights once per token for the whole batch: at
    # beam 5, 4 windows cost a fifth less each than 2 (its encoder reads them
    # one by one, cheaper there). A step is what a cancel or an interactive
    # request waits for at most (docs/performance.md, "Steps of 4 windows").
    batch_size: int | None = Field(default=None, ge=1, le=64)
    # Engine steps decoded at once, each on its own CTranslate2 replica; None:
    # 2 on a CPU with two cores or more (two one-thread replicas decode a small
    # model's batches 1.3-1.4x faster than one replica with two threads), 1 on CUDA.
    parallel_steps: int | None = Field(default=None, ge=1, le=16)
    engine_nice: int = Field(default=5, ge=0, le=19)  # the API stays responsive
    # A job's beam when its request does not say. 5, as faster-whisper's own
    # defaults: with fitted windows it costs about what beam 1 over 30 s
    # windows did, and reads within about 0.01 of sequential decoding's WER
    # (docs/performance.md). Live turns decode greedily (their latency),
    # whatever this says.
    beam_size: int = Field(default=5, ge=1, le=10)
    # The encoder reads a window's own audio (rounded up to 2.5 s) and a
    # second of silence (10 s at least) instead of Whisper's 30 s: about half
    # the CPU of a batch, the same text (docs/performance.md, "Fitted
    # windows"); a pass that runs away is decoded again over 30 s. False:
    # every window is 30 s, as the model was trained.
    fit_windows: bool = True
    max_jobs_in_flight: int = Field(default=16, ge=1)
    # False: an API node (`sona serve --no-worker`), no engine, no worker; its
    # jobs run on `sona worker` nodes sharing the store (docs/scaling.md).
    worker: bool = True
    step_timeout_s: float = Field(default=300, gt=0)  # a batch past this: the engine hung
    model_load_timeout_s: float = Field(default=300, gt=0)  # a model load past this: hung
    # An engine ping unanswered this long: /ready says the engine is not answering.
    engine_ping_timeout_s: float = Field(default=10, gt=0)
    max_loaded_models: int = Field(default=2, ge=1)
    model_idle_ttl_s: float = 0  # 0: never unload idle models

    # Jobs and limits
    max_upload_mb: float = Field(default=1024, gt=0)
    max_audio_seconds: float = Field(default=4 * 3600, gt=0)
    # condition_on_previous_text decodes the whole file in memory (measured:
    # 1 GB an hour of audio with VAD, 3 GB without): longer audio is refused.
    max_sequential_seconds: float = Field(default=1800, gt=0)
    max_queue: int = Field(default=10_000, ge=1)
    max_attempts: int = Field(default=3, ge=1)
    job_timeout_s: float = Field(default=6 * 3600, gt=0)
    sync_wait_s: float = Field(default=30, ge=0)
    # Live sessions (the OpenAI Realtime WebSocket, docs/api.md).
    live_max_sessions: int = Field(default=8, ge=0)  # at once, on this node; 0: none
    live_max_session_s: float = Field(default=4 * 3600, gt=0)  # of audio, per session
    live_idle_timeout_s: float = Field(default=60, gt=0)  # no client event for this long
    live_max_turn_s: float = Field(default=30, ge=1, le=600)  # a turn this long is committed
    live_max_frame_kb: int = Field(default=1024, ge=1)  # one WebSocket message
    live_max_ahead_s: float = Field(default=60, ge=0)  # audio sent ahead of real time
    live_resume_grace_s: float = Field(default=30, ge=0)  # a dropped client may resume
    live_partial_s: float = Field(default=0, ge=0)  # an open turn decoded this often; 0: off
    drain_timeout_s: float = Field(default=30, ge=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    lease_s: float = Field(default=30, gt=0)
    upload_idle_timeout_s: float = Field(default=60, gt=0)
    # Fetch and callback URLs to private/loopback addresses; None: only while
    # Sona itself listens on loopback (E3).
    allow_private_urls: bool | None = None

    # Webhooks (E1, E2; docs/webhooks.md). No secret: deliveries go unsigned.
    webhook_secret: SecretStr | None = None  # whsec_<base64>
    webhook_max_attempts: int = Field(default=16, ge=1, le=100)
    # The first retry's delay; each next one doubles, up to 360 times this
    # (10 s → 1 h). Tests compress the whole schedule through it.
    webhook_backoff_s: float = Field(default=10, gt=0)
    webhook_timeout_s: float = Field(default=10, gt=0)  # one attempt, connect to last byte
    # Base of the links in webhook payloads ("https://sona.example"); unset:
    # links are paths relative to wherever the receiver reaches Sona.
    public_url: str | None = None

    # Connections and request rates (F5): see docs/security.md.
    header_timeout_s: float = Field(default=10, gt=0)  # a request head must arrive in this
    idle_timeout_s: float = Field(default=75, gt=0)  # keep-alive connection with no request
    # Open connections in all (429 past it; lowered to fit the descriptor
    # limit), and per address: a sixteenth, so a handful cannot fill it.
    max_connections: int = Field(default=4096, ge=1)
    max_connections_per_client: int = Field(default=256, ge=1)  # per address
    max_uploads: int = Field(default=64, ge=1)  # request bodies being stored at once
    # A sixteenth of max_uploads: a handful of addresses cannot hold every slot.
    max_uploads_per_client: int = Field(default=4, ge=1)
    rate_limit_per_s: float = Field(default=0, ge=0)  # per client; 0: no rate limit
    rate_limit_burst: int = Field(default=50, ge=1)

    # Logs
    log_level: str = "info"
    log_format: Literal["json", "console", "auto"] = "auto"  # auto: console on a TTY

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, EnvSource(settings_cls), TomlFileSource(settings_cls))

    @property
    def store_url(self) -> str:
        return self.store or f"sqlite:{self.data_dir / 'sona.db'}"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def on_loopback(self) -> bool:
        return self.socket is not None or self.host in LOOPBACK_HOSTS

    @property
    def private_urls_allowed(self) -> bool:
        if self.allow_private_urls is None:
            return self.on_loopback
        return self.allow_private_urls

    def all_api_keys(self) -> ApiKeys:
        keys = [k.get_secret_value() for k in self.api_keys]
        if self.api_key_file:
            keys += [ln.strip() for ln in self.api_key_file.read_text().splitlines() if ln.strip()]
        return ApiKeys(keys)

    def __repr_args__(self) -> Any:
        # repr and str (and so any log line or traceback showing the settings)
        # carry the store URL without its password; keys are SecretStr already.
        for name, value in super().__repr_args__():
            yield name, _without_password(value) if name == "store" and value else value

    @property
    def resolved_model_dir(self) -> Path:
        return (self.model_dir or self.data_dir / "models").resolve()

    def resolved(self) -> dict[str, Any]:
        """What `sona config` prints: the values in force, paths absolute,
        defaults filled in, secrets masked."""
        out = self.masked()
        out["data_dir"] = str(self.data_dir.resolve())
        out["model_dir"] = str(self.resolved_model_dir)
        if not self.store:
            out["store"] = f"sqlite:{self.data_dir.resolve() / 'sona.db'}"
        out["config_file"] = os.environ.get("SONA_CONFIG_FILE")
        return out

    def masked(self) -> dict[str, Any]:
        """The effective settings for `sona config`, secrets masked."""
        out = self.model_dump(mode="json")
        out["api_keys"] = ["***" for _ in self.api_keys]
        out["webhook_secret"] = "***" if self.webhook_secret else None
        out["store"] = _without_password(self.store_url)
        return out


def default_of(name: str) -> Any:
    """A setting's default, for a config dataclass (``EngineConfig``,
    ``WorkerConfig``) whose field stands for it: one number, written here."""
    return Settings.model_fields[name].default
