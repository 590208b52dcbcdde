//! Console sign-in: the admin access key id and secret access key (the `fleetcore` profile's)
//! typed into a form; a match opens a session named by a random cookie (`HttpOnly`,
//! `SameSite=Strict`, path `/console`), valid for [`SESSION_TTL`] or until sign-out. Sessions
//! live in memory: a restart signs everyone out.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use parking_lot::Mutex;

/// The session cookie's name.
pub const COOKIE: &str = "fleetcore_console";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most open sessions; past it the oldest is closed.
const MAX_SESSIONS: usize = 1024;

/// The credentials that sign in, and the open sessions.
pub struct Sessions {
    access_key_id: String,
    secret_access_key: String,
    open: Mutex<HashMap<String, Instant>>,
}

/// Compares without stopping at the first difference (the time taken says nothing about where
/// a guess went wrong).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Sessions opened with these credentials.
    pub fn new(access_key_id: &str, secret_access_key: &str) -> Sessions {
        Sessions {
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session if the credentials are the admin's; its cookie value.
    pub fn sign_in(&self, access_key_id: &str, secret: &str) -> Option<String> {
        let key_ok = same(access_key_id.as_bytes(), self.access_key_id.as_bytes());
        let secret_ok = same(secret.as_bytes(), self.secret_access_key.as_bytes());
        if !(key_ok & secret_ok) {
            return None;
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        let token = fleetcore_core::sigv4::hex(&bytes);
        let now = Instant::now();
        let mut open = self.open.lock();
        open.retain(|_, expires| *expires > now);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open.iter().min_by_key(|(_, e)| **e).map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(token.clone(), now + SESSION_TTL);
        Some(token)
    }

    /// Whether the request carries a live session's cookie.
    pub fn signed_in(&self, headers: &HeaderMap) -> bool {
        token(headers).is_some_and(|t| {
            self.open
                .lock()
                .get(t)
                .is_some_and(|expires| *expires > Instant::now())
        })
    }

    /// Closes the request's session, if any.
    pub fn sign_out(&self, headers: &HeaderMap) {
        if let Some(t) = token(headers) {
            self.open.lock().remove(t);
        }
    }
}

/// The session cookie's value in the request.
fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that opens `token`'s session.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_TTL.as_secs()
    )
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_admin_credentials_open_a_session_and_sign_out_closes_it() {
        let sessions = Sessions::new("AKID", "secret");
        assert!(sessions.sign_in("AKID", "wrong").is_none());
        assert!(sessions.sign_in("AKIDX", "secret").is_none());
        let token = sessions.sign_in("AKID", "secret").expect("session");
        assert_eq!(token.len(), 64);
        let mut headers = HeaderMap::new();
        let cookie = format!("other=1; {COOKIE}={token}");
        headers.insert(
            axum::http::header::COOKIE,
            cookie.parse().expect("header value"),
        );
        assert!(sessions.signed_in(&headers));
        let mut forged = HeaderMap::new();
        forged.insert(
            axum::http::header::COOKIE,
            format!("{COOKIE}=00").parse().expect("header value"),
        );
        assert!(!sessions.signed_in(&forged));
        sessions.sign_out(&headers);
        assert!(!sessions.signed_in(&headers));
    }
}
