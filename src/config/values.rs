//! Checks for single values: durations, counts, addresses, signals, paths.
//!
//! Each helper reports its own error (with the value's position) and returns a
//! usable fallback, so validation can go on and find the next problem.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::error::{did_you_mean, Reporter};
use super::raw::S;

/// Walks the raw config and reports problems; owned by one validation run.
pub(crate) struct Checker<'r, 'a> {
    pub rep: &'r mut Reporter<'a>,
    /// Keys whose wrong value was already reported while parsing.
    pub dropped: &'r HashSet<String>,
    /// The config file's folder: relative paths resolve against it.
    pub base_dir: PathBuf,
}

/// Whether a zero duration makes sense for a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zero {
    Allowed,
    Rejected,
}

impl Checker<'_, '_> {
    pub fn was_dropped(&self, key: &str) -> bool {
        self.dropped.contains(key)
    }

    /// Whether a key inside `table` was dropped (so the table may look incomplete).
    pub fn dropped_inside(&self, table: &str) -> bool {
        self.dropped.iter().any(|k| {
            k.strip_prefix(table)
                .is_some_and(|rest| rest.starts_with('.'))
        })
    }

    pub fn duration(
        &mut self,
        value: Option<&S<String>>,
        key: &str,
        default: Duration,
        zero: Zero,
    ) -> Duration {
        let Some(value) = value else { return default };
        match humantime::parse_duration(value.get_ref().trim()) {
            Ok(d) if d.is_zero() && zero == Zero::Rejected => {
                self.rep.error(
                    value.span(),
                    key,
                    "must be greater than 0",
                    Some(format!(
                        "write a positive duration such as \"{}\"",
                        humantime::format_duration(default)
                    )),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.rep.error(
                    value.span(),
                    key,
                    format!("invalid duration \"{}\": {e}", value.get_ref()),
                    Some("write a number with a unit, such as \"250ms\", \"30s\" or \"5m\"".into()),
                );
                default
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int(
        &mut self,
        value: Option<&S<i64>>,
        key: &str,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        let Some(value) = value else { return default };
        let v = *value.get_ref();
        if v < i64::from(min) || v > i64::from(max) {
            let what = if v < i64::from(min) && min > 0 {
                format!("must be at least {min}, got {v}")
            } else {
                format!("must be between {min} and {max}, got {v}")
            };
            self.rep.error(
                value.span(),
                key,
                what,
                Some(format!("use a whole number from {min} to {max}")),
            );
            return default;
        }
        v as u32
    }

    /// A count or threshold that must be at least 1.
    pub fn positive(&mut self, value: Option<&S<i64>>, key: &str, default: u32) -> NonZeroU32 {
        let v = self.int(value, key, default, 1, 1_000_000);
        NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
    }

    pub fn socket_addr(&mut self, value: &S<String>, key: &str) -> Option<SocketAddr> {
        let text = value.get_ref().trim();
        match SocketAddr::from_str(text) {
            Ok(addr) => Some(addr),
            Err(_) => {
                let hint = match text.rsplit_once(':') {
                    Some(("localhost", port)) => format!("use an IP address: \"127.0.0.1:{port}\""),
                    _ => "write IP:PORT, such as \"127.0.0.1:8080\" or \"[::1]:8080\"".to_string(),
                };
                self.rep.error(
                    value.span(),
                    key,
                    format!("invalid address \"{text}\""),
                    Some(hint),
                );
                None
            }
        }
    }

    pub fn signal(&mut self, value: Option<&S<String>>, key: &str) -> Signal {
        let Some(value) = value else {
            return Signal::SIGTERM;
        };
        let upper = value.get_ref().trim().to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        match Signal::from_str(&name) {
            Ok(sig) => sig,
            Err(_) => {
                let names: Vec<&str> = Signal::iterator().map(|s| s.as_str()).collect();
                let hint = match did_you_mean(&name, names.iter().copied()) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => "use a signal name such as \"SIGTERM\", \"SIGINT\", \"SIGQUIT\" or \"SIGUSR1\"".into(),
                };
                self.rep.error(
                    value.span(),
                    key,
                    format!("invalid signal name \"{}\"", value.get_ref()),
                    Some(hint),
                );
                Signal::SIGTERM
            }
        }
    }

    /// A URL path for requests harbormaster makes itself (probes, hooks).
    pub fn request_path(&mut self, value: &S<String>, key: &str) -> String {
        let path = value.get_ref();
        if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
            self.rep.error(
                value.span(),
                key,
                format!("invalid path \"{path}\""),
                Some(
                    "write a path that starts with '/' and has no spaces, such as \"/health\""
                        .into(),
                ),
            );
        }
        path.clone()
    }

    /// Resolves `value` against the config file's folder.
    pub fn resolve(&self, value: &str) -> PathBuf {
        let p = Path::new(value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}
