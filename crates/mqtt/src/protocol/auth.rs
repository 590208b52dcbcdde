//! AUTH (MQTT 5 §3.15), for enhanced authentication exchanges. It does not exist in 3.1.1: the
//! fixed header rejects type 15 there and the encoder writes nothing for 3.1.1.
//!
//! Remaining length 0 means reason 0 without properties. The decoder also accepts a lone reason
//! code, as for DISCONNECT; the encoder always writes the property length after a non-zero
//! reason, the form every peer accepts.

use super::header::kind;
use super::primitives::{Reader, Sink, protocol_error};
use super::properties::{self, Property, PropertyReader, PropertySet, id, not_allowed, set_once};
use super::{Auth, AuthProperties, DecodeError, Encode, ProtocolVersion, reason};

/// Reason codes AUTH may carry (MQTT 5 §3.15.2.1).
fn allowed(code: u8) -> bool {
    matches!(
        code,
        reason::SUCCESS | reason::CONTINUE_AUTHENTICATION | reason::RE_AUTHENTICATE
    )
}

impl Auth {
    /// Decodes an AUTH body (MQTT 5 only).
    pub(crate) fn decode(mut r: Reader) -> Result<Auth, DecodeError> {
        let mut out = Auth::default();
        if !r.is_empty() {
            out.reason = r.u8()?;
            if !allowed(out.reason) {
                return Err(protocol_error("reason code not valid for AUTH"));
            }
            if !r.is_empty() {
                out.properties = AuthProperties::decode(&mut r)?;
            }
        }
        r.end()?;
        Ok(out)
    }
}

impl Encode for Auth {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        kind::AUTH << 4
    }

    fn write_body<S: Sink>(&self, _: ProtocolVersion, s: &mut S) {
        if self.reason == reason::SUCCESS && self.properties.wire_len() == 0 {
            return;
        }
        s.put_byte(self.reason);
        properties::write(&self.properties, s);
    }
}

impl AuthProperties {
    fn decode(r: &mut Reader) -> Result<AuthProperties, DecodeError> {
        let mut out = AuthProperties::default();
        let mut props = PropertyReader::new(r)?;
        while let Some(p) = props.next()? {
            match p {
                Property::AuthenticationMethod(v) => set_once(&mut out.authentication_method, v)?,
                Property::AuthenticationData(v) => set_once(&mut out.authentication_data, v)?,
                Property::ReasonString(v) => set_once(&mut out.reason_string, v)?,
                Property::User(k, v) => out.user_properties.push((k, v)),
                _ => return Err(not_allowed()),
            }
        }
        Ok(out)
    }
}

impl PropertySet for AuthProperties {
    fn write_to<S: Sink>(&self, s: &mut S) {
        properties::put_utf8(
            s,
            id::AUTHENTICATION_METHOD,
            self.authentication_method.as_ref(),
        );
        properties::put_binary(
            s,
            id::AUTHENTICATION_DATA,
            self.authentication_data.as_ref(),
        );
        properties::put_utf8(s, id::REASON_STRING, self.reason_string.as_ref());
        properties::put_user(s, &self.user_properties);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::super::Packet;
    use super::super::test_support::*;
    use super::*;
    use ProtocolVersion::{V5, V311};

    #[test]
    fn short_form_and_round_trip() {
        let ok = Packet::Auth(Auth::default());
        assert_eq!(&to_bytes(&ok, V5)[..], &[0xF0, 0x00]);
        assert_eq!(decode_one(&[0xF0, 0x00], V5), Ok(ok));
        let cont = Packet::Auth(Auth {
            reason: reason::CONTINUE_AUTHENTICATION,
            properties: AuthProperties {
                authentication_method: Some(s("SCRAM-SHA-256")),
                authentication_data: Some(Bytes::from_static(b"\x01\x02")),
                reason_string: Some(s("more")),
                user_properties: vec![(s("u"), s("p"))],
            },
        });
        assert_eq!(round_trip(&cont, V5), cont);
        let bare = Packet::Auth(Auth {
            reason: reason::RE_AUTHENTICATE,
            ..Auth::default()
        });
        assert_eq!(&to_bytes(&bare, V5)[..], &[0xF0, 0x02, 0x19, 0x00]);
        assert_eq!(decode_one(&[0xF0, 0x01, 0x19], V5), Ok(bare));
    }

    #[test]
    fn rules() {
        assert!(matches!(
            decode_one(&[0xF0, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0xF0, 0x01, 0x80], V5),
            Err(DecodeError::ProtocolError(_))
        ));
        assert_eq!(
            decode_one(&[0xF0, 0x04, 0x18, 0x02, 0x11, 0x00], V5).map_err(|e| e.reason_code()),
            Err(0x81)
        );
        assert!(matches!(
            decode_one(
                &[0xF0, 0x08, 0x18, 0x06, 0x15, 0x00, 0x00, 0x15, 0x00, 0x00],
                V5
            ),
            Err(DecodeError::ProtocolError(_))
        ));
    }
}
