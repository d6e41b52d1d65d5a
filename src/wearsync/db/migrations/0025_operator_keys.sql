-- An operator key manages applications and API keys over the API (api/admin.py); any other key
-- reaches only its own application's users and data.
ALTER TABLE api_keys ADD COLUMN operator boolean NOT NULL DEFAULT false;
