//! HTTP in one place: the client (authentication, timeouts, status
//! classification, metrics), [`retry`] for backoff and the retry loop, and
//! [`pace`] for per-endpoint rate limits. Each call makes one attempt;
//! callers decide about retries through [`Failure`].

pub(crate) mod pace;
pub(crate) mod retry;

use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode, Url};

use crate::config::Config;
use crate::error::{Error, one_line};
use retry::parse_retry_after;

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another try, after `retry_after` if the server said so.
    Retry {
        why: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fatal(Error),
}

impl Failure {
    pub(crate) fn retry(why: String) -> Failure {
        Failure::Retry {
            why,
            retry_after: None,
        }
    }
}

/// One kind of request, for metrics and for advice when it is not found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    /// The `endpoint` tag of the request metrics.
    pub name: &'static str,
    /// What to do about a 404 from it.
    pub not_found: &'static str,
}

/// An HTTP client for one account.
pub(crate) struct Client {
    http: reqwest::Client,
    base_url: String,
    /// Scheme, host and port of `base_url`: the only origin the key is sent to.
    origin: url::Origin,
    auth: HeaderValue,
}

impl Client {
    /// Builds the client from validated settings.
    pub(crate) fn new(config: &Config) -> Result<Client, Error> {
        let mut auth = HeaderValue::from_str(&format!("Basic {}", config.api_key.expose()))
            .map_err(|_| {
                Error::Input(
                    "config: api_key contains characters that cannot be sent in an HTTP header"
                        .to_string(),
                )
            })?;
        auth.set_sensitive(true);
        let origin = Url::parse(&config.base_url)
            .map_err(|e| Error::Input(format!("config: base_url is not a valid URL ({e})")))?
            .origin();
        let http = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            // A read timeout, not a total one: a multi-GB bundle may take
            // many minutes, but a silent connection must not hang the run.
            .read_timeout(config.request_timeout)
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Client {
            http,
            base_url: config.base_url.clone(),
            origin,
            auth,
        })
    }

    /// The configured API host, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one authenticated GET to the API host and sorts the response
    /// into success or failure. Refuses any other host: the key goes nowhere
    /// else.
    pub(crate) async fn get(&self, url: &str, endpoint: Endpoint) -> Result<Response, Failure> {
        let same_origin = Url::parse(url).is_ok_and(|u| u.origin() == self.origin);
        if !same_origin {
            return Err(Failure::Fatal(Error::Api(format!(
                "refusing to send the API key to {url}: it is not on base_url {}",
                self.base_url
            ))));
        }
        self.send(url, endpoint, true).await
    }

    /// Sends one GET without the Authorization header, for URLs that carry
    /// their own authority (pre-signed download links).
    #[allow(dead_code, reason = "for sources that download from pre-signed URLs")]
    pub(crate) async fn get_anonymous(
        &self,
        url: &str,
        endpoint: Endpoint,
    ) -> Result<Response, Failure> {
        self.send(url, endpoint, false).await
    }

    async fn send(&self, url: &str, endpoint: Endpoint, auth: bool) -> Result<Response, Failure> {
        tracing::info!("GET {url}");
        let started = Instant::now();
        let mut request = self.http.get(url);
        if auth {
            request = request.header(AUTHORIZATION, self.auth.clone());
        }
        let result = request.send().await;
        let elapsed = started.elapsed();
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                metric_timer(endpoint.name, elapsed, None, false);
                // reqwest repeats the URL in its message; it is already in ours.
                let e = e.without_url();
                return Err(Failure::retry(format!("GET {url} failed: {}", chain(&e))));
            }
        };
        let status = resp.status();
        metric_timer(endpoint.name, elapsed, Some(status), status.is_success());
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
            StatusCode::NOT_FOUND => endpoint.not_found,
            _ => "check the config (api_key, base_url)",
        };
        Err(Failure::Fatal(Error::Api(format!("{detail}; {advice}"))))
    }
}

/// An error with its causes, on one line (reqwest's top message alone is vague).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    one_line(err)
}

/// The start of a response body, printable on one line.
pub(crate) fn snippet(body: &[u8]) -> String {
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
pub(crate) fn metric_records(stream: &str, count: u64) {
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
    use std::io::{Read, Write};

    #[test]
    fn snippets_are_one_short_line() {
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b"a\nb"), "a b");
        assert!(snippet(&[b'x'; 500]).ends_with("..."));
    }

    const ENDPOINT: Endpoint = Endpoint {
        name: "test",
        not_found: "gone",
    };

    /// Serves one request on 127.0.0.1 and hands back its head, lower-cased.
    fn one_shot_server() -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&head).to_lowercase()
        });
        (url, handle)
    }

    fn client(base_url: &str) -> Client {
        let mut raw = crate::config::RawConfig::default();
        raw.set_for_test("api_key", "secret-key");
        raw.set_for_test("start_date", "2024-01-01");
        raw.set_for_test("base_url", base_url);
        Client::new(&raw.validate(chrono::Utc::now()).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn anonymous_requests_carry_no_key() {
        let (url, server) = one_shot_server();
        let client = client("http://127.0.0.1:9");
        client
            .get_anonymous(&format!("{url}/file?sig=x"), ENDPOINT)
            .await
            .unwrap();
        let head = server.join().unwrap();
        assert!(head.starts_with("get /file?sig=x "), "{head}");
        assert!(!head.contains("authorization"), "{head}");
    }

    #[tokio::test]
    async fn the_key_goes_only_to_base_url() {
        let (url, server) = one_shot_server();
        let client = client(&url);
        client.get(&format!("{url}/a"), ENDPOINT).await.unwrap();
        let head = server.join().unwrap();
        assert!(head.contains("authorization: basic "), "{head}");
        let other = client.get("http://127.0.0.2:9/a", ENDPOINT).await;
        assert!(matches!(other, Err(Failure::Fatal(_))));
        let text = match other {
            Err(Failure::Fatal(e)) => e.to_string(),
            _ => String::new(),
        };
        assert!(!text.contains("secret-key"), "{text}");
    }
}
