-- The latest tick enqueued per cron entry, so ticks that fell while no process ran can be
-- caught up at start (per entry: none, the last, or all; see config/default.toml).
CREATE TABLE cron_ticks (
    name       TEXT   PRIMARY KEY,
    last_tick  INTEGER NOT NULL
);
