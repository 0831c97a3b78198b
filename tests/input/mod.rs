//! Bad input: every case exits 2 with one line naming the file (and key), and
//! writes nothing to stdout. Plus the checks on secrets.

use fullstory_demo::Encoding;
use serde_json::{Value, json};

use crate::support::*;

/// Runs with a good config and `extra` args; asserts the input error.
fn rejects(tap: Tap, words: &[&str]) {
    let run = tap.run().failure(2);
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    let last = run.last_log();
    assert!(last.contains("ERROR"), "{last}");
    for w in words {
        assert!(last.contains(w), "{w:?} not in {last:?}");
    }
}

fn good_config() -> Value {
    json!({"api_key": KEY, "start_date": "2024-01-01", "base_url": "http://127.0.0.1:9"})
}

#[test]
fn state_file_problems() {
    let tap = || Tap::new().config(&good_config());
    rejects(
        tap().arg("--state").arg("/nonexistent/state.json"),
        &["state file", "/nonexistent/state.json"],
    );
    let t = tap();
    let p = t.file("empty.json", "");
    rejects(
        t.arg("--state").arg(p.to_string_lossy()),
        &["state file", "empty"],
    );
    let t = tap();
    let p = t.file("bad.json", "{\"bookmarks\": ");
    rejects(
        t.arg("--state").arg(p.to_string_lossy()),
        &["state file", "not valid JSON"],
    );
    rejects(tap().state(&json!([1])), &["state file", "array"]);
    rejects(
        tap().state(&json!({"events": 12})),
        &["state file", "'events'"],
    );
    rejects(
        tap().state(&json!({"bookmarks": {"events": {"bundle_stop": "soon"}}})),
        &["state file", "bundle_stop"],
    );
    // A directory cannot be read as a file.
    let t = tap();
    let dir = t.path("");
    rejects(
        t.arg("--state").arg(dir.to_string_lossy()),
        &["state file", "cannot read"],
    );
}

#[test]
fn catalog_file_problems() {
    let tap = || Tap::new().config(&good_config());
    rejects(
        tap().arg("--catalog").arg("/nonexistent/catalog.json"),
        &["catalog file"],
    );
    rejects(
        tap().catalog(&json!({"streams": 3})),
        &["catalog file", "'streams'"],
    );
    rejects(tap().catalog(&json!("x")), &["catalog file", "string"]);
    rejects(
        tap().catalog(
            &json!({"streams": [{"tap_stream_id": "sessions", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": true}}]}]}),
        ),
        &["catalog file", "'sessions'"],
    );
    rejects(
        tap().catalog(
            &json!({"streams": [{"tap_stream_id": "events", "metadata": [
            {"breadcrumb": [], "metadata": {"selected": true}},
            {"breadcrumb": ["properties", "NoSuchField"], "metadata": {"selected": true}}]}]}),
        ),
        &["catalog file", "'NoSuchField'"],
    );
}

#[test]
fn config_problems_name_the_file_and_key() {
    let t = Tap::new();
    let p = t.file("empty.json", "  \n");
    rejects(
        t.arg("--config").arg(p.to_string_lossy()),
        &["config file", "empty"],
    );
    let mut cfg = good_config();
    cfg["base_url"] = json!("ftp://127.0.0.1");
    rejects(Tap::new().config(&cfg), &["config file", "'base_url'"]);
    let mut cfg = good_config();
    cfg["api_key"] = json!(42);
    rejects(
        Tap::new().config(&cfg),
        &["config file", "'api_key'", "string"],
    );
    let mut cfg = good_config();
    cfg["request_timeout"] = json!(-1);
    rejects(
        Tap::new().config(&cfg),
        &["config file", "'request_timeout'"],
    );
    let mut cfg = good_config();
    cfg["user_agent"] = json!("a\r\nX-Evil: 1");
    rejects(
        Tap::new().config(&cfg),
        &["config file", "'user_agent'", "HTTP header"],
    );
    for early in ["0000-01-01", "-0001-01-01T00:00:00Z", "1969-12-31"] {
        let mut cfg = good_config();
        cfg["start_date"] = json!(early);
        rejects(Tap::new().config(&cfg), &["config file", "'start_date'"]);
    }
    let run = Tap::new().arg("--bogus-flag").run().failure(2);
    assert!(run.stdout.is_empty() && run.stderr.contains("--bogus-flag"));
}

#[test]
fn unknown_config_keys_are_a_warning() {
    let srv = server(bundles(1, 2, Encoding::GzipFile));
    let mut cfg = config(&srv);
    cfg["api_token"] = json!("typo");
    let run = Tap::new().config(&cfg).run().success();
    assert!(run.stderr.contains("WARN") && run.stderr.contains("'api_token': unknown setting"));
    assert_eq!(run.records().len(), 2);

    // A setting named like the key (pasted into the wrong place) is warned
    // about without printing it.
    cfg[KEY] = json!(1);
    let run = Tap::new().config(&cfg).run().success();
    assert!(run.stderr.contains("unknown setting"), "{}", run.stderr);
    run.assert_no_secret();
}

#[test]
fn the_key_never_shows_even_at_trace_level() {
    let srv = server(bundles(2, 3, Encoding::GzipFile));
    let run = Tap::new()
        .config(&config(&srv))
        .env("TAP_FULLSTORY_LOG_LEVEL", "trace")
        .run()
        .success();
    assert!(run.stderr.lines().count() > 20, "trace logging is on");
    // Run::run already checked stdout and stderr for the key.
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    let mut cfg = good_config();
    cfg["base_url"] = json!("http://export.fullstory.com");
    rejects(Tap::new().config(&cfg), &["'base_url'", "https"]);
}

#[test]
fn a_state_bookmark_in_the_future_is_refused() {
    let srv = server(bundles(1, 2, Encoding::GzipFile));
    let tap = Tap::new().config(&config(&srv)).state(
        &json!({"bookmarks": {"events": {"bundle_stop": "9999-12-31T23:59:59Z", "bundle_id": "1"}}}),
    );
    rejects(
        tap,
        &["state file", "'events'", "9999-12-31T23:59:59Z", "future"],
    );
    assert_eq!(srv.requests().len(), 0);
}
