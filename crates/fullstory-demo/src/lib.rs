//! A FullStory-compatible server for demos and tests, over plain HTTP/1.1
//! on 127.0.0.1, laid out by the API it imitates:
//!
//! - `data_export`: the legacy bundles, `/api/v1/export/list` and `/get`,
//!   from bundles held in memory, under a download rate limit;
//! - `segment_export`: the Segment Export flow over the same events (its
//!   `api_url` is the same URL), with links that expire;
//! - `rest`: users, segments, webhook endpoints, operations and the
//!   recording settings of each platform with their history;
//! - `faults`: misbehaviours injected one request at a time (error statuses,
//!   truncated or reset bodies, stalls, lying `Content-Length`, ...);
//! - `synth`: the deterministic synthetic data.
//!
//! This file holds the server: accepting, routing, recording requests. It is
//! written on `std::net` and threads, not on an HTTP library, so that tests
//! control exactly which bytes go on the wire.
//!
//! ```no_run
//! use fullstory_demo::{Encoding, Server, ServerOptions, synthetic_bundles};
//! let server = Server::start(ServerOptions {
//!     bundles: synthetic_bundles(3, 50, 1_704_067_200, 86_400, 1, Encoding::GzipFile),
//!     ..ServerOptions::default()
//! })?;
//! let base_url = server.url(); // "http://127.0.0.1:<port>", for the tap's base_url
//! # Ok::<(), std::io::Error>(())
//! ```

mod data_export;
mod faults;
mod http;
mod json_text;
mod rest;
mod segment_export;
mod synth;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use data_export::{BundleSpec, Encoding};
use faults::{Delivery, deliver};
pub use faults::{Fault, Route};
use http::{ReadOutcome, Request};
pub use rest::{MOBILE_PATHS, RestData, RestUser, SETTINGS_PATHS, synthetic_rest};
use sliding_window::SlidingWindow;
pub use synth::{
    CUSTOM_PROPERTIES, first_day_of, gzip, synthetic_bundles, synthetic_bundles_with,
    synthetic_events, synthetic_events_with,
};

/// How long we wait for a client to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one write may block on a client that stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Requests must carry exactly `Authorization: Basic <api_key>`.
    pub api_key: String,
    pub bundles: Vec<BundleSpec>,
    /// Bundles per list page (FullStory: 20). 0 is treated as 1.
    pub page_size: usize,
    /// At most N normal `/get` downloads per sliding window; beyond that a
    /// 429 with `Retry-After` (whole seconds until a slot frees, at least 1).
    pub rate_limit: Option<(usize, Duration)>,
    /// 0 picks an ephemeral port.
    pub port: u16,
    /// What the REST endpoints (users, segments, settings) serve.
    pub rest: RestData,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            api_key: "demo-key".to_string(),
            bundles: Vec::new(),
            page_size: 20,
            rate_limit: None,
            port: 0,
            rest: synthetic_rest(25, 23, 12),
        }
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// Empty for a request head that could not be parsed.
    pub method: String,
    pub path: String,
    /// Raw query string, without the `?`.
    pub query: String,
    pub authorized: bool,
    pub at: Instant,
    /// Status line sent; `None` when nothing was sent (`Fault::Drop`).
    pub status: Option<u16>,
    /// Name of the fault applied, if any (`"status"`, `"truncate"`, ...).
    pub fault: Option<&'static str>,
    /// The `Range` header, if the request had one.
    pub range: Option<String>,
    /// Bytes of body sent (as many as a cut-off body got).
    pub body_bytes: usize,
}

/// A running server; dropping it stops accepting connections (connections
/// already accepted run to completion on their own threads).
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    /// `Basic <key>`, compared verbatim with the Authorization header.
    expected_auth: String,
    bundles: Vec<BundleSpec>,
    /// Indexes into `bundles`, ordered by (Stop, Start).
    by_stop: Vec<usize>,
    by_id: HashMap<String, usize>,
    page_size: usize,
    state: Mutex<State>,
    segment: segment_export::Exports,
}

struct State {
    faults: VecDeque<(Route, Fault)>,
    /// Whether downloads carry an `ETag`.
    etags: bool,
    /// Whether downloads answer a `Range`.
    ranges: bool,
    /// The first download of each file asked for whole is cut after this
    /// share of its bytes.
    cut_downloads: Option<f64>,
    /// The files (path and query) cut so far.
    cut_done: HashSet<String>,
    /// Bundle bodies changed since the server started, by id.
    replaced: HashMap<String, Vec<u8>>,
    list_override: Option<Vec<u8>>,
    requests: Vec<RequestRecord>,
    get_counts: HashMap<String, usize>,
    /// The normal downloads inside the rate-limit window, if there is a limit.
    downloads: Option<SlidingWindow>,
    rest: RestData,
}

/// What a request asked for.
enum Target {
    List,
    Get(Option<String>),
    Rest(String),
    Segment(segment_export::Call),
    /// `/demo/stats`: what the server has sent.
    Stats,
    Unknown,
}

impl Target {
    fn of(req: &Request) -> Target {
        match req.path.as_str() {
            "/api/v1/export/list" => Target::List,
            "/api/v1/export/get" => Target::Get(req.param("id")),
            "/demo/stats" => Target::Stats,
            path if RestData::serves(path) => Target::Rest(path.to_string()),
            _ => segment_export::Call::of(req).map_or(Target::Unknown, Target::Segment),
        }
    }

    fn matches(&self, route: &Route) -> bool {
        match (self, route) {
            (Target::List, Route::List) => true,
            (Target::Get(_), Route::Get(None)) => true,
            (Target::Get(Some(id)), Route::Get(Some(want))) => id == want,
            (Target::Rest(path), Route::Path(want)) => path == want,
            (Target::Segment(call), route) => call.matches(route),
            _ => false,
        }
    }
}

struct Response<'a> {
    status: u16,
    headers: Vec<(String, String)>,
    body: Cow<'a, [u8]>,
}

impl Response<'static> {
    fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Cow::Owned(body.into()),
        }
    }
}

impl Server {
    /// Bind 127.0.0.1:`opts.port` and start serving on a background thread.
    pub fn start(opts: ServerOptions) -> io::Result<Server> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, opts.port))?;
        let addr = listener.local_addr()?;

        let bundles = opts.bundles;
        let mut by_stop: Vec<usize> = (0..bundles.len()).collect();
        by_stop.sort_by_key(|&i| (bundles[i].stop, bundles[i].start));
        let mut by_id = HashMap::new();
        for (i, b) in bundles.iter().enumerate() {
            by_id.entry(b.id.clone()).or_insert(i);
        }
        let shared = Arc::new(Shared {
            expected_auth: format!("Basic {}", opts.api_key),
            bundles,
            by_stop,
            by_id,
            page_size: opts.page_size.max(1),
            state: Mutex::new(State {
                downloads: opts
                    .rate_limit
                    .map(|(max, window)| SlidingWindow::new(max, window)),
                rest: opts.rest,
                faults: VecDeque::new(),
                etags: true,
                ranges: true,
                cut_downloads: None,
                cut_done: HashSet::new(),
                replaced: HashMap::new(),
                list_override: None,
                requests: Vec::new(),
                get_counts: HashMap::new(),
            }),
            segment: segment_export::Exports::new(format!("http://{addr}")),
        });

        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            thread::Builder::new()
                .name("fullstory-demo-accept".into())
                .spawn(move || accept_loop(listener, shared, stop))?
        };
        Ok(Server {
            addr,
            shared,
            stop,
            accept: Some(accept),
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queue a fault. Each request consumes the oldest queued fault whose
    /// route matches it; faults for other routes stay queued.
    pub fn push_fault(&self, route: Route, fault: Fault) {
        self.shared
            .state
            .lock()
            .unwrap()
            .faults
            .push_back((route, fault));
    }

    /// Faults queued and not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.shared.state.lock().unwrap().faults.len()
    }

    /// Serve exactly this body (as `application/json`) for every authorized
    /// list call with a valid `start`, or go back to normal with `None`.
    pub fn set_list_override(&self, exports_json: Option<Vec<u8>>) {
        self.shared.state.lock().unwrap().list_override = exports_json;
    }

    /// Adds a new current version of the settings at `path` (`blocking`,
    /// `domain`, ...), an hour after the last. False for an unknown path.
    pub fn add_setting_version(&self, path: &str) -> bool {
        self.shared.state.lock().unwrap().rest.add_version(path)
    }

    /// Adds a new current version of the mobile settings at `path`
    /// (`blocking`, `privacy`, `features`). False for a path without them.
    pub fn add_mobile_setting_version(&self, path: &str) -> bool {
        self.shared
            .state
            .lock()
            .unwrap()
            .rest
            .add_mobile_version(path)
    }

    /// Deletes user `id` from `/v2/users` and its own fetch, as
    /// `DELETE /v2/users/{id}` does. False for an unknown id.
    pub fn delete_user(&self, id: &str) -> bool {
        self.shared.state.lock().unwrap().rest.delete_user(id)
    }

    /// Deletes segment `id` from `/segments/v1`, as `DELETE
    /// /segments/v1/{id}` does. False for an unknown id.
    pub fn delete_segment(&self, id: &str) -> bool {
        self.shared.state.lock().unwrap().rest.delete_segment(id)
    }

    /// Keeps user `id` in `/v2/users` but answers 404 for its own fetch
    /// (`/v2/users/{id}`), as if it was deleted between a client's list and
    /// that fetch. False for an id that is not listed.
    pub fn delete_user_after_list(&self, id: &str) -> bool {
        self.shared.state.lock().unwrap().rest.delete_after_list(id)
    }

    /// From now on bundle `id` is served with `body` instead (as if the
    /// export had been written again), with another `ETag`.
    pub fn replace_bundle_body(&self, id: &str, body: Vec<u8>) {
        self.shared
            .state
            .lock()
            .unwrap()
            .replaced
            .insert(id.to_string(), body);
    }

    /// Cuts the first download of each file asked for whole (no `Range`)
    /// after `share` of its bytes, or none with `None`: a network that drops
    /// long transfers.
    pub fn set_download_cut(&self, share: Option<f64>) {
        self.shared.state.lock().unwrap().cut_downloads = share;
    }

    /// Whether downloads answer a `Range` with the rest (default true).
    pub fn set_ranges(&self, on: bool) {
        self.shared.state.lock().unwrap().ranges = on;
    }

    /// Whether downloads carry an `ETag` (default true); without one a
    /// client cannot tell a changed file by `If-Range`.
    pub fn set_etags(&self, on: bool) {
        self.shared.state.lock().unwrap().etags = on;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// Number of `/get` requests that named `id`, whatever their outcome.
    pub fn get_count(&self, id: &str) -> usize {
        self.shared
            .state
            .lock()
            .unwrap()
            .get_counts
            .get(id)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // `accept` blocks, so wake it with a connection of our own. If that
        // fails the thread is left detached rather than joined forever.
        let woke = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).is_ok();
        if let Some(handle) = self.accept.take()
            && woke
        {
            let _ = handle.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => {
                let shared = Arc::clone(&shared);
                let spawned = thread::Builder::new()
                    .name("fullstory-demo-conn".into())
                    .spawn(move || {
                        if let Err(e) = handle_connection(&shared, stream) {
                            // Clients hanging up mid-response is routine here.
                            tracing::debug!(error = %e, "demo server connection ended early");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "demo server could not spawn a connection thread");
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "demo server accept failed");
                // Avoid spinning if accept keeps failing (e.g. out of fds).
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn handle_connection(shared: &Shared, mut stream: TcpStream) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    // Pieces of a trickled or stalled body must leave when written.
    stream.set_nodelay(true)?;

    let req = match http::read_request(&mut stream)? {
        ReadOutcome::Request(req) => req,
        ReadOutcome::Empty => return Ok(()),
        ReadOutcome::Malformed => {
            let resp = Response::json(400, r#"{"code":"bad_request"}"#);
            shared.state.lock().unwrap().requests.push(RequestRecord {
                method: String::new(),
                path: String::new(),
                query: String::new(),
                authorized: false,
                at: Instant::now(),
                status: Some(resp.status),
                fault: None,
                range: None,
                body_bytes: resp.body.len(),
            });
            return deliver(&mut stream, Some(resp), Delivery::Full, &mut 0);
        }
    };

    let at = Instant::now();
    let authorized = req.header("authorization") == Some(shared.expected_auth.as_str());
    let target = Target::of(&req);

    let (resp, delivery, (index, body_bytes)) = {
        let mut st = shared.state.lock().unwrap();
        if let Target::Get(Some(id)) = &target {
            *st.get_counts.entry(id.clone()).or_default() += 1;
        }
        let fault = st.take_fault(&target);
        let fault_name = fault.as_ref().map(Fault::name);
        let ranges = st.ranges && !matches!(fault, Some(Fault::IgnoreRange));
        let (resp, delivery) = match fault {
            None => (
                Some(shared.respond(&req, &target, authorized, &mut st, at, true)),
                Delivery::Full,
            ),
            Some(fault) => match faults::apply(fault, &req) {
                (Some(instead), delivery) => (instead, delivery),
                (None, delivery) => (
                    Some(shared.respond(&req, &target, authorized, &mut st, at, false)),
                    delivery,
                ),
            },
        };
        let downloads = matches!(
            &target,
            Target::Get(_) | Target::Segment(segment_export::Call::Download(_))
        );
        let resp = match resp {
            Some(r) if downloads && r.status == 200 => {
                Some(faults::ranged(&req, r, st.etags, ranges))
            }
            other => other,
        };
        let file = match &target {
            // A link differs each time it is handed out; the file does not.
            Target::Segment(_) => req.path.clone(),
            _ => format!("{}?{}", req.path, req.query),
        };
        let delivery = match (&resp, st.cut_downloads) {
            (Some(r), Some(share))
                if downloads
                    && r.status == 200
                    && matches!(delivery, Delivery::Full)
                    && st.cut_done.insert(file) =>
            {
                Delivery::Truncate((r.body.len() as f64 * share) as usize)
            }
            _ => delivery,
        };
        let status = resp.as_ref().map(|r| r.status);
        let body_bytes = resp
            .as_ref()
            .map_or(0, |r| delivery.body_bytes(r.body.len()));
        tracing::debug!(method = %req.method, path = %req.path, query = %req.query, ?status, fault = ?fault_name, "demo request");
        // Recorded before any byte is sent, so a client that has seen the
        // response always finds its request in `requests()`.
        st.requests.push(RequestRecord {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            authorized,
            at,
            status,
            fault: fault_name,
            range: req.header("range").map(str::to_string),
            body_bytes,
        });
        (resp, delivery, (st.requests.len() - 1, body_bytes))
    };
    let mut sent = 0;
    let delivered = deliver(&mut stream, resp, delivery, &mut sent);
    // What the client took, if it went away part way.
    if sent < body_bytes {
        shared.state.lock().unwrap().requests[index].body_bytes = sent;
    }
    delivered
}

impl State {
    fn take_fault(&mut self, target: &Target) -> Option<Fault> {
        let pos = self
            .faults
            .iter()
            .position(|(route, _)| target.matches(route))?;
        self.faults.remove(pos).map(|(_, fault)| fault)
    }
}

impl Shared {
    /// The normal answer to a request. `limited` says whether a `/get` is
    /// subject to (and counts against) the rate limit.
    fn respond(
        &self,
        req: &Request,
        target: &Target,
        authorized: bool,
        st: &mut State,
        now: Instant,
        limited: bool,
    ) -> Response<'_> {
        if matches!(target, Target::Unknown) {
            return Response::json(404, r#"{"code":"not_found"}"#);
        }
        if matches!(target, Target::Stats) {
            let downloads = st
                .requests
                .iter()
                .filter(|r| r.path == "/api/v1/export/get" || r.path.starts_with("/storage/"));
            let (count, bytes) = downloads.fold((0, 0), |(n, b), r| (n + 1, b + r.body_bytes));
            return Response::json(
                200,
                format!(r#"{{"downloads":{count},"download_bytes":{bytes}}}"#),
            );
        }
        if let Target::Segment(call) = target {
            return self.segment.respond(req, call, authorized, &self.bundles);
        }
        if let (Target::Rest(path), "DELETE") = (target, req.method.as_str()) {
            if !authorized {
                return Response::json(401, r#"{"code":"unauthorized"}"#);
            }
            let (status, body) = st.rest.delete(path);
            return Response::json(status, body);
        }
        if req.method != "GET" {
            let mut r = Response::json(405, r#"{"code":"method_not_allowed"}"#);
            r.headers.push(("Allow".into(), "GET".into()));
            return r;
        }
        if !authorized {
            return Response::json(401, r#"{"code":"unauthorized"}"#);
        }
        match target {
            Target::List => self.list(req, st),
            Target::Get(id) => self.get(id.as_ref(), st, now, limited),
            Target::Rest(path) => {
                let (status, body) = st.rest.respond(path, |name| req.param(name));
                Response::json(status, body)
            }
            Target::Unknown | Target::Segment(_) | Target::Stats => {
                unreachable!("handled above")
            }
        }
    }
}
