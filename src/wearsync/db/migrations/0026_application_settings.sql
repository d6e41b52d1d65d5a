-- Per-application settings (api/admin.py): where its OAuth flows may send users back (NULL: the
-- operator's WEARSYNC_OAUTH_REDIRECT_ALLOWLIST), and which providers its users may connect and
-- sync (NULL: every configured one).
ALTER TABLE applications ADD COLUMN redirect_allowlist text[], ADD COLUMN providers text[];
