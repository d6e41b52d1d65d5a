-- A user's id as the API shows it is unique per application, not across them: a taken id in one
-- application is free in another (no existence oracle, no squatting). users.id stays the key every
-- table refers to; public_id is the id of the API, within the application. A new user's key is its
-- public id where no other user has that key, else a random one.
ALTER TABLE users ADD COLUMN public_id uuid;
UPDATE users SET public_id = id;
ALTER TABLE users
    ALTER COLUMN public_id SET NOT NULL,
    ADD CONSTRAINT users_public_id_key UNIQUE (application_id, public_id);
