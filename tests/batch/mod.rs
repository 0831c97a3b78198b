//! BATCH output and the small spool: batch files and messages in order, the
//! same records as the RECORD path, bad `batch_config` errors, and the
//! tap's own account of its peak spool size.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use fullstory_demo::{Encoding, Fault, Route};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::support::*;

/// A `batch_config` writing under `root`.
pub fn batch_config(root: &Path, prefix: &str) -> Value {
    json!({
        "encoding": {"format": "jsonl", "compression": "gzip"},
        "storage": {"root": format!("file://{}", root.display()), "prefix": prefix},
    })
}

/// Every stdout line as JSON, whatever its type.
pub fn lines(run: &Run) -> Vec<Value> {
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The record objects of the RECORD lines, as the exact text the tap wrote.
fn record_texts(run: &Run) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        #[serde(borrow)]
        record: Option<&'a RawValue>,
    }
    run.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Line<'_>>(l).unwrap().record)
        .map(|r| r.get().to_string())
        .collect()
}

/// The lines of a gzip file, failing on anything but a whole, valid stream.
pub fn gunzip_lines(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes.as_slice())
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{} is not whole gzip: {e}", path.display()));
    assert!(text.ends_with('\n'), "{} ends mid-line", path.display());
    text.lines().map(str::to_string).collect()
}

pub fn path_of(url: &Value) -> PathBuf {
    let url = url.as_str().expect("manifest entries are strings");
    PathBuf::from(url.strip_prefix("file://").expect("a file:// URL"))
}

pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// "(N bytes)" after `label` in the final log line.
fn logged_bytes(stderr: &str, label: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("sync complete"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("no {label} in {line}"))
        + label.len();
    let rest = &line[at..];
    let open = rest.find('(').unwrap() + 1;
    let close = rest.find(" bytes)").unwrap();
    rest[open..close].parse().unwrap()
}

#[test]
fn batch_files_come_complete_before_their_state_with_the_same_records() {
    let specs = bundles(3, 120, Encoding::GzipFile);
    let srv = server(specs.clone());
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(&srv);
    cfg["batch_config"] = batch_config(root.path(), "fs-");
    // One SCHEMA, for the order of BATCH and STATE alone (custom property
    // columns add SCHEMAs: see the properties tests).
    cfg["custom_properties"] = json!("object");
    let run = Tap::new().config(&cfg).run().success();

    let msgs = lines(&run);
    let types: Vec<&str> = msgs.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "SCHEMA", "STATE", "BATCH", "STATE", "BATCH", "STATE", "BATCH", "STATE", "STATE"
        ]
    );
    let mut batched = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let batch = &msgs[2 + 2 * i];
        assert_eq!(batch["stream"], "events");
        assert_eq!(
            batch["encoding"],
            json!({"format": "jsonl", "compression": "gzip"})
        );
        let manifest = batch["manifest"].as_array().unwrap();
        assert_eq!(manifest.len(), 1);
        let path = path_of(&manifest[0]);
        assert_eq!(path.parent().unwrap(), root.path());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&format!("fs-events-{}-", spec.id)) && name.ends_with(".jsonl.gz"),
            "{name}"
        );
        let records = gunzip_lines(&path);
        assert_eq!(records.len(), spec.events, "{name}");
        batched.extend(records);
        // The STATE after a batch covers exactly that bundle.
        assert_eq!(bookmark_stop(&msgs[3 + 2 * i]["value"]), rfc3339(spec.stop));
    }
    // Nothing else under the root: no partial files left behind.
    assert_eq!(
        names_in(root.path()).len(),
        3,
        "{:?}",
        names_in(root.path())
    );

    // The files hold exactly the record objects the RECORD path writes.
    let mut plain_cfg = config(&srv);
    plain_cfg["custom_properties"] = json!("object");
    let plain = Tap::new().config(&plain_cfg).run().success();
    assert_eq!(batched, record_texts(&plain));
    let keys: HashSet<&str> = batched.iter().map(|r| &r[..46]).collect();
    assert_eq!(keys.len(), 360);
}

#[test]
fn a_retried_bundle_leaves_one_file_and_no_partial_ones() {
    let specs = bundles(2, 80, Encoding::GzipFile);
    let srv = server(specs.clone());
    let id = specs[1].id.clone();
    srv.push_fault(
        Route::Get(Some(id.clone())),
        Fault::Truncate {
            after: specs[1].body.len() / 2,
        },
    );
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(&srv);
    cfg["batch_config"] = batch_config(root.path(), "");
    let run = Tap::new().config(&cfg).run().success();
    assert_eq!(srv.get_count(&id), 2);
    let names = names_in(root.path());
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    let total: usize = names
        .iter()
        .map(|n| gunzip_lines(&root.path().join(n)).len())
        .sum();
    assert_eq!(total, 160);
    let batches = lines(&run).iter().filter(|m| m["type"] == "BATCH").count();
    assert_eq!(batches, 2);
}

#[test]
fn bad_batch_config_is_a_one_line_error_and_no_output() {
    let srv = server(Vec::new());
    let root = tempfile::tempdir().unwrap();
    let good = batch_config(root.path(), "");
    let mut cases: Vec<(Value, &str)> = vec![
        (json!("not an object"), "JSON"),
        (json!(42), "object"),
        (json!({"storage": good["storage"]}), "encoding"),
    ];
    let mut changed = |at: &str, key: &str, value: Value, word: &'static str| {
        let mut v = good.clone();
        v[at][key] = value;
        cases.push((v, word));
    };
    changed("encoding", "format", json!("parquet"), "only \"jsonl\"");
    changed("encoding", "compression", json!("zstd"), "only \"gzip\"");
    changed("storage", "root", json!("s3://bucket/path"), "file://");
    changed(
        "storage",
        "root",
        json!("file:///no/such/dir"),
        "existing directory",
    );
    for (batch, word) in cases {
        let mut cfg = config(&srv);
        cfg["batch_config"] = batch.clone();
        let run = Tap::new().config(&cfg).run().failure(2);
        assert!(run.stdout.is_empty(), "{batch}: {}", run.stdout);
        let last = run.last_log();
        assert!(
            last.contains("batch_config") && last.contains(word),
            "{batch}: {last}"
        );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    }
}

#[test]
fn about_declares_the_batch_capability() {
    let run = Tap::new()
        .arg("--about")
        .arg("--format")
        .arg("json")
        .run()
        .success();
    let about: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(
        about["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("batch"))
    );
    assert_eq!(
        about["settings"]["properties"]["batch_config"]["type"],
        "object"
    );
}

#[test]
fn the_spool_stays_under_a_fifth_of_the_json() {
    let specs = bundles(1, 4_000, Encoding::GzipFile);
    let srv = server(specs);
    let run = Tap::new().config(&config(&srv)).run().success();
    let json = logged_bytes(&run.stderr, "of JSON");
    let spool = logged_bytes(&run.stderr, "peak spool");
    assert!(json > 1_000_000, "{json}");
    assert!(
        spool > 0 && spool * 5 <= json,
        "spool {spool} for {json} bytes of JSON"
    );

    // A batch file, while it is being written, is the spool.
    let root = tempfile::tempdir().unwrap();
    let mut cfg = config(&srv);
    cfg["batch_config"] = batch_config(root.path(), "");
    let run = Tap::new().config(&cfg).run().success();
    let spool = logged_bytes(&run.stderr, "peak spool");
    let file = &names_in(root.path())[0];
    let size = std::fs::metadata(root.path().join(file)).unwrap().len();
    assert_eq!(spool, size);
    assert!(
        spool * 5 <= json,
        "batch file {spool} for {json} bytes of JSON"
    );
}

#[test]
fn segment_export_windows_and_individuals_are_batched_like_their_records() {
    let srv = server(bundles(4, 90, Encoding::GzipFile));
    let mut cfg = config(&srv);
    cfg["source"] = json!("segment_export");
    cfg["api_url"] = json!(srv.url());
    cfg["poll_interval_seconds"] = json!(0.05);
    cfg["export_delay_hours"] = json!(0);
    cfg["end_date"] = json!(rfc3339(T0 + 2 * DAY));
    let plain = Tap::new().config(&cfg).run().success();

    let root = tempfile::tempdir().unwrap();
    cfg["batch_config"] = batch_config(root.path(), "seg-");
    let run = Tap::new().config(&cfg).run().success();
    assert!(
        !run.stdout.contains(r#""type":"RECORD""#),
        "a BATCH run writes no RECORD lines"
    );
    let msgs = lines(&run);
    for stream in ["events", "individuals"] {
        let mut batched = Vec::new();
        for (i, msg) in msgs.iter().enumerate() {
            if msg["type"] != "BATCH" || msg["stream"] != stream {
                continue;
            }
            // The STATE right after a window's BATCH covers that window.
            assert_eq!(msgs[i + 1]["type"], "STATE", "{stream}: {msg}");
            for url in msg["manifest"].as_array().unwrap() {
                batched.extend(gunzip_lines(&path_of(url)));
            }
        }
        let want: Vec<String> = record_texts_of(&plain, stream);
        assert!(!want.is_empty(), "{stream}: the RECORD run has records");
        assert_eq!(batched.len(), want.len(), "{stream}");
        // The same records; a window's rows may come in any order.
        let mut want = want;
        batched.sort();
        want.sort();
        assert!(batched == want, "{stream}: batch files differ from RECORDs");
    }
    let last = msgs.iter().rfind(|m| m["type"] == "STATE").unwrap();
    assert_eq!(plain.last_state(), last["value"]);
}

/// The record objects of one stream's RECORD lines, as the exact text the
/// tap wrote.
pub fn record_texts_of(run: &Run, stream: &str) -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        stream: Option<&'a str>,
        #[serde(borrow)]
        record: Option<&'a RawValue>,
    }
    run.stdout
        .lines()
        .filter_map(|l| {
            let line = serde_json::from_str::<Line<'_>>(l).unwrap();
            (line.stream == Some(stream))
                .then_some(line.record)
                .flatten()
        })
        .map(|r| r.get().to_string())
        .collect()
}
