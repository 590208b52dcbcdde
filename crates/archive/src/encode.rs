//! Object bodies: newline-delimited records, compressed; and Firehose's error record shape.

use std::io::Write;
use std::time::SystemTime;

use base64::Engine;
use serde_json::json;

use crate::config::Compression;

/// Concatenates `records`, adding `\n` after each that does not already end in one (so every
/// object is newline-delimited JSON whatever the producer sent), and compresses the result.
pub fn json_lines<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
    compression: Compression,
) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Uncompressed => {
            let mut out = Vec::new();
            write_lines(&mut out, records)?;
            Ok(out)
        }
        // Level 1: the archive is on the message path; `gzip -1` is the anchor it is measured
        // against (BENCHMARKS.md, "Archive").
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            write_lines(&mut encoder, records)?;
            encoder.finish()
        }
        Compression::Snappy => {
            let mut encoder = snap::write::FrameEncoder::new(Vec::new());
            write_lines(&mut encoder, records)?;
            encoder.into_inner().map_err(|e| e.into_error())
        }
    }
}

fn write_lines<'a>(
    out: &mut impl Write,
    records: impl IntoIterator<Item = &'a [u8]>,
) -> std::io::Result<()> {
    for record in records {
        out.write_all(record)?;
        if record.last() != Some(&b'\n') {
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}

/// One failed record in AWS's error output shape (one JSON line of an error object).
pub fn error_record(
    data: &[u8],
    arrival: SystemTime,
    error_code: &str,
    error_message: &str,
) -> Vec<u8> {
    let millis = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let mut line = json!({
        "attemptsMade": 1,
        "arrivalTimestamp": millis(arrival),
        "errorCode": error_code,
        "errorMessage": error_message,
        "attemptEndingTimestamp": millis(SystemTime::now()),
        "rawData": base64::engine::general_purpose::STANDARD.encode(data),
    })
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn records_are_newline_delimited_and_compressed() {
        let records: [&[u8]; 3] = [b"{\"a\":1}", b"{\"a\":2}\n", b"x"];
        let plain = json_lines(records, Compression::Uncompressed).expect("plain");
        assert_eq!(plain, b"{\"a\":1}\n{\"a\":2}\nx\n");
        let gz = json_lines(records, Compression::Gzip).expect("gzip");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, plain);
        let sn = json_lines(records, Compression::Snappy).expect("snappy");
        let mut back = Vec::new();
        snap::read::FrameDecoder::new(&sn[..])
            .read_to_end(&mut back)
            .expect("unsnap");
        assert_eq!(back, plain);
    }

    #[test]
    fn error_records_carry_the_raw_data() {
        let line = error_record(b"oops", SystemTime::UNIX_EPOCH, "Code", "why");
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["rawData"], "b29wcw==");
        assert_eq!(v["errorCode"], "Code");
        assert_eq!(v["arrivalTimestamp"], 0);
        assert_eq!(line.last(), Some(&b'\n'));
    }
}
