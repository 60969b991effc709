-- See the Postgres migration. Times are integer microseconds since the Unix epoch.
CREATE TABLE billing_customers (
    customer_id  TEXT    PRIMARY KEY,
    company_id   TEXT    NOT NULL,
    email        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX billing_customers_company ON billing_customers (company_id, updated_at DESC);

CREATE TABLE subscriptions (
    id                     TEXT    PRIMARY KEY,
    company_id             TEXT    NOT NULL,
    customer_id            TEXT    NOT NULL,
    status                 TEXT    NOT NULL,
    plan                   TEXT,
    price_id               TEXT,
    current_period_end     INTEGER,
    trial_end              INTEGER,
    cancel_at_period_end   INTEGER NOT NULL DEFAULT 0,
    canceled_at            INTEGER,
    last_event_at          INTEGER NOT NULL,
    last_event_rank        INTEGER NOT NULL,
    last_event_id          TEXT,
    latest_invoice_id      TEXT,
    latest_invoice_status  TEXT,
    invoice_event_at       INTEGER,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
CREATE INDEX subscriptions_company ON subscriptions (company_id);

CREATE TABLE stripe_events (
    id            TEXT    PRIMARY KEY,
    type          TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    payload       TEXT    NOT NULL,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'applied', 'skipped', 'ignored')),
    detail        TEXT,
    received_at   INTEGER NOT NULL,
    processed_at  INTEGER
);

CREATE TABLE usage_reports (
    company_id    TEXT    NOT NULL,
    window_start  INTEGER NOT NULL,
    window_end    INTEGER NOT NULL,
    customer_id   TEXT    NOT NULL,
    value         INTEGER NOT NULL,
    identifier    TEXT    NOT NULL UNIQUE,
    status        TEXT    NOT NULL CHECK (status IN ('pending', 'reported', 'failed')),
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    reported_at   INTEGER,
    PRIMARY KEY (company_id, window_start)
);
