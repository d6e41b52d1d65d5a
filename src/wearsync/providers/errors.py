"""Domain errors of provider clients. Each fails one data type of a sync (the others go on and
the task ends `partial`); they carry no HTTP status of ours: the API layer maps what it must."""


class ProviderError(Exception):
    """Failure of one data type of a sync."""


class MalformedPayload(ProviderError):
    """An upstream answer we could not read."""


class ListShifted(ProviderError):
    """A list moved while it was paged: a record came back on a second page (records were added,
    or a changed one moved, ahead of pages still to come), so pages cut before and after the move
    do not join up and one record may fall between them."""


class NotSupported(ProviderError):
    """The provider's client cannot sync this data type (yet)."""


class UpstreamError(ProviderError):
    """An upstream call that failed for good: carries what a person needs to see why."""

    def __init__(self, method: str, url: str, status: int | None, body: str, reason: str = "") -> None:
        self.method, self.url, self.status, self.body = method, url, status, body
        what = f"HTTP {status}" if status is not None else reason
        super().__init__(f"{method} {url} failed: {what}" + (f": {body[:300]}" if body else ""))


class UpstreamAuthError(UpstreamError):
    """The provider refused our token (401/403)."""


class AccountUnconfirmed(ProviderError):
    """The provider does not confirm that tokens handed to us are of the account they are said to
    be of, or cannot be asked without something the caller did not give."""


class RateLimited(ProviderError):
    """The provider, or our share of its rate limit, asks for a longer wait than a worker slot
    should be held for: an async job is deferred by `retry_after_s`, a sync call fails the type.
    `provider`: whose limit it is (for metrics), when known. `fair_share`: only the tenant's (or
    user's) fair share of a contended limit asks for the wait, which ends with the window: a job
    waits it out in a new job, however often."""

    def __init__(self, message: str, retry_after_s: float, provider: str = "", fair_share: bool = False) -> None:
        self.retry_after_s, self.provider, self.fair_share = retry_after_s, provider, fair_share
        super().__init__(f"{message}; retry in {retry_after_s:.0f}s")


class JobSliceDone(RateLimited):
    """The job stored its share of pages (WEARSYNC_JOB_MAX_PAGES), or its worker is stopping: the
    rest of the task goes to the back of the queue, so one long history does not hold a worker
    while other users wait, and a deploy does not cut a job short mid-page."""

    def __init__(self, pages: int, stopping: bool = False) -> None:
        why = "the worker is stopping" if stopping else f"stored {pages} pages"
        super().__init__(f"{why}; the rest follows in a new job", 0.0)


class ConnectionRevoked(ProviderError):
    """The provider refused the connection's refresh token: the connection is now inactive and the
    user must connect again."""


class TooManyItems(Exception):
    """A webhook delivery carrying more than its provider ever sends in one (answered 413)."""


class WebhookRejected(Exception):
    """A webhook delivery whose signature or verify token is bad or missing (answered 401)."""
