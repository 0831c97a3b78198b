//! Tests of the demo server: wire format, faults, rate limit and synthetic data.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use serde_json::Value;

use super::http::percent_decode;
use super::json_text::{escape_into, percent_encode};
use super::synth::ID_MAX;
use super::*;

const KEY: &str = "test-key";
const DAY: i64 = 86_400;
const T0: i64 = 1_704_067_200; // 2024-01-01T00:00:00Z

/// A response as read off the socket, however the connection ended.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Error that ended the read, if it did not end with EOF.
    err: Option<std::io::Error>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("response body is JSON")
    }

    fn content_length(&self) -> usize {
        self.header("content-length")
            .expect("Content-Length")
            .parse()
            .expect("numeric Content-Length")
    }
}

/// Send a raw request and read until the server closes. `status` is 0 when
/// no head came back.
fn raw(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request).expect("send request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let err = loop {
        match s.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => break Some(e),
        }
    };
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Resp {
            status: 0,
            headers: vec![],
            body: buf,
            err,
        };
    };
    let head = std::str::from_utf8(&buf[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("header line");
            (k.to_string(), v.to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
        err,
    }
}

/// GET `path_and_query` with `Authorization: Basic <key>` when `key` is set.
fn get(server: &Server, path_and_query: &str, key: Option<&str>) -> Resp {
    let auth = key
        .map(|k| format!("Authorization: Basic {k}\r\n"))
        .unwrap_or_default();
    let req =
        format!("GET {path_and_query} HTTP/1.1\r\nHost: localhost\r\n{auth}Accept: */*\r\n\r\n");
    raw(server.addr(), req.as_bytes())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

fn server_with(bundles: Vec<BundleSpec>, rate_limit: Option<(usize, Duration)>) -> Server {
    Server::start(ServerOptions {
        api_key: KEY.into(),
        bundles,
        page_size: 20,
        rate_limit,
        ..ServerOptions::default()
    })
    .expect("start server")
}

/// Small plain bundles, cheap to build.
fn tiny_bundles(n: usize) -> Vec<BundleSpec> {
    (0..n as i64)
        .map(|k| {
            let start = T0 + k * DAY;
            BundleSpec::from_events_json(
                (start * 100 + 48).to_string(),
                start,
                start + DAY,
                format!(r#"[{{"k":{k}}}]"#).into_bytes(),
                1,
                Encoding::Plain,
            )
        })
        .collect()
}

fn ids_of(list: &Value) -> Vec<u64> {
    list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Id"].as_u64().unwrap())
        .collect()
}

#[test]
fn list_pages_by_stop() {
    let server = server_with(
        synthetic_bundles(25, 3, T0, DAY, 7, Encoding::GzipFile),
        None,
    );
    let page1 = get(&server, "/api/v1/export/list?start=1", Some(KEY));
    assert_eq!(page1.status, 200);
    assert_eq!(page1.header("content-type"), Some("application/json"));
    assert_eq!(page1.header("connection"), Some("close"));
    assert_eq!(page1.content_length(), page1.body.len());
    let v = page1.json();
    let exports = v["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 20);
    assert_eq!(exports[0]["Id"].as_u64(), Some((T0 * 100 + 48) as u64));
    assert_eq!(exports[0]["Start"].as_i64(), Some(T0));
    assert_eq!(exports[0]["Stop"].as_i64(), Some(T0 + DAY));
    let stops: Vec<i64> = exports
        .iter()
        .map(|e| e["Stop"].as_i64().unwrap())
        .collect();
    assert!(stops.windows(2).all(|w| w[0] < w[1]));

    let last = stops[19];
    let page2 = get(
        &server,
        &format!("/api/v1/export/list?start={last}"),
        Some(KEY),
    )
    .json();
    let exports2 = page2["exports"].as_array().unwrap();
    assert_eq!(exports2.len(), 5);
    assert!(exports2.iter().all(|e| e["Stop"].as_i64().unwrap() > last));
    assert_eq!(exports2[0]["Start"].as_i64(), Some(last));

    let last2 = exports2[4]["Stop"].as_i64().unwrap();
    let page3 = get(
        &server,
        &format!("/api/v1/export/list?start={last2}"),
        Some(KEY),
    )
    .json();
    assert_eq!(page3, serde_json::json!({"exports": []}));
}

#[test]
fn list_orders_by_stop_and_renders_ids() {
    let mut bundles = tiny_bundles(3);
    bundles.reverse();
    bundles[0].id = "abc-1".into(); // not a number: emitted as a string
    bundles[1].id = "007".into(); // not canonical: kept as a string
    let server = server_with(bundles, None);
    let r = get(&server, "/api/v1/export/list?start=1", Some(KEY));
    let text = String::from_utf8(r.body).unwrap();
    let expected = format!(
        r#"{{"exports":[{{"Id":{},"Start":{},"Stop":{}}},{{"Id":"007","Start":{},"Stop":{}}},{{"Id":"abc-1","Start":{},"Stop":{}}}]}}"#,
        T0 * 100 + 48,
        T0,
        T0 + DAY,
        T0 + DAY,
        T0 + 2 * DAY,
        T0 + 2 * DAY,
        T0 + 3 * DAY
    );
    assert_eq!(text, expected);
}

#[test]
fn list_rejects_bad_start() {
    let server = server_with(tiny_bundles(2), None);
    for q in [
        "",
        "?start=",
        "?start=0",
        "?start=-5",
        "?start=abc",
        "?start=1.5",
        "?begin=10",
    ] {
        let r = get(&server, &format!("/api/v1/export/list{q}"), Some(KEY));
        assert_eq!(r.status, 400, "query {q:?}");
        assert!(r.json().is_object());
    }
    // Parameters are percent-decoded and may come in any order.
    let r = get(&server, "/api/v1/export/list?x=1&start=%31", Some(KEY));
    assert_eq!(r.status, 200);
    assert_eq!(ids_of(&r.json()).len(), 2);
}

#[test]
fn auth_is_exact() {
    let server = server_with(tiny_bundles(1), None);
    let id = (T0 * 100 + 48).to_string();
    let paths = [
        "/api/v1/export/list?start=1".to_string(),
        format!("/api/v1/export/get?id={id}"),
    ];
    for path in &paths {
        for key in [
            None,
            Some("wrong"),
            Some("test-ke"),
            Some("test-key2"),
            Some("TEST-KEY"),
        ] {
            let r = get(&server, path, key);
            assert_eq!(r.status, 401, "{path} {key:?}");
            assert_eq!(r.body, br#"{"code":"unauthorized"}"#);
        }
        // Base64 of "test-key:" is what a Basic-auth library would send.
        let r = raw(
            server.addr(),
            format!("GET {path} HTTP/1.1\r\nAuthorization: Basic dGVzdC1rZXk6\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 401);
        // Header names are case-insensitive.
        let r = raw(
            server.addr(),
            format!("GET {path} HTTP/1.1\r\nauthorization: Basic {KEY}\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 200);
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 14);
    assert_eq!(reqs.iter().filter(|r| r.authorized).count(), 2);
    assert!(
        reqs.iter()
            .filter(|r| !r.authorized)
            .all(|r| r.status == Some(401))
    );
    // Unauthorized /get requests still count.
    assert_eq!(server.get_count(&id), 7);
}

#[test]
fn get_serves_each_encoding() {
    let json = synthetic_events(3, T0, T0 + DAY, 40);
    let mk = |id: &str, enc| BundleSpec::from_events_json(id, T0, T0 + DAY, json.clone(), 40, enc);
    let server = server_with(
        vec![
            mk("1", Encoding::GzipFile),
            mk("2", Encoding::ContentEncodingGzip),
            mk("3", Encoding::Plain),
        ],
        None,
    );

    let r = get(&server, "/api/v1/export/get?id=1", Some(KEY));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/gzip"));
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(
        r.header("content-disposition"),
        Some(r#"attachment; filename="1-DataExport.json.gz""#)
    );
    assert_eq!(r.content_length(), r.body.len());
    assert_eq!(&r.body[..2], &[0x1f, 0x8b]);
    assert_eq!(gunzip(&r.body), json);

    let r = get(&server, "/api/v1/export/get?id=2", Some(KEY));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("content-disposition"), None);
    assert_eq!(gunzip(&r.body), json);

    let r = get(&server, "/api/v1/export/get?id=3", Some(KEY));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, json);

    let r = get(&server, "/api/v1/export/get?id=4", Some(KEY));
    assert_eq!(r.status, 404);
    let r = get(&server, "/api/v1/export/get", Some(KEY));
    assert_eq!(r.status, 400);
    assert_eq!(server.get_count("1"), 1);
    assert_eq!(server.get_count("4"), 1);
}

#[test]
fn synthetic_bundles_encodings_agree() {
    let gz = synthetic_bundles(3, 20, T0, 3600, 9, Encoding::GzipFile);
    let plain = synthetic_bundles(3, 20, T0, 3600, 9, Encoding::Plain);
    for (k, (g, p)) in gz.iter().zip(&plain).enumerate() {
        let start = T0 + k as i64 * 3600;
        assert_eq!((g.start, g.stop), (start, start + 3600));
        assert_eq!(g.id, (start * 100 + 48).to_string());
        assert_eq!(g.events, 20);
        assert_eq!(gunzip(&g.body), p.body);
        let rows: Vec<Value> = serde_json::from_slice(&p.body).unwrap();
        assert_eq!(rows.len(), 20);
    }
    // Different bundles get different data.
    assert_ne!(plain[0].body, plain[1].body);
}

#[test]
fn unknown_paths_and_methods() {
    let server = server_with(tiny_bundles(1), None);
    assert_eq!(get(&server, "/api/v1/export/nope", Some(KEY)).status, 404);
    assert_eq!(get(&server, "/", None).status, 404);
    let r = raw(
        server.addr(),
        format!("POST /api/v1/export/list?start=1 HTTP/1.1\r\nAuthorization: Basic {KEY}\r\nContent-Length: 5\r\n\r\nhello")
            .as_bytes(),
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    let r = raw(server.addr(), b"garbage\r\n\r\n");
    assert_eq!(r.status, 400);
}

#[test]
fn events_parse_with_exact_ids() {
    let (start, stop) = (T0, T0 + DAY);
    let bytes = synthetic_events(42, start, stop, 300);
    let rows: Vec<Value> = serde_json::from_slice(&bytes).expect("JSON array");
    assert_eq!(rows.len(), 300);
    let per_event = bytes.len() / 300;
    assert!(
        (900..=1900).contains(&per_event),
        "{per_event} bytes per event"
    );

    let mut prev = String::new();
    for row in &rows {
        let obj = row.as_object().expect("object rows");
        for k in ["IndvId", "UserId", "SessionId", "PageId"] {
            let id = obj[k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} is not a u64: {}", obj[k]));
            assert!((1u64 << 52..=ID_MAX).contains(&id), "{k} = {id}");
        }
        let ts = obj["EventStart"].as_str().unwrap();
        assert_eq!(ts.len(), 24, "{ts}");
        let t = chrono::DateTime::parse_from_rfc3339(ts)
            .unwrap()
            .timestamp();
        assert!((start..stop).contains(&t));
        assert!(ts >= prev.as_str(), "rows ordered by EventStart");
        prev = ts.to_string();

        let etype = obj["EventType"].as_str().unwrap();
        assert_eq!(obj.contains_key("LoadDomContentTime"), etype == "load");
        assert_eq!(obj.contains_key("ReqUrl"), etype == "request");
        assert_eq!(obj.contains_key("EventCustomName"), etype == "custom");
        if etype == "request" {
            assert!(obj["ReqStatus"].is_u64());
        }
        if etype == "custom" {
            assert!(obj["evt_amount_real"].is_number());
            // The first custom event's count is deliberately a string.
            assert!(obj["evt_count_int"].is_i64() || obj["evt_count_int"] == "n/a");
        }
        if let Some(tags) = obj.get("user_tags_strs") {
            assert!(tags.as_array().unwrap().iter().all(Value::is_string));
        }
        if let Some(v) = obj.get("user_vip_bool") {
            assert!(v.is_boolean());
        }
        assert!(obj["EventPageOffset"].as_i64().unwrap() >= 0);
    }

    // The full field mix shows up somewhere in a few hundred rows.
    let has = |k: &str| rows.iter().any(|r| r.get(k).is_some());
    for k in [
        "UserEmail",
        "UserDisplayName",
        "UserAppKey",
        "EventCumulativeLayoutShift",
        "EventTargetSelectorTok",
        "EventVarErrorKind",
        "EventModFrustrated",
        "PageRefererUrl",
        "PageLatLong",
        "AppName",
        "user_plan_str",
        "evt_amount_real",
        "page_section_str",
        "user_vip_bool",
        "evt_count_int",
        "user_tags_strs",
        "user_signup_date",
    ] {
        assert!(has(k), "no row has {k}");
    }
    let types: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["EventType"].as_str().unwrap())
        .collect();
    for t in [
        "click",
        "navigate",
        "load",
        "request",
        "custom",
        "console_message",
        "change",
    ] {
        assert!(types.contains(t), "no {t} event");
    }
    // Sparse keys: some rows lack fields others have.
    assert!(rows.iter().any(|r| r.get("UserEmail").is_none()));
    // Non-ASCII, quotes, backslashes, control characters survive decoding.
    let text: String = rows.iter().map(|r| r.to_string()).collect();
    assert!(text.contains('é') || text.contains('ö') || text.contains('ë'));
    assert!(text.contains("\\\"") && text.contains("\\\\") && text.contains("\\n"));
    // Raw bytes use both escape styles.
    let raw_text = String::from_utf8(bytes).unwrap();
    assert!(
        raw_text.contains("\\u00"),
        "some rows escape non-ASCII as \\uXXXX"
    );
    assert!(!raw_text.is_ascii(), "some rows carry raw UTF-8");
}

#[test]
fn events_are_deterministic_and_sometimes_hit_i64_max() {
    let a = synthetic_events(5, T0, T0 + 3600, 50);
    assert_eq!(a, synthetic_events(5, T0, T0 + 3600, 50));
    assert_ne!(a, synthetic_events(6, T0, T0 + 3600, 50));
    assert_eq!(synthetic_events(5, T0, T0 + 3600, 0), b"[]");

    let with_max = (0..20u64)
        .filter(|&seed| {
            let rows: Vec<Value> =
                serde_json::from_slice(&synthetic_events(seed, T0, T0 + 3600, 40)).unwrap();
            rows.iter().any(|r| {
                ["IndvId", "UserId", "SessionId", "PageId"]
                    .iter()
                    .any(|k| r[*k].as_u64() == Some(ID_MAX))
            })
        })
        .count();
    assert!(
        with_max > 0 && with_max < 20,
        "{with_max} of 20 seeds carry i64::MAX"
    );
    // A one-second window still keeps every EventStart inside it.
    let rows: Vec<Value> = serde_json::from_slice(&synthetic_events(1, T0, T0 + 1, 30)).unwrap();
    assert!(rows.iter().all(|r| {
        r["EventStart"]
            .as_str()
            .unwrap()
            .starts_with("2024-01-01T00:00:00.")
    }));
}

#[test]
fn escapes_round_trip() {
    let s = "quote\" back\\ nl\n cr\r tab\t ctl\u{1} bell\u{7} é 中 🎉 /slash";
    for (ascii, slash) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut out = String::new();
        escape_into(&mut out, s, ascii, slash);
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, s);
        assert_eq!(out.is_ascii(), ascii);
    }
}

#[test]
fn percent_encoding_keeps_only_unreserved_bytes() {
    let all: String = (0u8..0x80).map(char::from).chain("é中🎉".chars()).collect();
    let mut want = String::new();
    for b in all.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            want.push(char::from(b));
        } else {
            want.push_str(&format!("%{b:02X}"));
        }
    }
    assert_eq!(percent_encode(&all), want);
    assert_eq!(percent_decode(&want), all);
}

#[test]
fn percent_decoding_is_lenient() {
    assert_eq!(percent_decode("a+b%2B%2b%zz%4"), "a b++%zz%4");
    assert_eq!(percent_decode("%+1%"), "% 1%");
    assert_eq!(percent_decode("%C3%A9%ff"), "é\u{FFFD}");
}

#[test]
fn status_fault_then_normal() {
    let server = server_with(tiny_bundles(1), None);
    let id = (T0 * 100 + 48).to_string();
    server.push_fault(
        Route::Get(None),
        Fault::Status {
            code: 429,
            headers: vec![("Retry-After".into(), "7".into())],
            body: br#"{"code":"too_many"}"#.to_vec(),
        },
    );
    let path = format!("/api/v1/export/get?id={id}");
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, br#"{"code":"too_many"}"#);
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, br#"[{"k":0}]"#);
    assert_eq!(server.get_count(&id), 2);
    let reqs = server.requests();
    assert_eq!(reqs[0].fault, Some("status"));
    assert_eq!(reqs[0].status, Some(429));
    assert_eq!(reqs[1].fault, None);
    assert_eq!(reqs[1].status, Some(200));
    assert_eq!(reqs[1].query, format!("id={id}"));
}

#[test]
fn faults_match_routes_in_order() {
    let server = server_with(tiny_bundles(2), None);
    let a = (T0 * 100 + 48).to_string();
    let b = ((T0 + DAY) * 100 + 48).to_string();
    let status = |code| Fault::Status {
        code,
        headers: vec![],
        body: vec![],
    };
    server.push_fault(Route::Get(Some(b.clone())), status(503));
    server.push_fault(Route::List, status(500));
    server.push_fault(Route::Get(Some(b.clone())), status(502));
    assert_eq!(server.pending_faults(), 3);

    assert_eq!(
        get(&server, &format!("/api/v1/export/get?id={a}"), Some(KEY)).status,
        200
    );
    assert_eq!(
        get(&server, &format!("/api/v1/export/get?id={b}"), Some(KEY)).status,
        503
    );
    assert_eq!(
        get(&server, &format!("/api/v1/export/get?id={b}"), Some(KEY)).status,
        502
    );
    assert_eq!(
        get(&server, &format!("/api/v1/export/get?id={b}"), Some(KEY)).status,
        200
    );
    assert_eq!(
        get(&server, "/api/v1/export/list?start=1", Some(KEY)).status,
        500
    );
    assert_eq!(
        get(&server, "/api/v1/export/list?start=1", Some(KEY)).status,
        200
    );
    assert_eq!(server.pending_faults(), 0);
}

#[test]
fn a_user_deleted_after_the_list_is_listed_but_not_found() {
    let server = server_with(Vec::new(), None);
    let gone = "9007199254740995";
    let kept = "9007199254740993";
    assert!(server.delete_user_after_list(gone));
    assert!(!server.delete_user_after_list("no-such-user"));
    let list = get(&server, "/v2/users", Some(KEY)).json();
    let ids: Vec<&str> = list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&gone) && ids.contains(&kept), "{ids:?}");
    let fetch = |id: &str| {
        get(
            &server,
            &format!("/v2/users/{id}?include_schema=true"),
            Some(KEY),
        )
    };
    let r = fetch(gone);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["code"], "resource_not_found");
    // It stays gone; the others are untouched.
    assert_eq!(fetch(gone).status, 404);
    let r = fetch(kept);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], kept);
}

#[test]
fn body_faults() {
    let server = server_with(
        synthetic_bundles(1, 30, T0, DAY, 1, Encoding::GzipFile),
        None,
    );
    let id = (T0 * 100 + 48).to_string();
    let path = format!("/api/v1/export/get?id={id}");
    let full = get(&server, &path, Some(KEY));
    let len = full.body.len();
    assert!(len > 1000);

    server.push_fault(Route::Get(None), Fault::Truncate { after: 100 });
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), len);
    assert_eq!(r.body, full.body[..100]);
    assert!(r.err.is_none(), "truncation ends with a clean EOF");

    server.push_fault(Route::Get(None), Fault::Reset { after: 200 });
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.content_length(), len);
    assert!(r.body.len() <= 200);
    assert_eq!(r.body, full.body[..r.body.len()]);
    #[cfg(target_os = "linux")]
    assert_eq!(
        r.err.as_ref().map(|e| e.kind()),
        Some(std::io::ErrorKind::ConnectionReset)
    );

    server.push_fault(
        Route::Get(None),
        Fault::Stall {
            after: 10,
            pause: Duration::from_millis(300),
        },
    );
    let t = Instant::now();
    let r = get(&server, &path, Some(KEY));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.body, full.body);

    server.push_fault(
        Route::Get(None),
        Fault::Trickle {
            chunk: len / 4 + 1,
            delay: Duration::from_millis(100),
        },
    );
    let t = Instant::now();
    let r = get(&server, &path, Some(KEY));
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.body, full.body);

    server.push_fault(
        Route::Get(None),
        Fault::LyingContentLength { declared: len + 50 },
    );
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.content_length(), len + 50);
    assert_eq!(r.body, full.body);

    server.push_fault(
        Route::List,
        Fault::Body {
            content_type: "text/html".into(),
            body: b"<html>oops</html>".to_vec(),
        },
    );
    let r = get(&server, "/api/v1/export/list?start=1", Some(KEY));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert_eq!(r.body, b"<html>oops</html>");

    server.push_fault(Route::List, Fault::Drop);
    let r = get(&server, "/api/v1/export/list?start=1", Some(KEY));
    assert_eq!(r.status, 0);
    assert!(r.body.is_empty());

    let reqs = server.requests();
    assert_eq!(reqs.last().unwrap().status, None);
    assert_eq!(reqs.last().unwrap().fault, Some("drop"));
    assert_eq!(server.get_count(&id), 6);

    server.push_fault(Route::List, Fault::Echo { code: 502 });
    let r = get(&server, "/api/v1/export/list?start=1", Some(KEY));
    assert_eq!(r.status, 502);
    let echoed = String::from_utf8_lossy(&r.body).to_lowercase();
    assert!(echoed.starts_with("get /api/v1/export/list?start=1 http/1.1\r\n"));
    assert!(echoed.contains(&format!("authorization: basic {}", KEY.to_lowercase())));
}

#[test]
fn list_override() {
    let server = server_with(tiny_bundles(2), None);
    let body = br#"{"exports":[{"Id":2,"Start":20,"Stop":30},{"Id":2,"Start":20,"Stop":30},{"Id":1,"Start":10,"Stop":20}]}"#;
    server.set_list_override(Some(body.to_vec()));
    for start in [1i64, 999_999_999_999] {
        let r = get(
            &server,
            &format!("/api/v1/export/list?start={start}"),
            Some(KEY),
        );
        assert_eq!(r.body, body);
    }
    assert_eq!(
        get(&server, "/api/v1/export/list?start=0", Some(KEY)).status,
        400
    );
    server.set_list_override(None);
    assert_eq!(
        ids_of(&get(&server, "/api/v1/export/list?start=1", Some(KEY)).json()).len(),
        2
    );
}

#[test]
fn rate_limit_window() {
    let server = server_with(tiny_bundles(1), Some((2, Duration::from_secs(60))));
    let path = format!("/api/v1/export/get?id={}", T0 * 100 + 48);
    assert_eq!(get(&server, &path, Some(KEY)).status, 200);
    // A fault-served download does not use a slot.
    server.push_fault(Route::Get(None), Fault::Truncate { after: 3 });
    assert_eq!(get(&server, &path, Some(KEY)).status, 200);
    // Neither do unauthorized requests or list calls.
    assert_eq!(get(&server, &path, None).status, 401);
    assert_eq!(
        get(&server, "/api/v1/export/list?start=1", Some(KEY)).status,
        200
    );
    assert_eq!(get(&server, &path, Some(KEY)).status, 200);
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.status, 429);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((59..=60).contains(&secs), "Retry-After {secs}");
    assert_eq!(r.json()["code"], "rate_limited");
}

#[test]
fn rate_limit_frees_slots() {
    let server = server_with(tiny_bundles(1), Some((1, Duration::from_millis(600))));
    let path = format!("/api/v1/export/get?id={}", T0 * 100 + 48);
    assert_eq!(get(&server, &path, Some(KEY)).status, 200);
    let r = get(&server, &path, Some(KEY));
    assert_eq!(r.status, 429);
    // Under a second left still rounds up to 1.
    assert_eq!(r.header("retry-after"), Some("1"));
    std::thread::sleep(Duration::from_millis(650));
    assert_eq!(get(&server, &path, Some(KEY)).status, 200);
}

#[test]
fn drop_stops_server() {
    let server = server_with(tiny_bundles(1), None);
    let addr = server.addr();
    assert!(server.url().starts_with("http://127.0.0.1:"));
    drop(server);
    // The listener is closed once the accept thread is joined.
    assert!(TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
}

#[test]
fn connections_that_send_nothing_are_ignored() {
    let server = server_with(tiny_bundles(1), None);
    drop(TcpStream::connect(server.addr()).unwrap());
    assert_eq!(
        get(&server, "/api/v1/export/list?start=1", Some(KEY)).status,
        200
    );
    assert_eq!(server.requests().len(), 1);
}

/// A POST with a JSON body, authorized with `key`.
fn post(server: &Server, path: &str, key: &str, body: &str) -> Resp {
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(server.addr(), req.as_bytes())
}

#[test]
fn segment_export_flow_over_the_bundles_events() {
    let bundles = synthetic_bundles(2, 30, T0, DAY, 5, Encoding::GzipFile);
    let server = server_with(bundles.clone(), None);
    server.set_pending_polls(1);
    let create = |kind: &str| {
        post(
            &server,
            "/segments/v1/exports",
            KEY,
            &format!(
                r#"{{"segmentId":"everyone","type":"{kind}","format":"FORMAT_NDJSON","timeRange":{{"start":"2024-01-02T00:00:00Z","end":"2024-01-03T00:00:00Z"}}}}"#
            ),
        )
    };
    assert_eq!(create("TYPE_NOPE").status, 400);
    assert_eq!(
        post(&server, "/segments/v1/exports", "wrong", "{}").status,
        401
    );
    let created = create("TYPE_EVENT");
    assert_eq!(created.status, 200);
    let op = created.json()["operationId"].as_str().unwrap().to_string();
    let poll = get(&server, &format!("/operations/v1/{op}"), Some(KEY));
    assert_eq!(poll.json()["state"], "PENDING");
    let poll = get(&server, &format!("/operations/v1/{op}"), Some(KEY)).json();
    assert_eq!(poll["state"], "COMPLETED");
    let sid = poll["results"]["searchExportId"]
        .as_str()
        .unwrap()
        .to_string();
    let results = get(
        &server,
        &format!("/search/v1/exports/{sid}/results"),
        Some(KEY),
    )
    .json();
    let location = results["location"].as_str().unwrap();
    let path = location.strip_prefix(&server.url()).unwrap();
    // A signed link refuses a second authority, and the key must not go there.
    assert_eq!(get(&server, path, Some(KEY)).status, 400);
    let file = get(&server, path, None);
    assert_eq!(file.status, 200);
    let text = String::from_utf8(gunzip(&file.body)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 30, "the second bundle's events");
    let want = String::from_utf8(gunzip(&bundles[1].body)).unwrap();
    for line in &lines {
        assert!(want.contains(line), "{line}");
    }
    assert_eq!(
        get(&server, "/operations/v1/op-nope", Some(KEY)).status,
        404
    );

    // Expired links are refused; individuals are one row per IndvId.
    server.expire_next_links(1);
    let results = get(
        &server,
        &format!("/search/v1/exports/{sid}/results"),
        Some(KEY),
    )
    .json();
    let path = results["location"]
        .as_str()
        .unwrap()
        .replace(&server.url(), "");
    assert_eq!(get(&server, &path, None).status, 403);
    server.set_pending_polls(0);
    let op = create("TYPE_INDIVIDUAL").json()["operationId"]
        .as_str()
        .unwrap()
        .to_string();
    let poll = get(&server, &format!("/operations/v1/{op}"), Some(KEY)).json();
    let sid = poll["results"]["searchExportId"].as_str().unwrap();
    let results = get(
        &server,
        &format!("/search/v1/exports/{sid}/results"),
        Some(KEY),
    )
    .json();
    let path = results["location"]
        .as_str()
        .unwrap()
        .replace(&server.url(), "");
    let text = String::from_utf8(gunzip(&get(&server, &path, None).body)).unwrap();
    let ids: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["IndvId"].clone())
        .collect();
    let unique: std::collections::HashSet<String> = ids.iter().map(Value::to_string).collect();
    assert!(!ids.is_empty() && unique.len() == ids.len());

    server.fail_next_operation("boom");
    let op = create("TYPE_EVENT").json()["operationId"]
        .as_str()
        .unwrap()
        .to_string();
    let poll = get(&server, &format!("/operations/v1/{op}"), Some(KEY)).json();
    assert_eq!(poll["state"], "FAILED");
    assert_eq!(poll["errorDetails"], "boom");
}

#[test]
fn custom_properties_of_every_type_some_first_on_later_days() {
    let bundles = synthetic_bundles(4, 200, T0, DAY, 7, Encoding::Plain);
    let mut first_day = std::collections::BTreeMap::new();
    let mut misfits = 0;
    for (day, b) in bundles.iter().enumerate() {
        let rows: Vec<Value> = serde_json::from_slice(&b.body).unwrap();
        for row in &rows {
            for (k, v) in row.as_object().unwrap() {
                if k.starts_with("user_") || k.starts_with("evt_") || k.starts_with("page_") {
                    first_day.entry(k.clone()).or_insert(day as i64);
                }
                if k == "evt_count_int" && v == "n/a" {
                    misfits += 1;
                }
            }
        }
    }
    let seen: Vec<&String> = first_day.keys().collect();
    let mut want: Vec<&str> = crate::CUSTOM_PROPERTIES.to_vec();
    want.sort_unstable();
    assert_eq!(seen, want);
    for (name, day) in &first_day {
        assert_eq!(*day, crate::first_day_of(name), "{name}");
    }
    // One value not of its type per bundle.
    assert_eq!(misfits, 4);
    let suffixes: std::collections::BTreeSet<&str> = crate::CUSTOM_PROPERTIES
        .iter()
        .map(|p| p.rsplit_once('_').unwrap().1)
        .collect();
    assert_eq!(suffixes.len(), 10, "every type: {suffixes:?}");
}

#[test]
fn extra_custom_properties_for_benchmarks() {
    let rows: Vec<Value> =
        serde_json::from_slice(&crate::synthetic_events_with(3, T0, T0 + DAY, 50, 12)).unwrap();
    for row in &rows {
        let extra = row
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("evt_extra"))
            .count();
        assert_eq!(extra, 12);
    }
}
