//! Configuration: the TOML file users write, validated into typed values.
//!
//! Loading runs in three steps, all without side effects (no sockets, no
//! processes), so `check`, startup and reload share exactly the same code:
//! 1. `document`: TOML syntax, `${NAME}` interpolation, serde type checks;
//! 2. `validate*`: every value and every cross-app rule, into [`Config`];
//! 3. all problems are returned together, each with `file:line:col`.
//!
//! The keys and defaults are the contract in `shared/config-contract.toml`
//! and `docs/configuration.md`.

mod audit;
pub mod diff;
mod document;
mod error;
mod mcp;
mod model;
mod raw;
mod raw_mcp;
pub mod tls;
mod validate;
mod validate_app;
mod validate_mcp;
mod values;
pub mod watch;

use std::path::{Path, PathBuf};

pub use audit::{AuditConfig, AuditSink};
pub use error::{ConfigError, ConfigErrors, LoadError};
pub use mcp::*;
pub use model::*;
pub use tls::{CertificateFiles, TlsConfig, TlsVersion};

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    from_str(&text, path).map_err(LoadError::Invalid)
}

/// Validates `text` as if it were the file at `path`, reading `${NAME}` from
/// the process environment.
pub fn from_str(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    from_str_with_env(text, path, &|name| std::env::var(name).ok())
}

/// Validates `text` as if it were the file at `path`; `env` answers `${NAME}`.
pub fn from_str_with_env(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let source = absolute(path);
    let mut rep = error::Reporter::new(path, text);
    let parsed = document::parse(text, env, &mut rep);
    let config = parsed.map(|parsed| {
        let mut checker = values::Checker {
            rep: &mut rep,
            dropped: &parsed.dropped,
            base_dir: source.parent().map(Path::to_path_buf).unwrap_or_default(),
        };
        checker.config(&parsed.raw, source.clone())
    });
    let errors = rep.finish();
    match config {
        Some(config) if errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(errors)),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
