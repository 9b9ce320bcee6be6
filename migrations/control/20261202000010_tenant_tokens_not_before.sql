-- Closing a hospital revokes every access token issued before the closure, also after
-- the hospital is reopened: a token is accepted only if it was issued at or after
-- `tokens_not_before`. Set when the hospital is closed; NULL for a hospital never closed.
ALTER TABLE tenants ADD COLUMN tokens_not_before timestamptz;
