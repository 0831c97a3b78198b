//! Small answers read whole (bundle lists, REST pages, operation polls,
//! export results, error bodies), the one way every source reads them: with
//! a size cap whether the body is plain or gzipped, gunzipped when its bytes
//! say gzip whatever the headers say (as bundles are), and every error
//! redacted.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use reqwest::Response;
use serde_json::Value;

use super::{Failure, chain};
use crate::error::Error;
use crate::redact::snippet;

/// Gzip layers peeled at most; a proxy compressing a gzip body makes two.
const MAX_LAYERS: usize = 2;

/// An answer read whole is a few kilobytes; more than this, as it arrives or
/// unpacked, is not an answer but a server gone wrong, and reading it would
/// only fill memory.
pub(crate) const MAX_SMALL: u64 = 64 << 20;

/// Of an error answer, only what a message may quote is read.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// Reads the body of `what` (named in errors: "the bundle list"), at most
/// [`MAX_SMALL`] bytes as sent and unpacked, gunzipped if its bytes say so.
/// A body that breaks off is worth another try; one over the cap is not.
pub(crate) async fn read_small(resp: Response, what: &str) -> Result<Vec<u8>, Failure> {
    let body = read_capped(resp, MAX_SMALL)
        .await
        .map_err(|e| Failure::retry(format!("reading {what} failed: {e}")))?
        .ok_or_else(|| too_big(what))?;
    match decoded(&body, MAX_SMALL) {
        Ok(Cow::Borrowed(_)) => Ok(body),
        Ok(Cow::Owned(plain)) => Ok(plain),
        Err(Unpack::TooBig) => Err(too_big(what)),
        Err(Unpack::Bad(why)) => Err(Failure::retry(format!("reading {what} failed: {why}"))),
    }
}

/// Reads `what` as [`read_small`] does, and parses it as a JSON object; a
/// body that is not one is worth another try.
pub(crate) async fn read_object(resp: Response, what: &str) -> Result<Value, Failure> {
    let body = read_small(resp, what).await?;
    match serde_json::from_slice::<Value>(&body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(Failure::retry(format!(
            "{what} is not the expected JSON object: {}",
            snippet(&body)
        ))),
    }
}

/// The start of an error answer, enough to quote; empty if it cannot be read.
pub(crate) async fn read_error_body(resp: Response) -> Vec<u8> {
    let mut resp = resp;
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ERROR_BODY as usize - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY as usize {
            break;
        }
    }
    match decoded(&body, MAX_ERROR_BODY) {
        Ok(plain) => plain.into_owned(),
        Err(_) => body,
    }
}

fn too_big(what: &str) -> Failure {
    Failure::Fatal(Error::Api(format!(
        "{what} is larger than {} MiB, as sent or unpacked, which no answer of this kind should be; the server is misbehaving: re-run later, and report it to FullStory if it persists",
        MAX_SMALL >> 20
    )))
}

/// The whole body, or `None` once it passes `cap` bytes.
pub(super) async fn read_capped(mut resp: Response, cap: u64) -> Result<Option<Vec<u8>>, String> {
    if resp.content_length().is_some_and(|n| n > cap) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e.without_url()))? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Why a body could not be unpacked.
#[derive(Debug, PartialEq, Eq)]
enum Unpack {
    /// More than the cap once unpacked.
    TooBig,
    /// Not the gzip its first bytes promise.
    Bad(String),
}

/// The body, gunzipped while it starts with the gzip magic bytes, up to
/// `cap` bytes unpacked.
fn decoded(body: &[u8], cap: u64) -> Result<Cow<'_, [u8]>, Unpack> {
    let mut out = Cow::Borrowed(body);
    for _ in 0..MAX_LAYERS {
        if !out.starts_with(&[0x1f, 0x8b]) {
            break;
        }
        let mut plain = Vec::new();
        MultiGzDecoder::new(&out[..])
            .take(cap + 1)
            .read_to_end(&mut plain)
            .map_err(|e| {
                Unpack::Bad(format!("the body looks gzipped but does not unpack ({e})"))
            })?;
        if plain.len() as u64 > cap {
            return Err(Unpack::TooBig);
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
        assert_eq!(&*decoded(json, MAX_SMALL).unwrap(), json);
        assert_eq!(&*decoded(&gzip(json), MAX_SMALL).unwrap(), json);
        assert_eq!(&*decoded(&gzip(&gzip(json)), MAX_SMALL).unwrap(), json);
        let mut cut = gzip(json);
        cut.truncate(cut.len() - 4);
        assert!(
            matches!(decoded(&cut, MAX_SMALL), Err(Unpack::Bad(why)) if why.contains("gzipped"))
        );
    }

    #[test]
    fn a_gzip_bomb_is_refused_by_its_unpacked_size() {
        let zeros = vec![0u8; 100_001];
        assert_eq!(decoded(&gzip(&zeros), 100_000), Err(Unpack::TooBig));
        assert!(decoded(&gzip(&zeros), 100_001).is_ok());
    }
}
