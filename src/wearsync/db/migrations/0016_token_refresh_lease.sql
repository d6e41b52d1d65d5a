-- One token refresh per connection at a time, without holding a database connection (or a row
-- lock) while the provider answers: the refresher takes a lease on the row for a bounded time
-- (refresh_lease: who, refresh_lease_until: till when), asks the provider, then saves the tokens and
-- clears the lease in one statement. Others wait for the lease to go, then use the saved tokens;
-- a lease whose holder died expires.
ALTER TABLE provider_connections ADD COLUMN refresh_lease uuid, ADD COLUMN refresh_lease_until timestamptz;
