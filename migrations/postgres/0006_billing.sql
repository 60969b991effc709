-- Billing: voxline's local copy of what Stripe knows (Stripe is the source of truth for money),
-- the events it was told, and the usage it reported.

-- Which company a Stripe customer pays for (from the customer's `company_id` metadata, a
-- subscription's, or the checkout session's `client_reference_id`), and where billing mail goes.
CREATE TABLE billing_customers (
    customer_id  TEXT        PRIMARY KEY,
    company_id   TEXT        NOT NULL,
    email        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX billing_customers_company ON billing_customers (company_id, updated_at DESC);

-- One row per Stripe subscription. `last_event_at`/`last_event_rank` order the writes: an event
-- (Stripe's `created`, whole seconds) or a reconciliation (when its listing started) only
-- replaces the row when it is newer; see `voxline_domain::billing::decide`.
CREATE TABLE subscriptions (
    id                     TEXT        PRIMARY KEY,
    company_id             TEXT        NOT NULL,
    customer_id            TEXT        NOT NULL,
    status                 TEXT        NOT NULL,
    plan                   TEXT,
    price_id               TEXT,
    current_period_end     TIMESTAMPTZ,
    trial_end              TIMESTAMPTZ,
    cancel_at_period_end   BOOLEAN     NOT NULL DEFAULT false,
    canceled_at            TIMESTAMPTZ,
    last_event_at          TIMESTAMPTZ NOT NULL,
    last_event_rank        SMALLINT    NOT NULL,
    last_event_id          TEXT,
    -- The newest invoice event: paid, payment_failed or payment_action_required.
    latest_invoice_id      TEXT,
    latest_invoice_status  TEXT,
    invoice_event_at       TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_company ON subscriptions (company_id);

-- Every Stripe event delivered to the webhook, once (its id is the key: a redelivery changes
-- nothing). `pending` until the billing worker applied (or skipped) it; `ignored` for types
-- voxline does not handle.
CREATE TABLE stripe_events (
    id            TEXT        PRIMARY KEY,
    type          TEXT        NOT NULL,
    created       TIMESTAMPTZ NOT NULL,
    payload       JSONB       NOT NULL,
    status        TEXT        NOT NULL CHECK (status IN ('pending', 'applied', 'skipped', 'ignored')),
    detail        TEXT,
    received_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at  TIMESTAMPTZ
);

-- Analysed seconds reported to Stripe's billing meter, one row per company and window: the
-- `identifier` (also the Idempotency-Key) is fixed when the row is made, so a retry re-sends the
-- same event and Stripe counts it once; `reported` rows are never sent again.
CREATE TABLE usage_reports (
    company_id    TEXT             NOT NULL,
    window_start  TIMESTAMPTZ      NOT NULL,
    window_end    TIMESTAMPTZ      NOT NULL,
    customer_id   TEXT             NOT NULL,
    value         BIGINT           NOT NULL,
    identifier    TEXT             NOT NULL UNIQUE,
    status        TEXT             NOT NULL CHECK (status IN ('pending', 'reported', 'failed')),
    attempts      INTEGER          NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    TIMESTAMPTZ      NOT NULL DEFAULT now(),
    reported_at   TIMESTAMPTZ,
    PRIMARY KEY (company_id, window_start)
);
