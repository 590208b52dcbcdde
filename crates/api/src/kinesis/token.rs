//! Opaque tokens the Kinesis API hands out: shard iterators and pagination tokens. A token is
//! base64 of what it stands for (stream, shard, position, issue time) followed by an HMAC-SHA256
//! tag under a server secret, so a client can neither forge one nor move it to another shard;
//! it expires a while after it was issued.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How long a shard iterator stays valid (Kinesis: 5 minutes).
pub const ITERATOR_TTL: Duration = Duration::from_secs(300);

/// How long a ListShards / ListStreams `NextToken` stays valid (Kinesis: 300 seconds).
pub const NEXT_TOKEN_TTL: Duration = Duration::from_secs(300);

const TAG_BYTES: usize = 16;
const HEADER_BYTES: usize = 1 + 8 + 4 + 16;

/// What a token is for; a token of one kind is refused where another is expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TokenKind {
    /// A shard iterator.
    Iterator = 1,
    /// A ListShards `NextToken`.
    ShardPage = 2,
    /// A ListStreams `NextToken`.
    StreamPage = 3,
}

/// The content of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// What it is for.
    pub kind: TokenKind,
    /// The stream it belongs to (for ListStreams: the last name listed).
    pub stream: String,
    /// The shard (for ListShards: the last shard listed).
    pub shard: u32,
    /// The read position (iterators).
    pub position: u128,
    /// When it was issued, in milliseconds since the Unix epoch.
    pub issued_ms: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of ours (or of this kind), or tampered with.
    Invalid,
    /// Older than its time to live.
    Expired,
}

/// Seals and opens tokens with one secret key.
pub struct TokenCodec {
    key: Vec<u8>,
    iterator_ttl: Duration,
}

impl TokenCodec {
    /// A codec keyed with `key`, whose iterators live [`ITERATOR_TTL`].
    pub fn new(key: &[u8]) -> TokenCodec {
        TokenCodec {
            key: key.to_vec(),
            iterator_ttl: ITERATOR_TTL,
        }
    }

    /// A codec keyed with a key derived from `secret` (the admin secret key): tokens stay
    /// valid across restarts and cannot be made without the secret.
    pub fn from_secret(secret: &str) -> TokenCodec {
        let mut mac =
            <Hmac<Sha256>>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
        mac.update(b"fleetcore kinesis tokens v1");
        TokenCodec::new(&mac.finalize().into_bytes())
    }

    /// Another iterator lifetime (tests of expiry).
    pub fn with_iterator_ttl(mut self, ttl: Duration) -> TokenCodec {
        self.iterator_ttl = ttl;
        self
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The text of `token`.
    pub fn seal(&self, token: &Token) -> String {
        let mut body = Vec::with_capacity(HEADER_BYTES + token.stream.len() + TAG_BYTES);
        body.push(token.kind as u8);
        body.extend_from_slice(&token.issued_ms.to_be_bytes());
        body.extend_from_slice(&token.shard.to_be_bytes());
        body.extend_from_slice(&token.position.to_be_bytes());
        body.extend_from_slice(token.stream.as_bytes());
        let tag = self.tag(&body);
        body.extend_from_slice(&tag);
        STANDARD.encode(body)
    }

    /// The token behind `text`, if it is a genuine, unexpired token of `kind`.
    pub fn open(&self, text: &str, kind: TokenKind, now: SystemTime) -> Result<Token, TokenError> {
        let bytes = STANDARD.decode(text).map_err(|_| TokenError::Invalid)?;
        if bytes.len() < HEADER_BYTES + TAG_BYTES {
            return Err(TokenError::Invalid);
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| TokenError::Invalid)?;
        if body[0] != kind as u8 {
            return Err(TokenError::Invalid);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let issued_ms = u64_at(1);
        let mut shard = [0u8; 4];
        shard.copy_from_slice(&body[9..13]);
        let mut position = [0u8; 16];
        position.copy_from_slice(&body[13..29]);
        let stream = std::str::from_utf8(&body[HEADER_BYTES..])
            .map_err(|_| TokenError::Invalid)?
            .to_string();
        let ttl = match kind {
            TokenKind::Iterator => self.iterator_ttl,
            TokenKind::ShardPage | TokenKind::StreamPage => NEXT_TOKEN_TTL,
        };
        let age = millis(now).saturating_sub(issued_ms);
        if u128::from(age) > ttl.as_millis() {
            return Err(TokenError::Expired);
        }
        Ok(Token {
            kind,
            stream,
            shard: u32::from_be_bytes(shard),
            position: u128::from_be_bytes(position),
            issued_ms,
        })
    }
}

/// Milliseconds since the Unix epoch.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token(now: SystemTime) -> Token {
        Token {
            kind: TokenKind::Iterator,
            stream: "orders".into(),
            shard: 3,
            position: u128::MAX - 7,
            issued_ms: millis(now),
        }
    }

    #[test]
    fn tokens_round_trip_and_expire() {
        let codec = TokenCodec::new(b"secret");
        let now = SystemTime::now();
        let text = codec.seal(&token(now));
        assert!(
            text.len() <= 512,
            "Kinesis iterators are at most 512 characters"
        );
        assert_eq!(codec.open(&text, TokenKind::Iterator, now), Ok(token(now)));
        assert_eq!(
            codec.open(&text, TokenKind::Iterator, now + Duration::from_secs(301)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            codec.open(&text, TokenKind::ShardPage, now),
            Err(TokenError::Invalid)
        );
        let short = TokenCodec::new(b"secret").with_iterator_ttl(Duration::from_secs(1));
        assert_eq!(
            short.open(&text, TokenKind::Iterator, now + Duration::from_secs(2)),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_or_foreign_tokens_are_invalid() {
        let codec = TokenCodec::new(b"secret");
        let now = SystemTime::now();
        let other = TokenCodec::new(b"other").seal(&token(now));
        assert_eq!(
            codec.open(&other, TokenKind::Iterator, now),
            Err(TokenError::Invalid)
        );
        for bad in ["", "!!!", "AAAA", &STANDARD.encode([1u8; 60])] {
            assert_eq!(
                codec.open(bad, TokenKind::Iterator, now),
                Err(TokenError::Invalid)
            );
        }
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_caught(flip in 0usize..400, stream in "[a-zA-Z0-9_.-]{1,128}") {
            let codec = TokenCodec::new(b"k");
            let now = SystemTime::now();
            let mut t = token(now);
            t.stream = stream;
            let mut bytes = STANDARD.decode(codec.seal(&t)).expect("b64");
            let at = flip % (bytes.len() * 8);
            bytes[at / 8] ^= 1 << (at % 8);
            prop_assert_eq!(
                codec.open(&STANDARD.encode(bytes), TokenKind::Iterator, now),
                Err(TokenError::Invalid)
            );
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,600}") {
            let codec = TokenCodec::new(b"k");
            let _ = codec.open(&text, TokenKind::Iterator, SystemTime::now());
        }
    }
}
