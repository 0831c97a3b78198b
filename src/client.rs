//! The FullStory Data Export client: listing bundles and opening downloads,
//! with authentication, timeouts, status handling, metrics and pacing. Each
//! call makes one attempt; callers decide about retries through [`Failure`].

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::Config;
use crate::error::Error;
use crate::retry::{Pacer, parse_retry_after};

/// Bundles per list page; a shorter page is the last.
pub const LIST_PAGE_SIZE: usize = 20;

/// One bundle as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// Opaque id, kept as text (FullStory sends an integer; a string is accepted).
    pub id: String,
    /// Window start and end, unix seconds.
    pub start: i64,
    pub stop: i64,
}

/// How one attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Worth another try, after `retry_after` if the server said so.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fatal(Error),
}

impl Failure {
    fn retry(why: String) -> Failure {
        Failure::Retry {
            why,
            retry_after: None,
        }
    }
}

/// An HTTP client for one account.
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    auth: HeaderValue,
    pacer: Mutex<Pacer>,
}

#[derive(Deserialize)]
struct ListBody {
    /// `null` is read as an empty list, as some servers send it for none.
    #[serde(deserialize_with = "null_as_empty")]
    exports: Vec<ListEntry>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ListEntry>, D::Error> {
    Ok(Option::<Vec<ListEntry>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct ListEntry {
    #[serde(rename = "Id")]
    id: Value,
    #[serde(rename = "Start", deserialize_with = "unix_seconds")]
    start: i64,
    #[serde(rename = "Stop", deserialize_with = "unix_seconds")]
    stop: i64,
}

/// Unix seconds as a JSON integer, or as a string of digits.
fn unix_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not whole unix seconds"))),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not unix seconds"))),
        other => Err(serde::de::Error::custom(format!(
            "{other} is not unix seconds"
        ))),
    }
}

impl Client {
    /// Builds the client from validated settings.
    pub fn new(config: &Config) -> Result<Client, Error> {
        let mut auth = HeaderValue::from_str(&format!("Basic {}", config.api_key.expose()))
            .map_err(|_| {
                Error::Input(
                    "config: api_key contains characters that cannot be sent in an HTTP header"
                        .to_string(),
                )
            })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            // A read timeout, not a total one: a multi-GB bundle may take
            // many minutes, but a silent connection must not hang the run.
            .read_timeout(config.request_timeout)
            .build()
            .map_err(|e| Error::Api(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base_url: config.base_url.clone(),
            auth,
            pacer: Mutex::new(Pacer::new(
                config.downloads_per_window,
                config.download_window,
            )),
        })
    }

    /// One page of bundles ending after `start` (unix seconds).
    pub async fn list(&self, start: i64) -> Result<Vec<BundleInfo>, Failure> {
        let start = start.max(1);
        let url = format!("{}/api/v1/export/list?start={start}", self.base_url);
        let resp = self.send(&url, "list").await?;
        let body = resp.bytes().await.map_err(|e| {
            Failure::retry(format!(
                "reading the bundle list failed: {}",
                chain(&e.without_url())
            ))
        })?;
        let parsed: ListBody = serde_json::from_slice(&body).map_err(|e| {
            Failure::retry(format!(
                "the bundle list is not the expected JSON ({e}): {}",
                snippet(&body)
            ))
        })?;
        parsed
            .exports
            .into_iter()
            .map(|entry| {
                let id = match entry.id {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) if !s.is_empty() => s,
                    other => {
                        return Err(Failure::retry(format!(
                            "the bundle list has an entry with an unusable Id: {other}"
                        )));
                    }
                };
                if entry.stop <= entry.start {
                    return Err(Failure::retry(format!(
                        "the bundle list has bundle {id} with Stop {} not after Start {}",
                        entry.stop, entry.start
                    )));
                }
                Ok(BundleInfo {
                    id,
                    start: entry.start,
                    stop: entry.stop,
                })
            })
            .collect()
    }

    /// Starts downloading a bundle, waiting for the rate limit first. The
    /// caller reads the body with [`Response::chunk`].
    pub async fn download(&self, id: &str) -> Result<Response, Failure> {
        self.pace().await;
        let url = format!("{}/api/v1/export/get?id={}", self.base_url, url_escape(id));
        self.send(&url, "get").await
    }

    /// Tells the pacer that the server asked for a pause on downloads.
    pub async fn hold_downloads(&self, wait: Duration) {
        self.pacer.lock().await.hold_until(Instant::now() + wait);
    }

    async fn pace(&self) {
        loop {
            let wait = self.pacer.lock().await.try_start(Instant::now());
            match wait {
                None => return,
                Some(wait) => {
                    tracing::info!(
                        "pacing downloads to the rate limit: waiting {:.1}s",
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Sends one GET and sorts the response into success or failure.
    async fn send(&self, url: &str, endpoint: &str) -> Result<Response, Failure> {
        tracing::info!("GET {url}");
        let started = Instant::now();
        let result = self
            .http
            .get(url)
            .header(AUTHORIZATION, self.auth.clone())
            .send()
            .await;
        let elapsed = started.elapsed();
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                metric_timer(endpoint, elapsed, None, false);
                // reqwest repeats the URL in its message; it is already in ours.
                let e = e.without_url();
                return Err(Failure::retry(format!("GET {url} failed: {}", chain(&e))));
            }
        };
        let status = resp.status();
        metric_timer(endpoint, elapsed, Some(status), status.is_success());
        if status.is_success() {
            return Ok(resp);
        }

        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.unwrap_or_default();
        let detail = format!("GET {url} answered HTTP {status}: {}", snippet(&body));
        tracing::warn!("{detail}");
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(Failure::Retry {
                why: detail,
                retry_after,
            });
        }
        let advice = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                "check that api_key is a valid FullStory API key with Admin or Architect rights"
            }
            StatusCode::NOT_FOUND if endpoint == "list" => {
                "check api_key, that the account has the Data Export pack, and base_url"
            }
            StatusCode::NOT_FOUND => "the bundle is gone; check base_url and re-run to list again",
            _ => "check the config (api_key, base_url)",
        };
        Err(Failure::Fatal(Error::Api(format!("{detail}; {advice}"))))
    }
}

/// An error with its causes, on one line (reqwest's top message alone is vague).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The start of a response body, printable on one line.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.is_empty() {
        "(empty body)".to_string()
    } else if body.len() > 200 {
        format!("{}...", one_line.trim())
    } else {
        one_line.trim().to_string()
    }
}

fn url_escape(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Logs a singer-python style `http_request_duration` timer.
fn metric_timer(endpoint: &str, elapsed: Duration, status: Option<StatusCode>, ok: bool) {
    let metric = serde_json::json!({
        "type": "timer",
        "metric": "http_request_duration",
        "value": elapsed.as_secs_f64(),
        "tags": {
            "endpoint": endpoint,
            "http_status_code": status.map(|s| s.as_u16()),
            "status": if ok { "succeeded" } else { "failed" },
        }
    });
    tracing::info!("METRIC: {metric}");
}

/// Logs a singer-python style `record_count` counter.
pub fn metric_records(stream: &str, count: u64) {
    let metric = serde_json::json!({
        "type": "counter",
        "metric": "record_count",
        "value": count,
        "tags": {"endpoint": stream},
    });
    tracing::info!("METRIC: {metric}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b"a\nb"), "a b");
        assert!(snippet(&[b'x'; 500]).ends_with("..."));
    }

    #[test]
    fn list_bodies() {
        let parse = |s: &str| serde_json::from_str::<ListBody>(s).map(|b| b.exports.len());
        assert_eq!(parse(r#"{"exports": null}"#).unwrap(), 0);
        assert_eq!(
            parse(r#"{"exports": [{"Id": "a", "Start": 1, "Stop": 2, "Extra": 0}]}"#).unwrap(),
            1
        );
        assert!(parse(r#"{"bundles": []}"#).is_err());
        assert_eq!(
            parse(r#"{"exports": [{"Id": 1, "Start": "1", "Stop": 2}]}"#).unwrap(),
            1
        );
        assert!(parse(r#"{"exports": [{"Id": 1, "Start": "x", "Stop": 2}]}"#).is_err());
        assert!(parse(r#"{"exports": [{"Id": 1, "Start": 1.5, "Stop": 2}]}"#).is_err());
    }

    #[test]
    fn ids_are_escaped_in_urls() {
        assert_eq!(url_escape("156314880048"), "156314880048");
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
    }
}
