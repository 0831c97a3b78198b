//! HTTP in one place: the client (authentication, timeouts, status
//! classification, metrics), [`retry`] for backoff and the retry loop, and
//! [`pace`] for per-endpoint rate limits. Each call makes one attempt;
//! callers decide about retries through [`Failure`].

pub(crate) mod body;
pub(crate) mod pace;
pub(crate) mod retry;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, IF_RANGE, RANGE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode, Url};

use crate::config::Config;
use crate::error::{Error, one_line};
use crate::redact;
pub(crate) use crate::redact::snippet;
use crate::urls::is_loopback;
use retry::parse_retry_after;

/// How one attempt failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another try, after `retry_after` if the server said so;
    /// `throttled` when it answered 429 (too many requests).
    Retry {
        why: String,
        retry_after: Option<Duration>,
        throttled: bool,
    },
    /// Retrying cannot help.
    Fatal(Error),
    /// HTTP 404 from an endpoint whose resources may vanish
    /// ([`NotFound::Gone`]): the caller decides; the text says what was asked.
    Gone(String),
}

impl Failure {
    pub(crate) fn retry(why: String) -> Failure {
        Failure::Retry {
            why,
            retry_after: None,
            throttled: false,
        }
    }
}

/// One kind of request, for metrics and for advice when it fails.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    /// The `endpoint` tag of the request metrics.
    pub name: &'static str,
    /// What a 404 from it means.
    pub not_found: NotFound,
    /// What to check when it answers 401 or 403, if not just the key.
    pub refused: Option<&'static str>,
}

/// What an HTTP 404 means for one kind of request.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NotFound {
    /// A mistake that stops the run; the text says what to check.
    Stop(&'static str),
    /// The resource may have been deleted or expired since it was named: a
    /// 404 or 410 is [`Failure::Gone`], not logged here, as only the caller
    /// knows whether that is news.
    Gone,
}

/// An HTTP client for one account.
///
/// Redirects are followed, at most [`MAX_REDIRECTS`] hops. Within base_url's
/// origin the key goes along; reqwest drops it as soon as a hop changes
/// scheme, host or port, so another origin gets the request without it (a
/// pre-signed storage link needs none) and a refusal from there is reported
/// as a redirect, not as a bad key. A hop to plain http on a host other than
/// loopback is refused outright.
///
/// Loopback is never reached through a proxy, and the key never goes over
/// plain http to anything but loopback, whatever the config says.
pub(crate) struct Client {
    /// For everything but loopback: honours HTTPS_PROXY and friends.
    proxied: OnceLock<reqwest::Client>,
    /// For loopback: never through a proxy.
    direct: OnceLock<reqwest::Client>,
    /// How to build either; only the one base_url needs is built up front
    /// (building one takes a noticeable moment).
    options: ClientOptions,
    base_url: String,
    api_url: String,
    /// Scheme, host and port of `base_url` and `api_url`: the only origins
    /// the key is sent to.
    origins: [url::Origin; 2],
    auth: HeaderValue,
}

/// Redirect hops followed for one request.
const MAX_REDIRECTS: usize = 10;

/// What to do about an HTTP 407 or a proxy refusing a tunnel.
const PROXY_ADVICE: &str = "a proxy refused the request; check the HTTPS_PROXY, HTTP_PROXY, ALL_PROXY and NO_PROXY environment variables (and any credentials in them)";

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
        let origin = |name: &str, url: &str| {
            Url::parse(url).map(|u| u.origin()).map_err(|_| {
                Error::Input(format!(
                    "config: {name} {} is not a valid URL",
                    redact::url(url)
                ))
            })
        };
        let origins = [
            origin("base_url", &config.base_url)?,
            origin("api_url", &config.api_url)?,
        ];
        let client = Client {
            proxied: OnceLock::new(),
            direct: OnceLock::new(),
            options: ClientOptions {
                user_agent: config.user_agent.clone(),
                connect_timeout: config.connect_timeout,
                request_timeout: config.request_timeout,
            },
            base_url: config.base_url.clone(),
            api_url: config.api_url.clone(),
            origins,
            auth,
        };
        // A client that cannot be built stops the run before it starts.
        let loopback = Url::parse(&config.base_url).is_ok_and(|u| is_loopback(&u));
        client.http(loopback)?;
        Ok(client)
    }

    /// The reqwest client for loopback (direct) or anything else (proxied).
    fn http(&self, loopback: bool) -> Result<&reqwest::Client, Error> {
        let (cell, proxy) = if loopback {
            (&self.direct, false)
        } else {
            (&self.proxied, true)
        };
        if let Some(client) = cell.get() {
            return Ok(client);
        }
        let built = build(&self.options, proxy)?;
        Ok(cell.get_or_init(|| built))
    }

    /// The configured API host, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The host of the other APIs (`api_url`), without a trailing slash.
    pub(crate) fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Sends one authenticated GET to an API host and sorts the response
    /// into success or failure. Refuses any other host, and plain http to
    /// anything but loopback: the key goes nowhere else.
    pub(crate) async fn get(&self, url: &str, endpoint: Endpoint) -> Result<Response, Failure> {
        self.get_as(url, endpoint, None).await
    }

    /// [`Client::get`], where a 403 is answered with `forbidden`: what the
    /// key lacks for this request (e.g. the role it needs).
    pub(crate) async fn get_as(
        &self,
        url: &str,
        endpoint: Endpoint,
        forbidden: Option<&str>,
    ) -> Result<Response, Failure> {
        self.check_key_target(url)?;
        self.send(Call {
            forbidden,
            ..Call::new(Method::GET, url, endpoint)
        })
        .await
    }

    /// Sends one authenticated POST with a JSON body to an API host.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        endpoint: Endpoint,
        body: &serde_json::Value,
    ) -> Result<Response, Failure> {
        self.check_key_target(url)?;
        self.send(Call {
            json: Some(body),
            ..Call::new(Method::POST, url, endpoint)
        })
        .await
    }

    /// Refuses any host but base_url's and api_url's, and plain http to
    /// anything but loopback: the key goes nowhere else.
    fn check_key_target(&self, url: &str) -> Result<(), Failure> {
        let parsed = Url::parse(url).ok();
        let same_origin = parsed
            .as_ref()
            .is_some_and(|u| self.origins.contains(&u.origin()));
        if !same_origin {
            return Err(Failure::Fatal(Error::Api(format!(
                "refusing to send the API key to {}: it is not on base_url {} or api_url {}",
                redact::url(url),
                redact::url(&self.base_url),
                redact::url(&self.api_url)
            ))));
        }
        if let Some(u) = &parsed
            && u.scheme() != "https"
            && !is_loopback(u)
        {
            return Err(Failure::Fatal(Error::Api(format!(
                "refusing to send the API key over plain {}: to {}; use https (plain http is allowed for loopback addresses only)",
                u.scheme(),
                redact::origin(u)
            ))));
        }
        Ok(())
    }

    /// Sends one GET without the Authorization header, for URLs that carry
    /// their own authority (pre-signed download links). Such a link that is
    /// refused (4xx) has usually expired: that is worth another try with a
    /// fresh link, so it is a [`Failure::Retry`].
    pub(crate) async fn get_anonymous(
        &self,
        url: &str,
        endpoint: Endpoint,
    ) -> Result<Response, Failure> {
        self.send(Call {
            auth: false,
            ..Call::new(Method::GET, url, endpoint)
        })
        .await
    }

    /// Asks for the rest of a download from byte `from` on (`Range`), only
    /// if it is still the file `validator` (its `ETag` or `Last-Modified`)
    /// names (`If-Range`); with the key if `auth`, as the first request had
    /// it. A server may answer 206 with the rest, or 200 with all of it.
    pub(crate) async fn get_rest(
        &self,
        url: &str,
        endpoint: Endpoint,
        auth: bool,
        from: u64,
        validator: Option<&HeaderValue>,
    ) -> Result<Response, Failure> {
        if auth {
            self.check_key_target(url)?;
        }
        self.send(Call {
            auth,
            range: Some((from, validator)),
            ..Call::new(Method::GET, url, endpoint)
        })
        .await
    }

    async fn send(&self, call: Call<'_>) -> Result<Response, Failure> {
        let Call {
            method,
            url,
            json,
            endpoint,
            auth,
            forbidden,
            range,
        } = call;
        let parsed = Url::parse(url).ok();
        // A link that carries its own signature is named by its host alone.
        let shown = match (&parsed, auth) {
            (Some(link), false) => format!("{} (a signed link)", redact::origin(link)),
            _ => redact::url(url),
        };
        tracing::info!("{method} {shown}");
        let http = self
            .http(parsed.as_ref().is_some_and(is_loopback))
            .map_err(Failure::Fatal)?;
        let started = Instant::now();
        let mut request = http.request(method.clone(), url);
        if auth {
            request = request.header(AUTHORIZATION, self.auth.clone());
        }
        if let Some(json) = json {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(json.to_string());
        }
        if let Some((from, validator)) = range {
            request = request.header(RANGE, format!("bytes={from}-"));
            if let Some(v) = validator {
                request = request.header(IF_RANGE, v.clone());
            }
        }
        let result = request.send().await;
        let elapsed = started.elapsed();
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                crate::metrics::http_request(endpoint.name, elapsed, None, false);
                // reqwest repeats the URL in its message; it is already in ours.
                let e = e.without_url();
                let why = format!("{method} {shown} failed: {}", chain(&e));
                return Err(match transport(&e) {
                    Transport::Redirect => Failure::Fatal(Error::Api(why)),
                    Transport::ProxyRefused => {
                        Failure::Fatal(Error::Api(format!("{why}; {PROXY_ADVICE}")))
                    }
                    Transport::ProxyTunnel => Failure::retry(format!(
                        "{why} (the connection goes through a proxy; check the HTTPS_PROXY, ALL_PROXY and NO_PROXY environment variables)"
                    )),
                    Transport::Other => Failure::retry(why),
                });
            }
        };
        let status = resp.status();
        crate::metrics::http_request(endpoint.name, elapsed, Some(status), status.is_success());
        // Where the answer came from, when a redirect led to another origin.
        let elsewhere = parsed
            .as_ref()
            .filter(|u| u.origin() != resp.url().origin())
            .map(|_| redact::origin(resp.url()));
        if status.is_success() {
            if let Some(host) = &elsewhere {
                tracing::info!(
                    "{method} {shown} was redirected to {host}{}",
                    if auth { " (without the API key)" } else { "" }
                );
            }
            return Ok(resp);
        }

        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = body::read_error_body(resp).await;
        let via = match &elsewhere {
            Some(host) => format!(" after a redirect to {host}"),
            None => String::new(),
        };
        let detail = format!(
            "{method} {shown} answered HTTP {status}{via}: {}",
            snippet(&body)
        );
        if matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE)
            && matches!(endpoint.not_found, NotFound::Gone)
        {
            return Err(Failure::Gone(detail));
        }
        tracing::warn!("{detail}");
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
            || (!auth
                && status.is_client_error()
                && status != StatusCode::PROXY_AUTHENTICATION_REQUIRED)
        {
            return Err(Failure::Retry {
                why: detail,
                retry_after,
                throttled: status == StatusCode::TOO_MANY_REQUESTS,
            });
        }
        let redirected_advice;
        let advice = match (status, &elsewhere) {
            (StatusCode::PROXY_AUTHENTICATION_REQUIRED, _) => PROXY_ADVICE,
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, Some(host)) if auth => {
                let from = parsed.as_ref().map_or_else(String::new, redact::origin);
                redirected_advice = format!(
                    "the API key was not sent to {host}, as it goes only to the origin it was configured for ({from}); if the API now lives there, set base_url or api_url to it"
                );
                &redirected_advice
            }
            (StatusCode::FORBIDDEN, _) if forbidden.is_some() => forbidden.unwrap_or_default(),
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => endpoint.refused.unwrap_or(
                "check that api_key is a valid FullStory API key with Admin or Architect rights",
            ),
            (StatusCode::NOT_FOUND, _) => match endpoint.not_found {
                NotFound::Stop(advice) => advice,
                // Answered above as `Failure::Gone`.
                NotFound::Gone => "it is gone",
            },
            _ => "check the config (api_key, base_url)",
        };
        Err(Failure::Fatal(Error::Refused {
            status: status.as_u16(),
            message: format!("{detail}; {advice}"),
        }))
    }
}

/// What went wrong below HTTP, by the error's kind.
#[derive(Debug, PartialEq, Eq)]
enum Transport {
    /// A redirect refused by policy (see [`check_redirect`]).
    Redirect,
    /// A proxy asked for credentials (407) when asked to open a tunnel.
    ProxyRefused,
    /// A proxy failed to open a tunnel otherwise.
    ProxyTunnel,
    /// Anything else: connection, timeout, a body cut off.
    Other,
}

/// Sorts a failed request by the types in its error chain. A proxy tunnel's
/// error is hyper-util's `TunnelError`, a type it does not export: its Debug
/// form, the variant's name, is all that identifies it.
fn transport(e: &reqwest::Error) -> Transport {
    if e.is_redirect() {
        return Transport::Redirect;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(err) = cause {
        let debug = format!("{err:?}");
        let variant = debug.split(['(', ' ', '{']).next().unwrap_or_default();
        match variant {
            "ProxyAuthRequired" => return Transport::ProxyRefused,
            "TunnelUnsuccessful" | "TunnelUnexpectedEof" | "ProxyHeadersTooLong" => {
                return Transport::ProxyTunnel;
            }
            _ => {}
        }
        cause = err.source();
    }
    Transport::Other
}

/// One request, as [`Client::send`] makes it.
struct Call<'a> {
    method: Method,
    url: &'a str,
    json: Option<&'a serde_json::Value>,
    endpoint: Endpoint,
    /// Whether the API key goes along.
    auth: bool,
    /// What a 403 means here, if not just the key.
    forbidden: Option<&'a str>,
    /// The rest of a file from this byte on, if it is still the one the
    /// validator names.
    range: Option<(u64, Option<&'a HeaderValue>)>,
}

impl<'a> Call<'a> {
    fn new(method: Method, url: &'a str, endpoint: Endpoint) -> Call<'a> {
        Call {
            method,
            url,
            json: None,
            endpoint,
            auth: true,
            forbidden: None,
            range: None,
        }
    }
}

/// What a reqwest client is built from.
struct ClientOptions {
    user_agent: String,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// One reqwest client; `proxy` says whether proxy environment variables apply.
fn build(options: &ClientOptions, proxy: bool) -> Result<reqwest::Client, Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(options.user_agent.clone())
        .connect_timeout(options.connect_timeout)
        // A read timeout, not a total one: a multi-GB bundle may take
        // many minutes, but a silent connection must not hang the run.
        .read_timeout(options.request_timeout)
        // A Referer would hand the previous URL, query and all (a signed
        // link's signature), to the next host.
        .referer(false)
        .redirect(reqwest::redirect::Policy::custom(
            |attempt| match check_redirect(attempt.url(), attempt.previous().len()) {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            },
        ));
    if !proxy {
        builder = builder.no_proxy();
    }
    builder.build().map_err(Error::HttpClient)
}

/// Whether a redirect to `next` may be followed, `visited` URLs into the
/// request (the first URL and every hop so far, as reqwest counts them).
fn check_redirect(next: &Url, visited: usize) -> Result<(), String> {
    if visited > MAX_REDIRECTS {
        return Err(format!(
            "more than {MAX_REDIRECTS} redirects (the last to {}); check base_url",
            redact::origin(next)
        ));
    }
    match next.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(next) => Ok(()),
        other => Err(format!(
            "refusing to follow a redirect to {} (plain {other} to a host other than loopback); check base_url",
            redact::origin(next)
        )),
    }
}

/// An error with its causes, on one line and redacted (reqwest's top
/// message alone is vague, and may quote URLs).
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    redact::redact(&one_line(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const ENDPOINT: Endpoint = Endpoint {
        name: "test",
        not_found: NotFound::Stop("gone"),
        refused: None,
    };

    /// Serves one request on 127.0.0.1 and hands back its head, lower-cased.
    fn one_shot_server() -> (String, std::thread::JoinHandle<String>) {
        one_shot_server_answering(
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
    }

    fn one_shot_server_answering(
        answer: &'static [u8],
    ) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            conn.write_all(answer).unwrap();
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

    #[tokio::test]
    async fn a_404_is_gone_only_where_the_endpoint_says_so() {
        const NOT_FOUND: &[u8] =
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
        const GONE: Endpoint = Endpoint {
            name: "test",
            not_found: NotFound::Gone,
            refused: None,
        };
        let (url, server) = one_shot_server_answering(NOT_FOUND);
        match client(&url).get(&format!("{url}/u/1"), GONE).await {
            Err(Failure::Gone(why)) => assert!(why.contains("404"), "{why}"),
            other => panic!("not gone: {other:?}"),
        }
        server.join().unwrap();
        const GONE_410: &[u8] =
            b"HTTP/1.1 410 Gone\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}";
        let (url, server) = one_shot_server_answering(GONE_410);
        match client(&url).get(&format!("{url}/u/1"), GONE).await {
            Err(Failure::Gone(why)) => assert!(why.contains("410"), "{why}"),
            other => panic!("not gone: {other:?}"),
        }
        server.join().unwrap();
        let (url, server) = one_shot_server_answering(NOT_FOUND);
        match client(&url).get(&format!("{url}/u/1"), ENDPOINT).await {
            Err(Failure::Fatal(e)) => assert!(e.to_string().ends_with("; gone"), "{e}"),
            other => panic!("not fatal: {other:?}"),
        }
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_refusal_carries_its_status_and_the_endpoint_advice() {
        const SEGMENT: Endpoint = Endpoint {
            name: "test",
            not_found: NotFound::Stop("gone"),
            refused: Some("it needs the entitlement"),
        };
        let (url, server) = one_shot_server_answering(
            b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
        );
        match client(&url).get(&format!("{url}/a"), SEGMENT).await {
            Err(Failure::Fatal(Error::Refused { status, message })) => {
                assert_eq!(status, 403);
                assert!(message.ends_with("; it needs the entitlement"), "{message}");
            }
            other => panic!("not refused: {other:?}"),
        }
        server.join().unwrap();
    }

    #[tokio::test]
    async fn small_answers_are_capped_plain_or_not() {
        let (url, server) = one_shot_server_answering(
            b"HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\nconnection: close\r\n\r\n{}",
        );
        let resp = client(&url)
            .get(&format!("{url}/a"), ENDPOINT)
            .await
            .unwrap();
        match body::read_small(resp, "the list").await {
            Err(Failure::Fatal(e)) => {
                let text = e.to_string();
                assert!(text.contains("the list is larger than 64 MiB"), "{text}");
            }
            other => panic!("not refused: {other:?}"),
        }
        server.join().unwrap();
        // No length announced: counted as it arrives.
        let (url, server) = one_shot_server_answering(
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]",
        );
        let resp = client(&url)
            .get(&format!("{url}/a"), ENDPOINT)
            .await
            .unwrap();
        assert_eq!(body::read_capped(resp, 20).await.unwrap(), None);
        server.join().unwrap();
    }

    #[tokio::test]
    async fn a_407_blames_the_proxy_not_the_key() {
        let (url, server) = one_shot_server_answering(
            b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        let client = client(&url);
        let text = match client.get(&format!("{url}/a"), ENDPOINT).await {
            Err(Failure::Fatal(e)) => e.to_string(),
            other => panic!("not fatal: {other:?}"),
        };
        server.join().unwrap();
        assert!(
            text.contains("proxy") && text.contains("HTTPS_PROXY"),
            "{text}"
        );
        assert!(!text.contains("api_key"), "{text}");
    }

    #[tokio::test]
    async fn the_key_never_goes_over_plain_http_beyond_loopback() {
        let mut raw = crate::config::RawConfig::default();
        raw.set_for_test("api_key", "secret-key");
        raw.set_for_test("start_date", "2024-01-01");
        raw.set_for_test("base_url", "https://api.example");
        let mut config = raw.validate(chrono::Utc::now()).unwrap();
        // As if validation had been bypassed.
        config.base_url = "http://api.example".into();
        let client = Client::new(&config).unwrap();
        let text = match client.get("http://api.example/a", ENDPOINT).await {
            Err(Failure::Fatal(e)) => e.to_string(),
            other => panic!("not refused: {other:?}"),
        };
        assert!(text.contains("plain http"), "{text}");
    }

    #[test]
    fn redirects_to_plain_http_elsewhere_or_too_many_are_refused() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(check_redirect(&url("https://s3.example/x?sig=1"), 1).is_ok());
        assert!(check_redirect(&url("http://127.0.0.1:81/x"), 1).is_ok());
        let err = check_redirect(&url("http://s3.example/x?X-Amz-Signature=zz"), 1).unwrap_err();
        assert!(
            err.contains("http://s3.example") && !err.contains("zz"),
            "{err}"
        );
        assert!(check_redirect(&url("https://a.example/"), MAX_REDIRECTS).is_ok());
        assert!(check_redirect(&url("https://a.example/"), MAX_REDIRECTS + 1).is_err());
    }
}
