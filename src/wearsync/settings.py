"""Configuration from the environment; read once by whoever starts a process, never at import."""

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import AliasChoices, Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from wearsync.crypto import TokenCipher, TokenKeyError, parse_cipher
from wearsync.redirects import AllowedRedirect, parse_allowlist

PROVIDER_NAMES = ("garmin", "strava", "polar", "suunto", "whoop")
# Where stored rows come from (their `provider`): the providers, and the files users import.
IMPORT_SOURCES = ("apple_health",)
DATA_SOURCES = (*PROVIDER_NAMES, *IMPORT_SOURCES)
WEBHOOK_PATH_SECRET = "^(|[A-Za-z0-9_-]{16,128})$"  # unset, or hard to guess and one URL path segment


@dataclass(frozen=True)
class ProviderSettings:
    """What a provider client needs to reach one upstream: its hosts and our app's credentials."""

    api_url: str
    auth_url: str
    client_id: str
    client_secret: str
    subscription_key: str = ""
    authorize_url: str = ""
    # The secret last segment of the webhook's URL, for a provider that signs nothing (Garmin, Strava).
    webhook_path_secret: str = ""  # the host of the page a user's browser is sent to, to allow our app


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

    garmin_api_url: str = "https://apis.garmin.com"
    garmin_auth_url: str = "https://diauth.garmin.com"
    garmin_authorize_url: str = "https://connect.garmin.com"
    garmin_client_id: str = ""
    garmin_client_secret: str = ""
    garmin_rate_limits: str | None = None  # e.g. "100/900,1000/86400"; default: documented limits
    # Garmin and Strava sign no webhook: theirs are at /api/v1/webhooks/P/<secret>, a random string of
    # yours (16 or more URL-safe characters) in the URL registered at the provider; unset, P's
    # webhook answers 404 to every delivery.
    garmin_webhook_path_secret: str = Field("", pattern=WEBHOOK_PATH_SECRET)
    garmin_backfill_days: int = Field(30, ge=1, le=3650)  # a sync without a range asks for this many days
    # How long a Garmin sync waits, running, for the deliveries of the backfills it asked for.
    garmin_backfill_wait_s: float = Field(86400, ge=0)

    strava_api_url: str = "https://www.strava.com"
    strava_auth_url: str = "https://www.strava.com"
    strava_authorize_url: str = "https://www.strava.com"
    strava_client_id: str = ""
    strava_client_secret: str = ""
    strava_rate_limits: str | None = None  # e.g. "100/900,1000/86400"; default: documented limits
    strava_webhook_path_secret: str = Field("", pattern=WEBHOOK_PATH_SECRET)  # see garmin_webhook_path_secret
    strava_page_concurrency: int = Field(4, ge=1, le=32)
    strava_verify_token: str = ""  # what we gave Strava when subscribing to its webhook
    # The id Strava gave our push subscription: an event naming another is refused (401).
    strava_subscription_id: str = ""

    polar_api_url: str = "https://www.polaraccesslink.com"
    polar_auth_url: str = "https://polarremote.com"
    polar_authorize_url: str = "https://flow.polar.com"
    polar_client_id: str = ""
    polar_client_secret: str = ""
    polar_webhook_secret: str = ""  # the signature secret Polar returned when the webhook was created
    polar_rate_limits: str | None = None  # e.g. "100/900,1000/86400"; default: documented limits

    suunto_api_url: str = "https://cloudapi.suunto.com"
    suunto_auth_url: str = "https://cloudapi-oauth.suunto.com"
    suunto_authorize_url: str = "https://cloudapi-oauth.suunto.com"
    suunto_client_id: str = ""
    suunto_client_secret: str = ""
    suunto_rate_limits: str | None = None  # e.g. "100/900,1000/86400"; default: documented limits
    suunto_subscription_key: str = ""
    suunto_webhook_secret: str = ""  # signs Suunto's workout notifications (Whoop signs with its client secret)
    # How far back a Suunto 24/7 sync with since=0 reaches ("all available data").
    suunto_247_history_days: int = Field(90, ge=1, le=3650)
    suunto_page_concurrency: int = Field(4, ge=1, le=32)

    whoop_api_url: str = "https://api.prod.whoop.com"
    whoop_auth_url: str = "https://api.prod.whoop.com"
    whoop_authorize_url: str = "https://api.prod.whoop.com"
    whoop_client_id: str = ""
    whoop_client_secret: str = ""
    whoop_rate_limits: str | None = None  # e.g. "100/900,1000/86400"; default: documented limits
    # Whoop pages a range sequentially (next tokens), so a sync cuts its reach into sub-ranges
    # paged side by side.
    whoop_history_days: int = Field(730, ge=1, le=3650)
    whoop_range_days: int = Field(90, ge=1, le=365)
    whoop_page_concurrency: int = Field(4, ge=1, le=32)

    @field_validator(*(f"{name}_rate_limits" for name in PROVIDER_NAMES))
    @classmethod
    def _check_rate_limits(cls, value: str | None) -> str | None:
        if value is not None:
            from wearsync.providers.ratelimit import parse_rate_limits

            parse_rate_limits(value)
        return value

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
        """A copy, with what it holds parsed again (a copy is not validated)."""
        return super().model_copy(update=update, deep=deep)._parse()

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

    def provider(self, name: str) -> ProviderSettings:
        return ProviderSettings(
            api_url=getattr(self, f"{name}_api_url").rstrip("/"),
            auth_url=getattr(self, f"{name}_auth_url").rstrip("/"),
            client_id=getattr(self, f"{name}_client_id"),
            client_secret=getattr(self, f"{name}_client_secret"),
            subscription_key=getattr(self, f"{name}_subscription_key", ""),
            authorize_url=getattr(self, f"{name}_authorize_url").rstrip("/"),
            webhook_path_secret=getattr(self, f"{name}_webhook_path_secret", ""),
        )

    def webhook_path(self, name: str) -> str:
        return webhook_path(name, self.provider(name).webhook_path_secret)


def webhook_path(provider: str, path_secret: str = "") -> str:
    """The path of a provider's webhook: what to register at the provider, after our host."""
    return f"/api/v1/webhooks/{provider}" + (f"/{path_secret}" if path_secret else "")


def webhook_queue_name(settings: Settings) -> str:
    """The queue of webhook jobs: their own, so that syncs never wait behind a burst of deliveries."""
    return f"{settings.queue_name}:webhooks"
