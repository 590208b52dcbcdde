//! The trace id of an ingested message: its partition and sequence number in the ingest log,
//! shaped as a UUID, so it is unique and the same on every delivery attempt. Written into a
//! buffer on the stack (the reader makes one per message; `format!` showed in its profile).

/// A trace id's text.
pub(crate) struct TraceId([u8; 36]);

impl TraceId {
    /// The trace id of the record at `sequence` of ingest partition `partition`: the
    /// sequence number as a UUID, its top byte mixed with the partition.
    pub(crate) fn of(partition: usize, sequence: u128) -> TraceId {
        let id = sequence ^ (u128::from(partition as u8) << 120);
        let mut text = [0u8; 36];
        uuid::Uuid::from_u128(id)
            .hyphenated()
            .encode_lower(&mut text);
        TraceId(text)
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_uuid_shaped_and_name_partition_and_sequence() {
        let id = TraceId::of(3, (0x1234_u128 << 96) | 0xabcdef);
        assert_eq!(id.as_str(), "03001234-0000-0000-0000-000000abcdef");
        assert_ne!(TraceId::of(1, 7).as_str(), TraceId::of(2, 7).as_str());
        for (partition, n) in [
            (0, u128::MAX),
            (255, 0),
            (7, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
        ] {
            let expected = format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                ((n >> 96) as u32) ^ ((partition as u32) << 24),
                (n >> 80) as u16,
                (n >> 64) as u16,
                (n >> 48) as u16,
                n as u64 & 0xffff_ffff_ffff
            );
            assert_eq!(TraceId::of(partition, n).as_str(), expected);
        }
    }
}
