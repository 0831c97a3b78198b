//! The harness: a demo server per test, a temp dir with config/state/catalog
//! files, and the real binary run against them.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use fullstory_demo::{BundleSpec, Encoding, RestData, Server, ServerOptions, synthetic_bundles};
use serde_json::{Value, json};

/// The key the test servers expect; every test checks it never leaks.
pub const KEY: &str = "sEcReT-kEy-0123456789";

/// First bundle start of the synthetic data: 2024-01-01T00:00:00Z.
pub const T0: i64 = 1_704_067_200;
pub const DAY: i64 = 86_400;

/// `n` daily bundles of `events` synthetic events each, from [`T0`].
pub fn bundles(n: usize, events: usize, enc: Encoding) -> Vec<BundleSpec> {
    synthetic_bundles(n, events, T0, DAY, 7, enc)
}

/// A demo server holding `bundles`.
pub fn server(bundles: Vec<BundleSpec>) -> Server {
    Server::start(ServerOptions {
        api_key: KEY.to_string(),
        bundles,
        ..ServerOptions::default()
    })
    .expect("start the demo server")
}

/// A demo server holding the REST resources `rest` (and no bundles).
pub fn rest_server(rest: RestData) -> Server {
    Server::start(ServerOptions {
        api_key: KEY.to_string(),
        rest,
        ..ServerOptions::default()
    })
    .expect("start the demo server")
}

/// A config for `server` with retries and pacing shrunk for tests.
pub fn config(server: &Server) -> Value {
    json!({
        "api_key": KEY,
        "start_date": "2024-01-01T00:00:00Z",
        "base_url": server.url(),
        "download_window_seconds": 0,
        "retry_base_delay": 0.05,
        "retry_max_delay": 0.2,
        "max_retries": 4,
        "request_timeout": 5,
    })
}

/// [`config`] with the REST and Segment Export APIs (`api_url`) on `server`.
pub fn rest_config(server: &Server) -> Value {
    let mut cfg = config(server);
    cfg["api_url"] = json!(server.url());
    cfg
}

/// A catalog selecting exactly `streams`, every field of each.
pub fn select(streams: &[&str]) -> Value {
    let entries: Vec<Value> = streams
        .iter()
        .map(|s| json!({"tap_stream_id": s, "metadata": [{"breadcrumb": [], "metadata": {"selected": true}}]}))
        .collect();
    json!({ "streams": entries })
}

/// One run of the binary.
pub struct Tap {
    dir: tempfile::TempDir,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Tap {
    pub fn new() -> Tap {
        Tap {
            dir: tempfile::tempdir().expect("temp dir"),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Writes `content` to a file in the run's temp dir and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write test file");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Tap {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Tap {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds `--config` with this JSON.
    pub fn config(self, config: &Value) -> Tap {
        let n = self.args.len();
        let path = self.file(&format!("config{n}.json"), &config.to_string());
        self.arg("--config").arg(path.to_string_lossy())
    }

    /// Adds `--state` with this JSON.
    pub fn state(self, state: &Value) -> Tap {
        let path = self.file("state.json", &state.to_string());
        self.arg("--state").arg(path.to_string_lossy())
    }

    /// Adds `--catalog` with this JSON.
    pub fn catalog(self, catalog: &Value) -> Tap {
        let path = self.file("catalog.json", &catalog.to_string());
        self.arg("--catalog").arg(path.to_string_lossy())
    }

    pub fn command(&self) -> Command {
        self.command_under(&[])
    }

    /// The command run through `wrapper` (a program and its arguments, the
    /// tap's path and arguments after them), e.g. `prlimit ... --`.
    pub fn command_under(&self, wrapper: &[&str]) -> Command {
        // Another build can be put through the same tests (to show a test
        // fails without the fix it is for).
        let built = env!("CARGO_BIN_EXE_tap-fullstory");
        let other = std::env::var("TAP_FULLSTORY_TEST_BINARY").ok();
        let tap = other.as_deref().unwrap_or(built);
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(tap);
                cmd
            }
            None => Command::new(tap),
        };
        cmd.args(&self.args)
            .env_remove("TAP_FULLSTORY_LOG_LEVEL")
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Starts the binary with stdout and stderr piped, for tests that act
    /// on it while it runs.
    pub fn spawn(&self) -> std::process::Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tap-fullstory")
    }

    /// Runs to the end and checks the key never shows up in any output.
    pub fn run(self) -> Run {
        let output = self.command().output().expect("run tap-fullstory");
        let run = Run::from(output);
        run.assert_no_secret();
        run
    }
}

/// What a run printed and how it ended.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8(o.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Every stdout line as JSON; each must be a Singer message.
    pub fn messages(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                let t = v["type"].as_str().expect("message has a type");
                assert!(
                    matches!(t, "SCHEMA" | "RECORD" | "STATE" | "ACTIVATE_VERSION"),
                    "{line}"
                );
                if t == "ACTIVATE_VERSION" {
                    assert!(v["stream"].is_string() && v["version"].is_u64(), "{line}");
                }
                v
            })
            .collect()
    }

    pub fn records(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["type"] == "RECORD")
            .map(|m| m["record"].clone())
            .collect()
    }

    pub fn states(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m["type"] == "STATE")
            .map(|m| m["value"].clone())
            .collect()
    }

    pub fn last_state(&self) -> Value {
        self.states().pop().expect("at least one STATE")
    }

    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "exit code; stderr:\n{}", self.stderr);
        self
    }

    pub fn failure(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The last stderr line, which says why a run failed.
    pub fn last_log(&self) -> &str {
        self.stderr.lines().last().unwrap_or("")
    }

    pub fn assert_no_secret(&self) {
        assert!(!self.stdout.contains(KEY), "API key on stdout");
        assert!(
            !self.stderr.contains(KEY),
            "API key on stderr:\n{}",
            self.stderr
        );
    }
}

/// The bookmark stop of a STATE value.
pub fn bookmark_stop(state: &Value) -> &str {
    state["bookmarks"]["events"]["bundle_stop"]
        .as_str()
        .unwrap_or_else(|| panic!("no bookmark in {state}"))
}

/// RFC 3339 of a unix time.
pub fn rfc3339(secs: i64) -> String {
    tap_fullstory::time::format_rfc3339(tap_fullstory::time::from_unix(secs).unwrap())
}

/// Events per bundle of a spec list.
pub fn total_events(bundles: &[BundleSpec]) -> usize {
    bundles.iter().map(|b| b.events).sum()
}
