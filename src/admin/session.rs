//! Who may change things over the admin TCP listener: a bearer token from
//! `[admin] tokens`, or a dashboard session.
//!
//! A session starts from a one-time login URL that only a caller of
//! `admin.sock` can mint (`harbormaster dashboard`): valid for 60 s, used
//! once. Redeeming it sets an `HttpOnly`, `SameSite=Strict` cookie. A
//! mutating call with the cookie must also carry `X-Harbormaster: 1`: a
//! cross-site form cannot set a header, and a cross-site `fetch` that does
//! needs a CORS preflight we never grant. No secret is written to a file;
//! sessions end with the process.
//!
//! [`check`] is the one place a TCP mutation is allowed or refused, and
//! [`Sessions::redeem`] the one place a login happens: the audit log hooks
//! in at those two.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use tokio::time::Instant;

/// How long a login URL may wait to be opened.
pub const LOGIN_TTL: Duration = Duration::from_secs(60);
/// How long a dashboard session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "harbormaster_session";
/// The header the dashboard sends with every mutating call.
pub const HEADER: &str = "x-harbormaster";

/// Login tokens and sessions, each with its expiry.
#[derive(Debug, Default)]
pub struct Sessions {
    logins: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

/// How a TCP caller proved who it is (recorded as `via` in the audit log).
pub use crate::audit::Via;

/// Why a TCP mutation is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No valid token nor session: 401.
    Unauthenticated,
    /// A valid session cookie without `X-Harbormaster: 1` (a cross-site
    /// form, or a script that is not the dashboard): 403.
    MissingHeader,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::MissingHeader => StatusCode::FORBIDDEN,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthorized: over TCP, mutating calls need Authorization: Bearer <one of [admin] tokens>, or a dashboard session (`harbormaster dashboard`); the CLI uses admin.sock instead",
            Self::MissingHeader => "forbidden: dashboard calls must send the header X-Harbormaster: 1",
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// 32 random bytes from the kernel, as hex.
fn secret() -> String {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("the kernel's random source failed: {e}"),
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// A new one-time login token (valid [`LOGIN_TTL`]).
    pub fn mint_login(&self, now: Instant) -> String {
        let token = secret();
        let mut logins = lock(&self.logins);
        logins.retain(|_, expiry| *expiry > now);
        logins.insert(token.clone(), now + LOGIN_TTL);
        token
    }

    /// Uses up a login token: a new session id if it was valid and unused.
    pub fn redeem(&self, token: &str, now: Instant) -> Option<String> {
        let expiry = lock(&self.logins).remove(token)?;
        if expiry <= now {
            return None;
        }
        let session = secret();
        let mut sessions = lock(&self.sessions);
        sessions.retain(|_, expiry| *expiry > now);
        sessions.insert(session.clone(), now + SESSION_TTL);
        Some(session)
    }

    pub fn is_valid(&self, session: &str, now: Instant) -> bool {
        lock(&self.sessions)
            .get(session)
            .is_some_and(|expiry| *expiry > now)
    }
}

/// The `Set-Cookie` value for a new session.
pub fn cookie(session: &str) -> String {
    format!(
        "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// Whether a TCP call may change things: a configured bearer token
/// (compared in constant time), or a live session plus `X-Harbormaster: 1`.
pub fn check(
    headers: &HeaderMap,
    tokens: &[String],
    sessions: &Sessions,
    now: Instant,
) -> Result<Via, Refusal> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(given) = given {
        // Constant time per candidate (`subtle`); how many tokens there are
        // is not a secret.
        let same = tokens.iter().fold(false, |found, t| {
            found
                | bool::from(subtle::ConstantTimeEq::ct_eq(
                    given.as_bytes(),
                    t.as_bytes(),
                ))
        });
        if same {
            return Ok(Via::Token);
        }
    }
    match session_cookie(headers) {
        Some(s) if sessions.is_valid(s, now) => {
            let header_set = headers.get(HEADER).is_some_and(|v| v.as_bytes() == b"1");
            if header_set {
                Ok(Via::Session)
            } else {
                Err(Refusal::MissingHeader)
            }
        }
        _ => Err(Refusal::Unauthenticated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[tokio::test(start_paused = true)]
    async fn a_login_token_works_once_and_only_for_60_seconds() {
        let s = Sessions::default();
        let now = Instant::now();
        let token = s.mint_login(now);
        assert_eq!(token.len(), 64);
        assert!(s.redeem(&token, now).is_some());
        assert!(s.redeem(&token, now).is_none(), "single use");
        let late = s.mint_login(now);
        assert!(s.redeem(&late, now + LOGIN_TTL).is_none(), "expired");
        assert!(s.redeem("guess", now).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_needs_the_header_and_a_token_does_not() {
        let s = Sessions::default();
        let now = Instant::now();
        let session = s.redeem(&s.mint_login(now), now).unwrap();
        let cookie = format!("other=1; {COOKIE}={session}");
        let tokens = vec!["t0ken".to_string()];
        let with = headers(&[("cookie", &cookie), ("x-harbormaster", "1")]);
        assert_eq!(check(&with, &tokens, &s, now), Ok(Via::Session));
        let without = headers(&[("cookie", &cookie)]);
        assert_eq!(
            check(&without, &tokens, &s, now),
            Err(Refusal::MissingHeader)
        );
        let bearer = headers(&[("authorization", "Bearer t0ken")]);
        assert_eq!(check(&bearer, &tokens, &s, now), Ok(Via::Token));
        let wrong = headers(&[("authorization", "Bearer nope"), ("x-harbormaster", "1")]);
        assert_eq!(
            check(&wrong, &tokens, &s, now),
            Err(Refusal::Unauthenticated)
        );
        let expired = headers(&[("cookie", &cookie), ("x-harbormaster", "1")]);
        assert_eq!(
            check(&expired, &tokens, &s, now + SESSION_TTL),
            Err(Refusal::Unauthenticated)
        );
    }
}
