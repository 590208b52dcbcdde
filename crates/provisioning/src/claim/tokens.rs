//! Certificate ownership tokens: opaque, random, bound to the certificate they were issued
//! with, single-use and short-lived (AWS: one hour). Kept in memory: a token outliving a
//! restart is not needed (the device asks for a new certificate), and none is ever written
//! to disk. Bounded: when [`TokenBook::capacity`] live tokens exist, new ones are refused
//! (the device is told to retry) rather than letting memory grow.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::ProvisioningError;

struct Entry {
    certificate_id: String,
    expires: Instant,
}

/// The live ownership tokens.
pub struct TokenBook {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    capacity: usize,
}

fn random_token() -> Result<String, ProvisioningError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| ProvisioningError::Internal(format!("no randomness: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl TokenBook {
    /// A book whose tokens live `ttl`, holding at most `capacity` at once.
    pub fn new(ttl: Duration, capacity: usize) -> TokenBook {
        TokenBook {
            entries: Mutex::new(HashMap::new()),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// Most live tokens.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// A new token for `certificate_id`.
    pub fn issue(&self, certificate_id: &str) -> Result<String, ProvisioningError> {
        let token = random_token()?;
        let now = Instant::now();
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                return Err(ProvisioningError::Throttled(
                    "too many certificate ownership tokens are outstanding; retry later".into(),
                ));
            }
        }
        entries.insert(
            token.clone(),
            Entry {
                certificate_id: certificate_id.to_string(),
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// Takes `token` out (so no one else can use it meanwhile) and returns its certificate.
    /// Unknown, used and expired tokens are refused alike.
    pub fn take(&self, token: &str) -> Result<(String, Instant), ProvisioningError> {
        if token.is_empty() {
            return Err(ProvisioningError::Token(
                "Certificate ownership token cannot be empty.".into(),
            ));
        }
        let entry = self.entries.lock().remove(token);
        match entry {
            Some(e) if e.expires > Instant::now() => Ok((e.certificate_id, e.expires)),
            Some(_) => Err(ProvisioningError::Token(
                "The certificate ownership token has expired.".into(),
            )),
            None => Err(ProvisioningError::Token(
                "The certificate ownership token is invalid or has already been used.".into(),
            )),
        }
    }

    /// Puts back a token taken by [`TokenBook::take`] whose provisioning failed, so the device
    /// can retry (with other parameters) until it expires.
    pub fn put_back(&self, token: &str, certificate_id: &str, expires: Instant) {
        self.entries.lock().insert(
            token.to_string(),
            Entry {
                certificate_id: certificate_id.to_string(),
                expires,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_single_use_and_expire() {
        let book = TokenBook::new(Duration::from_secs(60), 2);
        let t = book.issue("cert-a").expect("issue");
        assert_eq!(t.len(), 64);
        assert_eq!(book.take(&t).expect("first use").0, "cert-a");
        assert!(matches!(book.take(&t), Err(ProvisioningError::Token(_))));
        assert!(matches!(book.take(""), Err(ProvisioningError::Token(_))));

        let expired = TokenBook::new(Duration::ZERO, 2);
        let t = expired.issue("cert-b").expect("issue");
        let err = expired.take(&t).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn the_book_is_bounded() {
        let book = TokenBook::new(Duration::from_secs(60), 2);
        book.issue("a").expect("1");
        book.issue("b").expect("2");
        assert!(matches!(
            book.issue("c"),
            Err(ProvisioningError::Throttled(_))
        ));
    }
}
