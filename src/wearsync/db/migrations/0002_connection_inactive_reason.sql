-- Why a connection stopped being active: disconnected by the client, or refused by the provider
-- (a revoked refresh token), so that whoever reads the connection knows the user must reconnect.
ALTER TABLE provider_connections ADD COLUMN inactive_reason text;
