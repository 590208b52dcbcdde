//! PINGREQ and PINGRESP (MQTT 5 §3.12, §3.13): a fixed header and nothing else, in both versions.

use super::header::kind;
use super::primitives::{Reader, Sink, malformed};
use super::{DecodeError, Encode, ProtocolVersion};

/// Checks that a ping has no body.
pub(crate) fn decode(r: Reader) -> Result<(), DecodeError> {
    if r.is_empty() {
        Ok(())
    } else {
        Err(malformed("ping packets have no body"))
    }
}

/// Which ping to encode; the variants of `Packet` carry no data to implement [`Encode`] on.
pub(crate) enum Ping {
    Req,
    Resp,
}

impl Encode for Ping {
    fn first_byte(&self, _: ProtocolVersion) -> u8 {
        match self {
            Ping::Req => kind::PINGREQ << 4,
            Ping::Resp => kind::PINGRESP << 4,
        }
    }

    fn write_body<S: Sink>(&self, _: ProtocolVersion, _: &mut S) {}
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{DecodeError, Packet};
    use super::ProtocolVersion::{V5, V311};

    #[test]
    fn pings_are_two_bytes() {
        assert_eq!(&to_bytes(&Packet::PingReq, V311)[..], &[0xC0, 0x00]);
        assert_eq!(&to_bytes(&Packet::PingResp, V5)[..], &[0xD0, 0x00]);
        assert_eq!(decode_one(&[0xC0, 0x00], V5), Ok(Packet::PingReq));
        assert_eq!(decode_one(&[0xD0, 0x00], V311), Ok(Packet::PingResp));
    }

    #[test]
    fn ping_with_body_is_malformed() {
        assert!(matches!(
            decode_one(&[0xC0, 0x01, 0x00], V5),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_one(&[0xD0, 0x01, 0x00], V311),
            Err(DecodeError::MalformedPacket(_))
        ));
    }
}
