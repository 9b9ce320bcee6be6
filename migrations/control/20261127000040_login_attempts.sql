-- Throttling of password guesses, shared by every server process (ADR 0005). A row
-- counts the attempts under one key within a fixed window: failures, plus attempts
-- still being checked (claimed before the password is hashed, so concurrent guesses
-- cannot all pass). `scope` is 'pair' (account and client address), 'address' or
-- 'account'; keys are `<hospital code or ->:<lower-case username>` for accounts, the
-- client address (IPv6 by its /64) for addresses, `<account>|<address>` for pairs.
CREATE TABLE login_attempts (
    scope        text        NOT NULL CHECK (scope IN ('pair', 'address', 'account')),
    key          text        NOT NULL,
    window_start timestamptz NOT NULL,
    attempts     integer     NOT NULL CHECK (attempts >= 0),
    PRIMARY KEY (scope, key)
);
CREATE INDEX login_attempts_window_start ON login_attempts (window_start);

-- Addresses an account signed in from: failures of the account from elsewhere (an
-- attack from many addresses) do not lock it out of these.
CREATE TABLE login_known_addresses (
    account      text        NOT NULL,
    address      text        NOT NULL,
    last_success timestamptz NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE INDEX login_known_addresses_last_success ON login_known_addresses (last_success);
