//! Credentials and HTTP hygiene: the key redacted from whatever a server
//! echoes, base_url refused when it carries credentials, loopback never
//! proxied, proxy and redirect failures named for what they are, and a
//! gzip-encoded bundle list read like a gzipped bundle.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use fullstory_demo::{BundleSpec, Encoding, Fault, Route, Server, ServerOptions, gzip};
use serde_json::json;

use crate::support::*;

/// The forms of the key a gateway or debug page might echo.
fn key_forms() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        KEY.to_string(),
        b64.encode(KEY),
        b64.encode(format!("user:{KEY}")),
        KEY.replace('-', "%2D"),
    ]
}

/// A page echoing the request the way proxies and WAF pages do, with every
/// form of the key and two other credentials.
fn echo_page(html: bool) -> Vec<u8> {
    let forms = key_forms();
    let lines = format!(
        "GET /api/v1/export/list HTTP/1.1\r\nAuthorization: Basic {}\r\nX-Debug: {} {} {}\r\nReferer: https://u:PwSecret77@cdn.example/x?X-Amz-Signature=SigSecret77\r\n",
        forms[0], forms[1], forms[2], forms[3]
    );
    if html {
        format!("<html><body><h1>Request blocked</h1><pre>{lines}</pre></body></html>").into_bytes()
    } else {
        format!(r#"{{"error":"bad gateway","request":{}}}"#, json!(lines)).into_bytes()
    }
}

fn assert_nothing_secret(run: &Run) {
    run.assert_no_secret();
    for secret in key_forms()
        .into_iter()
        .chain(["PwSecret77".into(), "SigSecret77".into()])
    {
        assert!(
            !run.stderr.contains(&secret),
            "{secret} on stderr:\n{}",
            run.stderr
        );
    }
    assert!(run.stderr.contains("[redacted]"), "{}", run.stderr);
}

#[test]
fn the_key_echoed_by_a_server_is_redacted_from_every_log_line() {
    let specs = bundles(2, 3, Encoding::GzipFile);

    // A gateway echoing the request it was sent, key and all, with a 502
    // that is retried until retries run out.
    let srv = server(specs.clone());
    for _ in 0..5 {
        srv.push_fault(Route::List, Fault::Echo { code: 502 });
    }
    let run = Tap::new().config(&config(&srv)).run().failure(1);
    assert!(run.last_log().contains("HTTP 502"), "{}", run.last_log());
    assert!(
        run.last_log()
            .to_lowercase()
            .contains("authorization: [redacted]"),
        "{}",
        run.last_log()
    );
    run.assert_no_secret();

    // A 500 whose JSON body quotes the key in every form.
    let srv = server(specs.clone());
    for _ in 0..5 {
        srv.push_fault(
            Route::List,
            Fault::Status {
                code: 500,
                headers: vec![],
                body: echo_page(false),
            },
        );
    }
    let run = Tap::new().config(&config(&srv)).run().failure(1);
    assert!(run.last_log().contains("HTTP 500"), "{}", run.last_log());
    assert_nothing_secret(&run);

    // A 401 that stops the run at once.
    let srv = server(specs.clone());
    srv.push_fault(
        Route::List,
        Fault::Status {
            code: 401,
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: echo_page(true),
        },
    );
    let run = Tap::new().config(&config(&srv)).run().failure(1);
    assert!(run.last_log().contains("HTTP 401"), "{}", run.last_log());
    assert_nothing_secret(&run);

    // An HTML page with status 200 instead of the list, then the real list.
    let srv = server(specs.clone());
    srv.push_fault(
        Route::List,
        Fault::Body {
            content_type: "text/html".into(),
            body: echo_page(true),
        },
    );
    let run = Tap::new().config(&config(&srv)).run().success();
    assert_eq!(run.records().len(), total_events(&specs));
    assert!(run.stderr.contains("Request blocked"), "{}", run.stderr);
    assert_nothing_secret(&run);
}

/// `{"exports": [...]}` for these bundles, as the server would list them.
fn list_json(specs: &[BundleSpec]) -> Vec<u8> {
    let exports: Vec<_> = specs
        .iter()
        .map(|b| json!({"Id": b.id.parse::<u64>().unwrap(), "Start": b.start, "Stop": b.stop}))
        .collect();
    json!({ "exports": exports }).to_string().into_bytes()
}

#[test]
fn a_gzip_content_encoded_list_is_unpacked() {
    let specs = bundles(3, 4, Encoding::GzipFile);
    let srv = server(specs.clone());
    for body in [gzip(&list_json(&specs)), gzip(&gzip(&list_json(&specs)))] {
        srv.push_fault(
            Route::List,
            Fault::Status {
                code: 200,
                headers: vec![("Content-Encoding".into(), "gzip".into())],
                body,
            },
        );
        let run = Tap::new().config(&config(&srv)).run().success();
        assert_eq!(run.records().len(), total_events(&specs));
        assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
        assert_eq!(srv.pending_faults(), 0);
    }
    let lists = srv
        .requests()
        .iter()
        .filter(|r| r.path == "/api/v1/export/list")
        .count();
    assert_eq!(lists, 2, "one list call per run, none retried");
}

#[test]
fn base_url_with_credentials_a_query_or_a_fragment_is_refused() {
    let srv = server(bundles(1, 1, Encoding::GzipFile));
    let port = srv.addr().port();
    for (base_url, word) in [
        (
            format!("http://user:Hunter2pw@127.0.0.1:{port}"),
            "password",
        ),
        (format!("http://Hunter2pw@127.0.0.1:{port}"), "password"),
        (format!("http://127.0.0.1:{port}/?start=1"), "query"),
        (format!("http://127.0.0.1:{port}/#x"), "fragment"),
    ] {
        let mut cfg = config(&srv);
        cfg["base_url"] = json!(base_url);
        let run = Tap::new().config(&cfg).run().failure(2);
        assert!(run.stdout.is_empty(), "{}", run.stdout);
        let last = run.last_log();
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(last.contains("'base_url'") && last.contains(word), "{last}");
        assert!(!run.stderr.contains("Hunter2pw"), "{}", run.stderr);
    }
    assert!(srv.requests().is_empty(), "nothing was sent");
}

/// A proxy on 127.0.0.1 that answers every request with 407 and keeps the
/// request heads it was sent.
struct FakeProxy {
    url: String,
    heads: Arc<Mutex<Vec<String>>>,
}

impl FakeProxy {
    fn start() -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        // Left running: it ends with the test process.
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && matches!(conn.read(&mut byte), Ok(1)) {
                    head.push(byte[0]);
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).into_owned());
                let _ = conn.write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        FakeProxy { url, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    /// Points every proxy variable at this proxy.
    fn env(&self, tap: Tap) -> Tap {
        let mut tap = tap;
        for var in [
            "HTTP_PROXY",
            "http_proxy",
            "HTTPS_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            tap = tap.env(var, &self.url);
        }
        tap.env("NO_PROXY", "").env("no_proxy", "")
    }
}

#[test]
fn loopback_is_never_reached_through_a_proxy() {
    let proxy = FakeProxy::start();
    let specs = bundles(2, 3, Encoding::GzipFile);
    let srv = server(specs.clone());
    let run = proxy.env(Tap::new().config(&config(&srv))).run().success();
    assert_eq!(run.records().len(), total_events(&specs));
    assert!(proxy.heads().is_empty(), "proxied: {:?}", proxy.heads());
    assert!(srv.requests().iter().all(|r| r.authorized));
}

#[test]
fn a_proxy_refusing_the_tunnel_is_named_not_the_key() {
    let proxy = FakeProxy::start();
    let mut cfg = json!({
        "api_key": KEY,
        "start_date": "2024-01-01",
        "base_url": "https://export.fullstory.example",
        "retry_base_delay": 0.05,
        "retry_max_delay": 0.2,
        "max_retries": 4,
    });
    cfg["request_timeout"] = json!(5);
    let run = proxy.env(Tap::new().config(&cfg)).run().failure(1);
    let last = run.last_log();
    assert!(
        last.contains("proxy") && last.contains("HTTPS_PROXY"),
        "{last}"
    );
    assert!(!last.contains("api_key"), "{last}");
    let heads = proxy.heads();
    assert_eq!(heads.len(), 1, "a 407 is not retried: {heads:?}");
    assert!(heads[0].starts_with("CONNECT export.fullstory.example:443 "));
    assert!(!heads[0].to_lowercase().contains("authorization: basic"));
}

#[test]
fn redirects_keep_the_key_on_its_origin_and_say_where_they_went() {
    let specs = bundles(2, 3, Encoding::GzipFile);

    // Same origin: followed with the key.
    let srv = server(specs.clone());
    srv.push_fault(
        Route::Get(Some(specs[0].id.clone())),
        Fault::Status {
            code: 302,
            headers: vec![(
                "Location".into(),
                format!("/api/v1/export/get?id={}", specs[0].id),
            )],
            body: Vec::new(),
        },
    );
    let run = Tap::new().config(&config(&srv)).run().success();
    assert_eq!(run.records().len(), total_events(&specs));
    assert!(srv.requests().iter().all(|r| r.authorized));

    // Another origin: followed without the key, and the 401 from there
    // says a redirect happened and where to.
    let srv = server(specs.clone());
    let elsewhere = Server::start(ServerOptions {
        api_key: KEY.into(),
        bundles: specs.clone(),
        ..ServerOptions::default()
    })
    .unwrap();
    srv.push_fault(
        Route::List,
        Fault::Status {
            code: 307,
            headers: vec![(
                "Location".into(),
                format!("{}/api/v1/export/list?start=1", elsewhere.url()),
            )],
            body: Vec::new(),
        },
    );
    let run = Tap::new().config(&config(&srv)).run().failure(1);
    let last = run.last_log();
    let host = format!("127.0.0.1:{}", elsewhere.addr().port());
    assert!(
        last.contains("redirect") && last.contains(&host) && last.contains("base_url"),
        "{last}"
    );
    assert!(!last.contains("valid FullStory API key"), "{last}");
    let there = elsewhere.requests();
    assert_eq!(there.len(), 1);
    assert!(!there[0].authorized, "the key went to another origin");
}
