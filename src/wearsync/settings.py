"""Configuration from the environment; read once by whoever starts a process, never at import."""

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from wearsync.crypto import TokenCipher, TokenKeyError, parse_cipher
from wearsync.models import ProviderName, RateLimit, parse_rate_limits
from wearsync.redirects import AllowedRedirect, parse_allowlist

# Where stored rows come from (their `provider`): the providers, and the files users import.
IMPORT_SOURCES = ("apple_health",)
DATA_SOURCES = (*(p.value for p in ProviderName), *IMPORT_SOURCES)
WEBHOOK_PATH_SECRET = "^(|[A-Za-z0-9_-]{16,128})$"  # unset, or hard to guess and one URL path segment

# Rate limits as WEARSYNC_<P>_RATE_LIMITS writes them ("100/900,1000/86400"; empty: none), parsed once.
RateLimits = Annotated[
    tuple[RateLimit, ...],
    NoDecode,
    BeforeValidator(lambda v: parse_rate_limits(v) if isinstance(v, str) else v),
    PlainSerializer(lambda limits: ",".join(f"{x.requests}/{x.per_seconds}" for x in limits), return_type=str),
]

# Every provider's settings class, by provider name: a provider module declares one (below).
PROVIDER_SETTINGS: dict[str, type["ProviderSettings"]] = {}


class ProviderSettings(BaseSettings):
    """What every provider's settings hold: its hosts, our app's credentials there and its rate
    limits. A provider module declares its own subclass with `env_prefix="WEARSYNC_<P>_"`, its
    defaults (the real provider's hosts, its documented limits) and its own tunables; declaring it
    registers it, and `Settings` loads it once into `settings.providers[<p>]`."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    name: ClassVar[str] = ""
    api_url: str
    auth_url: str
    authorize_url: str = ""  # the host of the page a user's browser is sent to, to allow our app
    client_id: str = ""
    client_secret: str = ""
    rate_limits: RateLimits = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        prefix = cls.model_config.get("env_prefix", "")
        if prefix:
            cls.name = prefix.removeprefix("WEARSYNC_").removesuffix("_").lower()
            PROVIDER_SETTINGS[cls.name] = cls

    @field_validator("api_url", "auth_url", "authorize_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @classmethod
    def load(cls, given: Mapping[str, Any]) -> "ProviderSettings":
        """From the environment, `given` (by field name) taking precedence; an error names each
        setting as `<p>_<field>` (WEARSYNC_<P>_<FIELD> in the environment)."""
        try:
            return cls(**given)
        except ValidationError as e:
            problems = "; ".join(f"{cls.name}_{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise ValueError(problems) from None

    def path_secret(self) -> str:
        """The secret last segment of the webhook's URL, for a provider that signs nothing."""
        return ""

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Each field's environment variable."""
        return {name: _variable(cls, name) for name in cls.model_fields}


def _variable(model: type[BaseSettings], name: str) -> str:
    alias = model.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{model.model_config.get('env_prefix', '')}{name}".upper()


class Settings(BaseSettings):
    # Validated on assignment too: what is parsed from a setting changes with it.
    model_config = SettingsConfigDict(
        env_prefix="WEARSYNC_", extra="ignore", populate_by_name=True, validate_assignment=True
    )

    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/wearsync",
        validation_alias=AliasChoices("DATABASE_URL", "WEARSYNC_DATABASE_URL"),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "WEARSYNC_REDIS_URL"),
    )
    queue_name: str = "wearsync:queue"
    # console (readable) or json; empty: json for the services (api, worker, sim), console otherwise.
    log_format: str = Field("", pattern="^(|console|json)$")
    log_level: str = "INFO"
    # /metrics: public unless a token is set, then only to `Authorization: Bearer <token>`.
    metrics_token: str = ""
    # Each worker's own /metrics (0: none); several workers on one host need a port each.
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    db_pool_min: int = 1
    db_pool_max: int = 10  # per worker process
    # The API's pool: its requests are many and short; too few connections queue them (the p99).
    api_db_pool_max: int = 20
    db_connect_timeout_s: float = Field(5.0, gt=0)  # a new database connection given up after this
    # A request or job waits at most this for a free connection of its pool (then: 503, a retry).
    db_acquire_timeout_s: float = Field(10.0, gt=0)
    # PostgreSQL cancels a statement of the API's or a worker's pool past this (0: never), so a query
    # stuck on a lock or a runaway plan gives its connection back; the largest page write (a few
    # hundred thousand samples) takes seconds. Lock waits are short here, so they give up sooner.
    db_statement_timeout_s: float = Field(60.0, ge=0)
    db_lock_timeout_s: float = Field(10.0, ge=0)
    worker_max_jobs: int = 10
    # Webhook jobs one worker process runs at once besides its sync jobs, from a queue of their own
    # ({queue_name}:webhooks), so that a burst of deliveries never holds syncs up (0: none here).
    webhook_worker_max_jobs: int = Field(5, ge=0)
    # How often a worker looks for jobs; each look starts at most as many as it has free slots.
    worker_poll_delay_s: float = Field(0.5, gt=0)
    job_timeout_s: int = 1800
    job_max_tries: int = 5
    # Pages one job stores before the rest of its task is queued again behind other users' jobs.
    job_max_pages: int = Field(100, ge=0)

    # Shared HTTP core: bounded retries with exponential backoff and jitter.
    http_timeout_s: float = 30.0
    http_retries: int = 4
    http_backoff_s: float = 0.5
    http_backoff_max_s: float = 20.0
    # A wait for a rate limit longer than this defers the job instead of holding its worker slot.
    rate_limit_max_wait_s: float = 30.0
    rate_limit_max_deferrals: int = 48  # how often a job may be deferred for rate limits before it fails
    token_refresh_margin_s: int = 300  # refresh access tokens this long before they expire
    # Fernet keys, comma-separated: the first encrypts stored OAuth tokens, all of them decrypt.
    token_keys: str = ""
    # Where browsers and providers reach this API: OAuth callbacks are {public_url}/api/v1/oauth/P/callback.
    public_url: str = "http://127.0.0.1:8080"
    # Where an OAuth flow may send the user back to (see wearsync.oauth); loopback hosts by default.
    oauth_redirect_allowlist: str = "http://localhost,http://127.0.0.1"
    oauth_state_ttl_s: int = Field(600, ge=30, le=3600)  # how long a user has to finish an authorization
    webhook_max_age_s: int = 300  # a signed webhook timestamp older than this is refused (replays)
    # Webhook deliveries taken from one address for one provider across API processes, per seconds
    # ("count/seconds"; empty: no limit): more are answered 429 with Retry-After.
    webhook_rate_limit: str = Field("3000/60", pattern=r"^(|[1-9][0-9]*/[1-9][0-9]*)$")
    # How often an open event stream (GET /api/v1/events/stream) looks for new events.
    events_stream_poll_s: float = Field(0.5, gt=0, le=60)
    # Scheduled incremental syncs of every active pull connection (0: none), and the share of each
    # provider's rate limit they may use (the rest is left to syncs asked for through the API).
    schedule_interval_s: int = Field(6 * 3600, ge=0)
    schedule_rate_share: float = Field(0.5, gt=0, le=1)
    task_reap_after_s: int = 120  # a queued task whose job Redis lost is enqueued again after this
    webhook_reap_after_s: int = 300  # an event still pending this long after it arrived is enqueued again
    # A webhook event that failed for a reason that may pass (upstream 5xx or unreachable, rate
    # limits, Redis or PostgreSQL away) is tried again after a pause that doubles from the first to
    # the longest, for as long as the provider's data is worth waiting for; then it fails for good.
    webhook_retry_first_s: float = Field(60, ge=0)
    webhook_retry_longest_s: float = Field(3600, ge=0)
    webhook_retry_for_s: int = Field(24 * 3600, ge=0)
    # Outgoing webhooks (events to the applications' endpoints): a URL whose host is or resolves to
    # a private, loopback or link-local address is refused unless this is set (`make run` sets it).
    events_allow_private_urls: bool = False
    # A failed delivery is tried again after a pause doubling from the first to the longest (a
    # quarter of it at random), for this long after the event; an endpoint failing all along is
    # then disabled. Each attempt waits at most events_timeout_s for the answer.
    events_retry_first_s: float = Field(5, ge=0)
    events_retry_longest_s: float = Field(6 * 3600, ge=0)
    events_retry_for_s: float = Field(3 * 24 * 3600, ge=0)
    events_timeout_s: float = Field(10, gt=0)
    # Deliveries one worker process sends at once (0: it sends none), and to one endpoint.
    events_max_in_flight: int = Field(256, ge=0)
    events_max_in_flight_per_endpoint: int = Field(64, ge=1)
    events_poll_s: float = Field(0.1, gt=0)  # how often a worker looks for due deliveries when idle
    # How long a rotated endpoint secret still signs (beside the new one).
    events_secret_overlap_s: int = Field(24 * 3600, ge=0)
    # Finished tasks and handled webhook events are deleted this many days after (0: kept forever);
    # a connection's latest task is always kept (its last sync).
    task_retention_days: int = Field(90, ge=0)
    webhook_event_retention_days: int = Field(30, ge=0)
    # Events (the outgoing webhooks' log: their deliveries and attempts go with them), unless one
    # of their deliveries is still pending.
    event_retention_days: int = Field(30, ge=0)
    # A digest of each webhook event's key outlives the event: a delivery replayed within this long
    # is known and stores nothing (Suunto's and Polar's carry no timestamp).
    webhook_digest_retention_days: int = Field(400, ge=0)
    # On SIGTERM, how long the API gives the requests in flight and the worker its jobs to finish
    # before they are cancelled (a cancelled job goes back to the queue): within the orchestrator's
    # own grace (Docker's stop_grace_period, Kubernetes' terminationGracePeriodSeconds).
    shutdown_grace_s: float = Field(25, ge=0)
    # A sync call (async=false) that finds the same sync already open waits at most this long for
    # it, then answers 504 naming the task (with no worker running, it would wait forever).
    sync_join_wait_s: float = Field(300, gt=0)
    # Syncs one user, and one application, may have queued or running at once; a new one past
    # either: 429 (the same sync still joins its open task).
    # Tries of a revocation upstream that failed for a reason that may pass (the first at the
    # disconnect, the rest by the workers, over hours); its tokens are kept until then.
    revoke_max_tries: int = Field(10, ge=1)
    max_open_tasks_per_user: int = Field(20, ge=1)
    max_open_tasks_per_app: int = Field(10_000, ge=1)
    # Sync calls (async=false) one application may have running across API processes; more: 429.
    sync_calls_per_app: int = Field(4, ge=1)
    # A job that lost Redis waits this long for it to answer again, then goes on in a new job;
    # after that, its task is left queued for the reaper.
    redis_outage_wait_s: float = Field(30.0, ge=0)
    # Apple Health exports uploaded to the API wait here, as `<task id>.zip`, until their import
    # ends (kept for the rerun of a job a worker lost): a directory the API and every worker share.
    import_dir: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "wearsync-imports")
    # The largest upload taken (413 past it), and the most export.xml may inflate to: a zip bomb
    # is refused at upload from what the zip says, and cut off at this many bytes when it lies.
    import_max_upload_bytes: int = Field(4 << 30, ge=1)
    import_max_xml_bytes: int = Field(16 << 30, ge=1)
    # Each provider's own settings (WEARSYNC_<P>_*), declared in its module: see ProviderSettings.
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)

    # What WEARSYNC_TOKEN_KEYS and WEARSYNC_OAUTH_REDIRECT_ALLOWLIST hold, parsed once.
    _cipher: TokenCipher | None = PrivateAttr(None)
    _redirect_allowlist: tuple[AllowedRedirect, ...] = PrivateAttr(())

    @model_validator(mode="after")
    def _parse_on_validation(self) -> Self:
        return self._parse()

    def _parse(self) -> Self:
        self._cipher = parse_cipher(self.token_keys)
        self._redirect_allowlist = parse_allowlist(self.oauth_redirect_allowlist)
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy, with what it holds parsed again (a copy is not validated); a provider's settings
        in `update`, named `<p>_<field>` as their variables are, are validated (`replace`)."""
        changes, providers = dict(update or {}), dict(self.providers)
        for name, config in self.providers.items():
            given = {k.removeprefix(f"{name}_"): changes.pop(k) for k in list(changes) if k.startswith(f"{name}_")}
            if given:
                providers[name] = type(config).model_validate(config.model_dump() | given)
        if providers != self.providers:
            changes["providers"] = providers
        return super().model_copy(update=changes, deep=deep)._parse()

    def cipher(self) -> TokenCipher:
        """What encrypts and decrypts stored tokens; TokenKeyError without a key."""
        if self._cipher is None:
            raise TokenKeyError(
                "WEARSYNC_TOKEN_KEYS is not set: OAuth tokens are stored encrypted. Generate a key with"
                " `wearsync token-key generate` and set it."
            )
        return self._cipher

    @property
    def redirect_allowlist(self) -> tuple[AllowedRedirect, ...]:
        """Where an OAuth flow may send the user back to (wearsync.redirects)."""
        return self._redirect_allowlist

    @model_validator(mode="before")
    @classmethod
    def _load_providers(cls, data: Any) -> Any:
        """Each registered provider's settings, read from its own WEARSYNC_<P>_* variables; given
        ones (`providers`, or flat `<p>_<field>` as the variables name them) take precedence."""
        if not isinstance(data, dict):
            return data
        if not PROVIDER_SETTINGS:
            raise ValueError("no provider's settings are declared yet: import wearsync.providers first")
        given: dict[str, Any] = data.get("providers") or {}
        providers: dict[str, ProviderSettings] = {}
        for name, config in PROVIDER_SETTINGS.items():
            if isinstance(given.get(name), ProviderSettings):
                providers[name] = given[name]
                continue
            flat = {k.removeprefix(f"{name}_"): v for k, v in data.items() if k.startswith(f"{name}_")}
            providers[name] = config.load(flat | dict(given.get(name) or {}))
        return data | {"providers": providers}

    @classmethod
    def variables(cls) -> dict[str, str]:
        """Every environment variable a setting is read from, by setting (`<p>_<field>` for a
        provider's), each the first of its aliases."""
        own = {name: _variable(cls, name) for name in cls.model_fields if name != "providers"}
        return own | {
            f"{p}_{field}": variable
            for p, config in PROVIDER_SETTINGS.items()
            for field, variable in config.variables().items()
        }

    def environment(self) -> dict[str, str]:
        """The environment variables that give a process these settings."""
        values = self.model_dump(exclude={"providers"}) | {
            f"{p}_{field}": value
            for p, config in self.providers.items()
            for field, value in config.model_dump().items()
        }
        variables = self.variables()
        return {variables[k]: str(v) for k, v in values.items() if v is not None}

    def replace(self, **changes: Any) -> "Settings":
        """A copy with some settings changed, each named as its variable is without WEARSYNC_
        (`<p>_<field>` for a provider's, validated as that variable is)."""
        return self.model_copy(update=changes)

    def webhook_path(self, name: str) -> str:
        return webhook_path(name, self.providers[name].path_secret())


def webhook_path(provider: str, path_secret: str = "") -> str:
    """The path of a provider's webhook: what to register at the provider, after our host."""
    return f"/api/v1/webhooks/{provider}" + (f"/{path_secret}" if path_secret else "")


def webhook_queue_name(settings: Settings) -> str:
    """The queue of webhook jobs: their own, so that syncs never wait behind a burst of deliveries."""
    return f"{settings.queue_name}:webhooks"
