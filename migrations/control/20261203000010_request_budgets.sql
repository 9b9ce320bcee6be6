-- What each signed-in principal spent of its request budget in a one-minute window, in
-- query-cost units (GraphQL complexity). Shared by every replica; see
-- app/src/auth/budget.rs. Rows of windows past are purged in the background.
CREATE TABLE request_budgets (
    principal    uuid        NOT NULL,
    window_start timestamptz NOT NULL,
    spent        bigint      NOT NULL,
    PRIMARY KEY (principal, window_start)
);
