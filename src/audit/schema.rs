//! The audit schema and its migrations, for both databases. The version
//! applied is in `harbormaster_schema`; at start every newer migration runs
//! in one transaction. Add a migration by appending to both lists (never
//! edit an applied one).

/// SQLite migrations, in order; version = index + 1.
pub const SQLITE: &[&str] = &[r#"
CREATE TABLE mcp_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    client TEXT NOT NULL,
    front TEXT NOT NULL,
    session TEXT,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX mcp_calls_ts ON mcp_calls (ts);
CREATE TABLE admin_actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    uid TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    result TEXT NOT NULL,
    peer TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE INDEX admin_actions_ts ON admin_actions (ts);
"#];

/// PostgreSQL migrations, in order; version = index + 1.
pub const POSTGRES: &[&str] = &[r#"
CREATE TABLE mcp_calls (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    ts TIMESTAMPTZ NOT NULL,
    client TEXT NOT NULL,
    front TEXT NOT NULL,
    session TEXT,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    status TEXT NOT NULL,
    latency_ms DOUBLE PRECISION NOT NULL,
    request_bytes BIGINT NOT NULL,
    response_bytes BIGINT NOT NULL,
    error TEXT
);
CREATE INDEX mcp_calls_ts ON mcp_calls (ts);
CREATE TABLE admin_actions (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    ts TIMESTAMPTZ NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    result TEXT NOT NULL,
    peer TEXT NOT NULL,
    via TEXT NOT NULL
);
CREATE INDEX admin_actions_ts ON admin_actions (ts);
"#];

/// The table that holds the applied version (one row).
pub const VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS harbormaster_schema (version INTEGER NOT NULL)";
