//! The fault-injection suite. Each case ends one of two ways, and asserts which:
//! (a) the run completes with every event exactly once and the final STATE at
//! the last bundle, or (b) it stops non-zero with a one-line reason, and the
//! last STATE covers exactly the records written before it.

mod hostile;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use fullstory_demo::{BundleSpec, Encoding, Fault, Route, Server, ServerOptions, gzip};
use rustix::process::Signal;
use serde_json::{Value, json};

use crate::support::*;

/// Outcome (a): all events once, bookmark at the last bundle.
fn assert_complete(run: &Run, specs: &[BundleSpec]) {
    assert_eq!(run.code, 0, "exit code; stderr:\n{}", run.stderr);
    let records = run.records();
    assert_eq!(records.len(), total_events(specs), "every event once");
    let keys: HashSet<&str> = records
        .iter()
        .map(|r| r["EventKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), records.len(), "no duplicate keys");
    let last = specs.iter().map(|b| b.stop).max().unwrap();
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(last));
}

/// Outcome (b): non-zero, one-line reason, and every STATE is preceded by
/// exactly the records of the bundles it covers.
fn assert_stopped_consistently(run: &Run, code: i32, specs: &[BundleSpec]) {
    assert_eq!(run.code, code, "exit code; stderr:\n{}", run.stderr);
    assert!(!run.last_log().is_empty());
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert_states_cover_records(run, specs);
}

/// Walks the messages: at each STATE, the records so far must be exactly the
/// events of the bundles ending at or before its bookmark.
fn assert_states_cover_records(run: &Run, specs: &[BundleSpec]) {
    let mut seen = 0usize;
    for msg in run.messages() {
        match msg["type"].as_str() {
            Some("RECORD") => seen += 1,
            Some("STATE") => {
                let covered: usize =
                    match msg["value"]["bookmarks"]["events"]["bundle_stop"].as_str() {
                        None => 0,
                        Some(stop) => specs
                            .iter()
                            .filter(|b| rfc3339(b.stop).as_str() <= stop)
                            .map(|b| b.events)
                            .sum(),
                    };
                assert_eq!(seen, covered, "STATE {} after {seen} records", msg["value"]);
            }
            _ => {}
        }
    }
}

fn status(code: u16, headers: &[(&str, &str)]) -> Fault {
    Fault::Status {
        code,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: br#"{"code":"unavailable"}"#.to_vec(),
    }
}

fn get(spec: &BundleSpec) -> Route {
    Route::Get(Some(spec.id.clone()))
}

// ---- faults from the server -------------------------------------------------

#[test]
fn repeated_429s_are_waited_out_as_told() {
    let specs = bundles(2, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    for _ in 0..3 {
        srv.push_fault(get(&specs[0]), status(429, &[("Retry-After", "1")]));
    }
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    let tries: Vec<Instant> = srv
        .requests()
        .iter()
        .filter(|r| r.query.contains(&specs[0].id))
        .map(|r| r.at)
        .collect();
    assert_eq!(tries.len(), 4);
    for pair in tries.windows(2) {
        assert!(
            pair[1].duration_since(pair[0]) >= Duration::from_secs(1),
            "retried before Retry-After"
        );
    }
}

#[test]
fn a_server_enforcing_two_downloads_per_window_is_never_hammered() {
    let specs = bundles(5, 5, Encoding::GzipFile);
    let srv = Server::start(ServerOptions {
        api_key: KEY.into(),
        bundles: specs.clone(),
        rate_limit: Some((2, Duration::from_secs(1))),
        ..ServerOptions::default()
    })
    .unwrap();
    // Paced like the server: no 429 at all.
    let mut cfg = config(&srv);
    cfg["downloads_per_window"] = json!(2);
    cfg["download_window_seconds"] = json!(1.1);
    let run = Tap::new().config(&cfg).run();
    assert_complete(&run, &specs);
    let limited = srv
        .requests()
        .iter()
        .filter(|r| r.status == Some(429))
        .count();
    assert_eq!(limited, 0, "pacing kept within the limit");

    // Unpaced: the 429s and their Retry-After do the pacing, and the tap
    // makes no more than one early request per refusal.
    let srv = Server::start(ServerOptions {
        api_key: KEY.into(),
        bundles: specs.clone(),
        rate_limit: Some((2, Duration::from_secs(1))),
        ..ServerOptions::default()
    })
    .unwrap();
    let mut cfg = config(&srv);
    cfg["max_retries"] = json!(10);
    let run = Tap::new().config(&cfg).run();
    assert_complete(&run, &specs);
    let gets: Vec<_> = srv
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/get"))
        .collect();
    let limited = gets.iter().filter(|r| r.status == Some(429)).count();
    assert!(limited <= 3, "{limited} refusals for 5 downloads at 2/s");
}

#[test]
fn bursts_of_5xx_are_retried() {
    let specs = bundles(3, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    for code in [500, 502, 503] {
        srv.push_fault(get(&specs[1]), status(code, &[]));
    }
    srv.push_fault(Route::List, status(502, &[]));
    srv.push_fault(Route::List, status(503, &[]));
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert_eq!(srv.get_count(&specs[1].id), 4);
}

#[test]
fn connection_refused_then_up() {
    let specs = bundles(2, 5, Encoding::GzipFile);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = json!({
        "api_key": KEY,
        "start_date": "2024-01-01",
        "base_url": format!("http://127.0.0.1:{port}"),
        "download_window_seconds": 0,
        "retry_base_delay": 0.3,
        "retry_max_delay": 0.5,
        "max_retries": 8,
    });
    cfg["request_timeout"] = json!(5);
    let tap = Tap::new().config(&cfg);
    let child = tap.spawn();
    std::thread::sleep(Duration::from_millis(600));
    let _srv = Server::start(ServerOptions {
        api_key: KEY.into(),
        bundles: specs.clone(),
        port,
        ..ServerOptions::default()
    })
    .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_no_secret();
    assert_complete(&run, &specs);
    assert!(run.stderr.contains("retrying"));
}

#[test]
fn connection_reset_mid_body_is_retried() {
    let specs = bundles(2, 200, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        get(&specs[0]),
        Fault::Reset {
            after: specs[0].body.len() / 3,
        },
    );
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert_eq!(srv.get_count(&specs[0].id), 2);
}

/// Serves `fault` once for the second of three bundles and checks the run
/// completes, with that bundle fetched twice.
fn retried_once(fault: impl FnOnce(&BundleSpec) -> Fault) {
    let specs = bundles(3, 30, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(get(&specs[1]), fault(&specs[1]));
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert_eq!(srv.get_count(&specs[1].id), 2);
    assert!(run.stderr.contains("incomplete or corrupt") || run.stderr.contains("broke off"));
}

fn gzip_body(body: Vec<u8>) -> Fault {
    Fault::Body {
        content_type: "application/gzip".into(),
        body,
    }
}

#[test]
fn body_truncated_mid_gzip_is_retried() {
    retried_once(|b| Fault::Truncate {
        after: b.body.len() - 9,
    });
}

#[test]
fn gzip_with_a_bad_crc_is_retried() {
    retried_once(|b| {
        let mut body = b.body.clone();
        let n = body.len();
        body[n - 6] ^= 0x55;
        gzip_body(body)
    });
}

#[test]
fn gzip_of_a_truncated_json_array_is_retried() {
    retried_once(|_| {
        let json = fullstory_demo::synthetic_events(1, T0, T0 + DAY, 30);
        gzip_body(gzip(&json[..json.len() - 40]))
    });
}

#[test]
fn zero_byte_body_is_retried() {
    retried_once(|_| gzip_body(Vec::new()));
}

#[test]
fn plain_json_body_cut_short_is_retried() {
    retried_once(|_| {
        let json = fullstory_demo::synthetic_events(1, T0, T0 + DAY, 30);
        Fault::Body {
            content_type: "application/json".into(),
            body: json[..json.len() / 2].to_vec(),
        }
    });
}

#[test]
fn lying_content_length_is_retried() {
    let specs = bundles(2, 50, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        get(&specs[0]),
        Fault::LyingContentLength {
            declared: specs[0].body.len() + 100,
        },
    );
    srv.push_fault(
        get(&specs[1]),
        Fault::LyingContentLength {
            declared: specs[1].body.len() - 100,
        },
    );
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    // The first body ends short of its declared length: the rest is asked
    // for (there is none: 416), then the bundle starts over.
    assert_eq!(srv.get_count(&specs[0].id), 3);
    assert_eq!(srv.get_count(&specs[1].id), 2);
}

#[test]
fn bad_list_responses_are_retried() {
    let specs = bundles(2, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        Route::List,
        Fault::Body {
            content_type: "text/html".into(),
            body: b"<html>maintenance</html>".to_vec(),
        },
    );
    srv.push_fault(
        Route::List,
        Fault::Body {
            content_type: "application/json".into(),
            body: br#"{"bundles": []}"#.to_vec(),
        },
    );
    srv.push_fault(
        Route::List,
        Fault::Body {
            content_type: "application/json".into(),
            body: br#"{"exports": [{"Id": 1, "Start": "x"}]}"#.to_vec(),
        },
    );
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
}

#[test]
fn a_stalled_body_times_out_and_is_retried() {
    let specs = bundles(1, 100, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        get(&specs[0]),
        Fault::Stall {
            after: 100,
            pause: Duration::from_secs(4),
        },
    );
    let mut cfg = config(&srv);
    cfg["request_timeout"] = json!(1);
    let started = Instant::now();
    let run = Tap::new().config(&cfg).run();
    assert_complete(&run, &specs);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "did not wait out the stall"
    );
    // The rest was asked for, after the 100 bytes that came.
    assert!(run.stderr.contains("asking for the rest"), "{}", run.stderr);
}

#[test]
fn a_slow_steady_trickle_is_not_killed() {
    let specs = bundles(1, 20, Encoding::Plain);
    let srv = server(specs.clone());
    let chunk = specs[0].body.len() / 25 + 1;
    srv.push_fault(
        get(&specs[0]),
        Fault::Trickle {
            chunk,
            delay: Duration::from_millis(100),
        },
    );
    let mut cfg = config(&srv);
    cfg["request_timeout"] = json!(1);
    let run = Tap::new().config(&cfg).run();
    assert_complete(&run, &specs);
    assert_eq!(
        srv.get_count(&specs[0].id),
        1,
        "the trickle took >2 s, yet no retry"
    );
}

#[test]
fn persistent_corruption_stops_with_consistent_state() {
    let specs = bundles(3, 10, Encoding::GzipFile);
    let srv = server(specs.clone());
    // Every request cut short, resumed ones included.
    for _ in 0..100 {
        srv.push_fault(get(&specs[2]), Fault::Truncate { after: 30 });
    }
    let run = Tap::new().config(&config(&srv)).run();
    assert_stopped_consistently(&run, 1, &specs);
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[1].stop));
    assert!(run.last_log().contains(&specs[2].id));
}

// ---- awkward but valid data ---------------------------------------------------

fn one_bundle(json: Vec<u8>, events: usize) -> Vec<BundleSpec> {
    vec![BundleSpec::from_events_json(
        "7",
        T0,
        T0 + DAY,
        json,
        events,
        Encoding::GzipFile,
    )]
}

#[test]
fn empty_bundle_moves_the_bookmark() {
    let mut specs = bundles(2, 3, Encoding::GzipFile);
    specs.insert(
        1,
        BundleSpec::from_events_json(
            "9",
            T0 + DAY / 2,
            T0 + DAY + 1,
            b"[]".to_vec(),
            0,
            Encoding::GzipFile,
        ),
    );
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    assert!(
        run.states()
            .iter()
            .any(|s| s["bookmarks"]["events"]["bundle_id"] == "9")
    );
}

#[test]
fn a_ten_megabyte_event_and_deep_nesting_come_through() {
    let big = "x".repeat(10 << 20);
    // Deep nesting up to the limit comes through as it is (deeper values
    // are kept as text: see `too_deep_values_are_kept_as_json_text`).
    let deep = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    let json = format!(
        r#"[{{"UserId":1,"EventStart":"2024-01-01T00:00:00.000Z","EventTargetText":"{big}"}},{{"UserId":2,"evt_deep_strs":{deep},"evt_obj":{{"a":{{"b":{{"c":[{{"d":null}}]}}}}}}}}]"#
    );
    let specs = one_bundle(json.into_bytes(), 2);
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    let records = run.records();
    assert_eq!(
        records[0]["EventTargetText"].as_str().unwrap().len(),
        10 << 20
    );
    assert!(run.stdout.contains(&format!("\"evt_deep_strs\":{deep}")));
}

#[test]
fn integers_floats_and_strings_at_the_edges() {
    let json = r#"[{"UserId":9223372036854775807,"SessionId":-9223372036854775808,"PageId":18446744073709551615,"EventCumulativeLayoutShift":3.141592653589793238462643383279,"EventDuration":0,"EventTargetText":"\u0000\t\"\\\/ \ud834\udd1e é","PageName":"\u00e9"}]"#;
    let specs = one_bundle(json.as_bytes().to_vec(), 1);
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    let line = run.stdout.lines().find(|l| l.contains("RECORD")).unwrap();
    for exact in [
        r#""UserId":9223372036854775807"#,
        r#""SessionId":-9223372036854775808"#,
        // Beyond i64 (a Postgres bigint): kept exactly, as text.
        r#""ExtraFields":{"PageId":"18446744073709551615"}"#,
        r#""EventCumulativeLayoutShift":3.141592653589793238462643383279"#,
        r#""EventTargetText":"\u0000\t\"\\\/ \ud834\udd1e é""#,
    ] {
        assert!(line.contains(exact), "{exact} not in {line}");
    }
}

#[test]
fn a_bundle_listed_twice_and_out_of_order_is_synced_once_in_order() {
    let specs = bundles(4, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    let entry = |b: &BundleSpec| json!({"Id": b.id.parse::<u64>().unwrap(), "Start": b.start, "Stop": b.stop});
    // 20 entries so the tap asks for a second page, which repeats the first.
    let mut list: Vec<Value> = Vec::new();
    for _ in 0..5 {
        for b in specs.iter().rev() {
            list.push(entry(b));
        }
    }
    srv.set_list_override(Some(json!({"exports": list}).to_string().into_bytes()));
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    let stops: Vec<String> = run.states()[1..5]
        .iter()
        .map(|s| bookmark_stop(s).to_string())
        .collect();
    let want: Vec<String> = specs.iter().map(|b| rfc3339(b.stop)).collect();
    assert_eq!(stops, want);
    for b in &specs {
        assert_eq!(srv.get_count(&b.id), 1);
    }
}

// ---- faults from the pipeline -------------------------------------------------

#[test]
fn target_exiting_mid_stream_stops_the_tap_within_a_second() {
    let specs = bundles(6, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    // A slow download keeps the tap busy (not writing) when the target leaves.
    srv.push_fault(
        get(&specs[1]),
        Fault::Stall {
            after: 10,
            pause: Duration::from_secs(8),
        },
    );
    let tap = Tap::new().config(&config(&srv));
    let mut child = tap.spawn();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = 0;
    let mut line = String::new();
    while seen < 6 {
        line.clear();
        out.read_line(&mut line).unwrap();
        seen += 1;
    }
    let closed = Instant::now();
    drop(out);
    let status = child.wait().unwrap();
    let waited = closed.elapsed();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains(KEY));
    assert!(waited < Duration::from_secs(1), "took {waited:?} to notice");
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().contains("target closed"),
        "{stderr}"
    );
}

fn interrupt_mid_bundle(signal: Signal, code: i32) {
    let specs = bundles(4, 20, Encoding::GzipFile);
    let srv = server(specs.clone());
    srv.push_fault(
        get(&specs[2]),
        Fault::Stall {
            after: 50,
            pause: Duration::from_secs(10),
        },
    );
    let tap = Tap::new().config(&config(&srv));
    let child = tap.spawn();
    // Wait until the stalled download has started.
    let started = Instant::now();
    while srv.get_count(&specs[2].id) == 0 && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    kill(child.id(), signal);
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_no_secret();
    assert_stopped_consistently(&run, code, &specs);
    assert_eq!(run.records().len(), 40);
    assert_eq!(bookmark_stop(&run.last_state()), rfc3339(specs[1].stop));
    let leftovers: Vec<_> = std::fs::read_dir(tap.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| n.to_string_lossy().starts_with("config")),
        "temp files left: {leftovers:?}"
    );
}

#[test]
fn sigterm_mid_bundle_stops_with_consistent_state() {
    interrupt_mid_bundle(Signal::TERM, 143);
}

#[test]
fn sigint_mid_bundle_stops_with_consistent_state() {
    interrupt_mid_bundle(Signal::INT, 130);
}

#[test]
fn unwritable_spool_dir_is_a_clear_error() {
    let specs = bundles(2, 5, Encoding::GzipFile);
    let srv = server(specs.clone());
    let mut cfg = config(&srv);
    cfg["spool_dir"] = json!("/nonexistent/spool");
    let run = Tap::new().config(&cfg).run();
    assert_stopped_consistently(&run, 1, &specs);
    assert!(run.records().is_empty());
    assert!(run.last_log().contains("spool_dir"), "{}", run.last_log());
}

#[test]
fn full_spool_disk_is_a_clear_error_and_nothing_is_emitted_for_the_bundle() {
    // RLIMIT_FSIZE makes writes past 8 KiB fail with EFBIG, like a full disk
    // (the compressed spool of a 200-event bundle is larger than that).
    let specs = bundles(2, 200, Encoding::GzipFile);
    let srv = server(specs.clone());
    let tap = Tap::new().config(&config(&srv));
    // prlimit (util-linux) sets the limit for the tap alone; the tap turns
    // the SIGXFSZ that comes with it into a plain write error.
    let mut cmd = tap.command_under(&["prlimit", "--fsize=8192:8192", "--"]);
    let run = Run::from(cmd.output().unwrap());
    run.assert_no_secret();
    assert_stopped_consistently(&run, 1, &specs);
    assert!(run.records().is_empty());
    assert!(run.last_log().contains("spool"), "{}", run.last_log());
    assert_eq!(
        srv.get_count(&specs[0].id),
        1,
        "no retry of a local disk problem"
    );
}

#[test]
fn a_target_that_stops_reading_cannot_hold_the_tap_after_a_second_signal() {
    let specs = bundles(2, 400, Encoding::GzipFile);
    let srv = server(specs.clone());
    let tap = Tap::new().config(&config(&srv));
    let mut child = tap.spawn();
    // Keep stdout open but never read it: the tap blocks once the pipe is full.
    let _stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let pid = child.id();
    // Wait until the tap is really blocked writing into the full pipe; on a
    // busy machine a fixed sleep may end before the first bundle goes out.
    while !blocked_on_pipe(pid) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(blocked_on_pipe(pid), "the tap never blocked on its stdout");
    assert!(srv.get_count(&specs[0].id) > 0);
    kill(pid, Signal::TERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    let second = Instant::now();
    kill(pid, Signal::TERM);
    let status = child.wait().unwrap();
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "{:?}",
        second.elapsed()
    );
    assert_eq!(status.code(), Some(143));
}

#[test]
fn a_signal_while_a_target_reads_slowly_ends_the_run_after_the_bundle_going_out() {
    // Every bundle is there at once, so the next one is fetched while one
    // goes out and the tap never waits on the network: the signal must
    // still stop it between bundles, not run on to the end.
    let specs = bundles(6, 2000, Encoding::GzipFile);
    let srv = server(specs.clone());
    let tap = Tap::new().config(&config(&srv));
    let mut child = tap.spawn();
    let mut stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let started = Instant::now();
    while !blocked_on_pipe(pid) && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(blocked_on_pipe(pid), "the tap never blocked on its stdout");
    kill(pid, Signal::TERM);
    // The target reads on, more slowly than the tap fetches: 64 KiB every
    // 10 ms, a bundle (3 MB of RECORDs) in about half a second.
    let mut out = Vec::new();
    let mut block = vec![0u8; 64 * 1024];
    loop {
        match stdout.read(&mut block).unwrap() {
            0 => break,
            n => out.extend_from_slice(&block[..n]),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut output = child.wait_with_output().unwrap();
    output.stdout = out;
    let run = Run::from(output);
    run.assert_no_secret();
    assert_stopped_consistently(&run, 143, &specs);
    let written = run.records().len();
    assert!(
        written > 0 && written < 6 * 2000,
        "{written} records: the run should stop between bundles"
    );
    assert!(!run.stderr.contains("forced"), "{}", run.stderr);
}

/// Sends `signal` to process `pid`.
fn kill(pid: u32, signal: Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child's pid");
    rustix::process::kill_process(pid, signal).expect("kill the tap");
}

/// Whether a thread of process `pid` sleeps in a write to a pipe.
fn blocked_on_pipe(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|w| w.contains("pipe_write"))
    })
}

// ---- values that are faithful but that targets cannot load -----------------

/// Runs one bundle of these events to completion; every line must load.
fn run_events(json: &str, events: usize) -> Run {
    let specs = one_bundle(json.as_bytes().to_vec(), events);
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_complete(&run, &specs);
    run
}

#[test]
fn impossible_dates_are_kept_in_extra_fields() {
    let run = run_events(
        r#"[{"UserId":1,"EventStart":"2023-13-45T99:99:99Z","PageStart":"2023-02-29T00:00:00Z","SessionStart":"2024-02-29T23:59:59.5+01:00"}]"#,
        1,
    );
    let rec = &run.records()[0];
    assert!(rec.get("EventStart").is_none() && rec.get("PageStart").is_none());
    assert_eq!(rec["ExtraFields"]["EventStart"], "2023-13-45T99:99:99Z");
    assert_eq!(rec["ExtraFields"]["PageStart"], "2023-02-29T00:00:00Z");
    assert_eq!(rec["SessionStart"], "2024-02-29T23:59:59.5+01:00");
    assert!(
        run.stderr
            .contains("field EventStart has a value that is not of its schema type"),
        "{}",
        run.stderr
    );
}

#[test]
fn numbers_targets_cannot_hold_are_kept_as_text() {
    let run = run_events(
        r#"[{"UserId":1,"PageId":123456789012345678901234567890,"EventCumulativeLayoutShift":1e400,"SessionId":-9223372036854775808,"evt_big_int":99999999999999999999,"user_score_real":-2E+308,"evt_list":[1,1e999,"1e999"]}]"#,
        1,
    );
    let line = run.stdout.lines().find(|l| l.contains("RECORD")).unwrap();
    assert!(
        line.contains(r#""SessionId":-9223372036854775808"#),
        "{line}"
    );
    assert!(
        line.contains(r#""ExtraFields":{"PageId":"123456789012345678901234567890","EventCumulativeLayoutShift":"1e400","evt_big_int":"99999999999999999999","user_score_real":"-2E+308","evt_list":[1,"1e999","1e999"]}"#),
        "{line}"
    );
    assert!(
        run.stderr
            .contains("field PageId has a value that is not of its schema type")
    );
    assert!(
        run.stderr.contains("5 numbers in this bundle"),
        "{}",
        run.stderr
    );
}

#[test]
fn too_deep_values_are_kept_as_json_text() {
    let deep = format!(r#"{}{{"k":1}}{}"#, "[".repeat(500), "]".repeat(500));
    let run = run_events(
        &format!(r#"[{{"UserId":1,"evt_deep":{deep}}},{{"UserId":2,"evt_deep":[[1]]}}]"#),
        2,
    );
    let records = run.records();
    assert_eq!(
        records[0]["ExtraFields"]["evt_deep"].as_str(),
        Some(deep.as_str())
    );
    assert_eq!(records[1]["ExtraFields"]["evt_deep"], json!([[1]]));
    assert!(
        run.stderr.contains("1 values in this bundle nest deeper"),
        "{}",
        run.stderr
    );
}

#[test]
fn lone_surrogates_are_replaced_and_counted() {
    let run = run_events(
        r#"[{"UserId":1,"PageName":"x\ud800y \ud83d\ude00","evt_k\udc00_str":"ok","evt_obj":{"a":["\udbff"]}},{"UserId":2,"PageName":"\ud834\udd1e"}]"#,
        2,
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("RECORD"))
        .collect();
    assert!(
        lines[0].contains(r#""PageName":"x\ufffdy \ud83d\ude00""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(r#""PageName":"\ud834\udd1e""#),
        "{}",
        lines[1]
    );
    let records = run.records();
    // A custom property, so a column of its own.
    assert_eq!(records[0]["evt_k\u{fffd}_str"], "ok");
    assert_eq!(
        records[0]["ExtraFields"]["evt_obj"],
        json!({"a": ["\u{fffd}"]})
    );
    assert!(
        run.stderr
            .contains("3 lone UTF-16 surrogate escapes in this bundle"),
        "{}",
        run.stderr
    );
}

#[test]
fn repeated_keys_in_an_event_keep_the_last_value() {
    let run = run_events(
        r#"[{"UserId":1,"evt_x_str":"a","UserId":7,"evt_x_str":"b","EventType":"click"},{"UserId":2,"UserId":2}]"#,
        2,
    );
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("RECORD"))
        .collect();
    assert_eq!(lines[0].matches("\"UserId\"").count(), 1, "{}", lines[0]);
    assert_eq!(lines[0].matches("evt_x_str").count(), 1, "{}", lines[0]);
    let records = run.records();
    assert_eq!(records[0]["UserId"], 7);
    // A custom property column, given twice: the last value.
    assert_eq!(records[0]["evt_x_str"], "b");
    assert!(records[0].get("ExtraFields").is_none());
    assert_eq!(records[1]["UserId"], 2);
    assert!(
        run.stderr
            .contains("3 keys in this bundle's records were repeated"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_broken_event_is_named_by_number_field_and_byte() {
    let json = r#"[{"UserId":1},{"UserId":2,"PageName":"ok","evt_obj":{"a":[1,]}}]"#;
    let specs = one_bundle(json.as_bytes().to_vec(), 2);
    let srv = server(specs.clone());
    let run = Tap::new().config(&config(&srv)).run();
    assert_stopped_consistently(&run, 1, &specs);
    let last = run.last_log();
    for w in [
        "record 2 is not valid JSON",
        "in the value of field \"evt_obj\"",
        "at byte 46 of the record",
    ] {
        assert!(last.contains(w), "{w:?} not in {last}");
    }
}
