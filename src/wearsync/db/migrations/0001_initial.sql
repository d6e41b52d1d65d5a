-- Tenants, their API keys and users.
CREATE TABLE applications (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    application_id  uuid NOT NULL REFERENCES applications ON DELETE CASCADE,
    name            text NOT NULL,
    prefix          text NOT NULL,
    key_hash        bytea NOT NULL UNIQUE,  -- sha256 of the whole key; the key itself is never stored
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    revoked_at      timestamptz
);

CREATE TABLE users (
    id              uuid PRIMARY KEY,
    application_id  uuid NOT NULL REFERENCES applications ON DELETE CASCADE,
    external_id     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (application_id, external_id)
);
CREATE INDEX users_application_idx ON users (application_id);

-- Provider names are text with a check (not an enum) so a new provider is a one-line migration.
CREATE TABLE provider_connections (
    user_id           uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider          text NOT NULL CHECK (provider IN ('garmin', 'strava', 'polar', 'suunto', 'whoop')),
    provider_user_id  text NOT NULL,
    access_token      text NOT NULL,
    refresh_token     text,
    expires_at        timestamptz,
    scopes            text[] NOT NULL DEFAULT '{}',
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, provider)
);
CREATE INDEX provider_connections_upstream_idx ON provider_connections (provider, provider_user_id);

-- The durable record of every sync; arq's job id is this id.
CREATE TYPE task_status AS ENUM ('queued', 'running', 'succeeded', 'partial', 'failed');

CREATE TABLE sync_tasks (
    id              uuid PRIMARY KEY,
    application_id  uuid NOT NULL REFERENCES applications ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider        text NOT NULL,
    mode            text NOT NULL CHECK (mode IN ('async', 'sync')),
    data_types      text[] NOT NULL,
    params          jsonb NOT NULL,
    status          task_status NOT NULL DEFAULT 'queued',
    progress        jsonb NOT NULL DEFAULT '{}',
    result          jsonb,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_tasks_user_idx ON sync_tasks (user_id, provider, created_at DESC);
CREATE INDEX sync_tasks_open_idx ON sync_tasks (status, created_at) WHERE status IN ('queued', 'running');

-- Normalized data. Every row keeps its provider, the provider's record id (unique per user) and
-- the raw upstream JSON. Units: seconds, metres, kcal, bpm, m/s, watts; times are UTC plus the
-- user's offset where the provider gives one.
CREATE TABLE workouts (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider            text NOT NULL,
    provider_record_id  text NOT NULL,
    sport               text NOT NULL,
    provider_sport      text,
    name                text,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz NOT NULL,
    utc_offset_minutes  integer,
    duration_s          double precision,
    distance_m          double precision,
    energy_kcal         double precision,
    steps               integer,
    avg_hr              double precision,
    max_hr              double precision,
    min_hr              double precision,
    avg_speed_mps       double precision,
    max_speed_mps       double precision,
    ascent_m            double precision,
    descent_m           double precision,
    max_altitude_m      double precision,
    min_altitude_m      double precision,
    avg_power_w         double precision,
    max_power_w         double precision,
    avg_cadence         double precision,
    max_cadence         double precision,
    device_name         text,
    raw                 jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider, provider_record_id)
);
CREATE INDEX workouts_user_time_idx ON workouts (user_id, start_time);

CREATE TABLE sleep_sessions (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider            text NOT NULL,
    provider_record_id  text NOT NULL,
    start_time          timestamptz NOT NULL,
    end_time            timestamptz NOT NULL,
    utc_offset_minutes  integer,
    is_nap              boolean NOT NULL DEFAULT false,
    duration_s          double precision,
    deep_s              double precision,
    light_s             double precision,
    rem_s               double precision,
    awake_s             double precision,
    score               double precision,
    avg_hr              double precision,
    min_hr              double precision,
    avg_hrv_ms          double precision,
    respiratory_rate    double precision,
    spo2_percent        double precision,
    raw                 jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider, provider_record_id)
);
CREATE INDEX sleep_sessions_user_time_idx ON sleep_sessions (user_id, start_time);

CREATE TABLE recoveries (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider            text NOT NULL,
    provider_record_id  text NOT NULL,
    recorded_at         timestamptz NOT NULL,
    utc_offset_minutes  integer,
    score               double precision,  -- 0-100
    resting_hr          double precision,
    hrv_rmssd_ms        double precision,
    spo2_percent        double precision,
    skin_temp_c         double precision,
    stress_state        text,
    raw                 jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider, provider_record_id)
);
CREATE INDEX recoveries_user_time_idx ON recoveries (user_id, recorded_at);

CREATE TABLE daily_activity (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id             uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider            text NOT NULL,
    provider_record_id  text NOT NULL,
    day                 date NOT NULL,
    steps               integer,
    energy_kcal         double precision,
    active_energy_kcal  double precision,
    distance_m          double precision,
    raw                 jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, provider, provider_record_id)
);
CREATE INDEX daily_activity_user_day_idx ON daily_activity (user_id, day);

-- Time series: one row per (type, instant). The provider's record id of a sample is its instant.
CREATE TABLE samples (
    user_id      uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    provider     text NOT NULL,
    sample_type  text NOT NULL,  -- heart_rate (bpm), steps, energy (kcal), spo2 (%), hrv_rmssd (ms)
    recorded_at  timestamptz NOT NULL,
    value        double precision NOT NULL,
    raw          jsonb NOT NULL,
    PRIMARY KEY (user_id, provider, sample_type, recorded_at)
);
