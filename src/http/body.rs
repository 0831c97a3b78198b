//! Small response bodies read whole (the bundle list): gunzipped when the
//! bytes say gzip, whatever the headers say, as bundles are.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;

/// Gzip layers peeled at most; a proxy compressing a gzip body makes two.
const MAX_LAYERS: usize = 2;
/// A list page is a few kilobytes; more than this unpacked is not a list.
const MAX_DECODED: u64 = 64 << 20;

/// The body, gunzipped if it starts with the gzip magic bytes.
pub(crate) fn decoded(body: &[u8]) -> Result<Cow<'_, [u8]>, String> {
    let mut out = Cow::Borrowed(body);
    for _ in 0..MAX_LAYERS {
        if !out.starts_with(&[0x1f, 0x8b]) {
            break;
        }
        let mut plain = Vec::new();
        MultiGzDecoder::new(&out[..])
            .take(MAX_DECODED + 1)
            .read_to_end(&mut plain)
            .map_err(|e| format!("the body looks gzipped but does not unpack ({e})"))?;
        if plain.len() as u64 > MAX_DECODED {
            return Err(format!(
                "the body unpacks to more than {} MiB",
                MAX_DECODED >> 20
            ));
        }
        out = Cow::Owned(plain);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn gzip_is_sniffed_from_the_bytes() {
        let json = br#"{"exports":[]}"#;
        assert_eq!(&*decoded(json).unwrap(), json);
        assert_eq!(&*decoded(&gzip(json)).unwrap(), json);
        assert_eq!(&*decoded(&gzip(&gzip(json))).unwrap(), json);
        let mut cut = gzip(json);
        cut.truncate(cut.len() - 4);
        assert!(decoded(&cut).unwrap_err().contains("gzipped"));
    }
}
