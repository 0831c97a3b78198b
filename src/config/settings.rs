//! The settings table: every setting the tap accepts, its type, default, description and env var.

/// Prefix of the environment variables that carry settings.
pub(crate) const ENV_PREFIX: &str = "TAP_FULLSTORY_";

/// The value type of a setting, as `--about` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    DateTime,
    Integer,
    Number,
    /// A list of strings: a JSON array, or one comma-separated string.
    StringList,
    Object,
    /// `true` or `false` (in an environment variable: also `1` or `0`).
    Boolean,
}

impl Kind {
    /// JSON-schema style name of the type.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::DateTime => "date-time",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::StringList => "array",
            Kind::Object => "object",
            Kind::Boolean => "boolean",
        }
    }
}

/// One accepted setting.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
    pub(crate) secret: bool,
    pub(crate) default: Option<&'static str>,
    pub(crate) description: &'static str,
}

const fn setting(
    name: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    description: &'static str,
) -> Setting {
    Setting {
        name,
        kind,
        required: false,
        secret: false,
        default,
        description,
    }
}

/// Every setting the tap reads, in the order documentation lists them.
pub(crate) const SETTINGS: &[Setting] = &[
    Setting {
        name: "api_key",
        kind: Kind::String,
        required: true,
        secret: true,
        default: None,
        description: "FullStory API key (Admin or Architect). Sent as `Authorization: Basic <key>`; never logged.",
    },
    Setting {
        name: "start_date",
        kind: Kind::DateTime,
        required: true,
        secret: false,
        default: None,
        description: "Sync bundles that end after this instant when no state is given. RFC 3339, or YYYY-MM-DD for midnight UTC; not before 1970.",
    },
    setting(
        "end_date",
        Kind::DateTime,
        None,
        "Only sync bundles that end at or before this instant; later ones are left for another run. Lets a backfill be split into windows.",
    ),
    setting(
        "base_url",
        Kind::String,
        Some("https://export.fullstory.com"),
        "Export API host, optionally with a path; no user name, password, query or fragment. http:// is accepted only for loopback addresses.",
    ),
    setting(
        "api_url",
        Kind::String,
        Some("https://api.fullstory.com"),
        "Host of every FullStory API other than the legacy bundles (Segment Export, users, segments, recording settings). http:// is accepted only for loopback addresses.",
    ),
    setting(
        "source",
        Kind::String,
        Some("data_export"),
        "Where the events stream comes from: data_export (the legacy Data Export bundles on base_url) or segment_export (the Segment Export API on api_url, which FullStory supports).",
    ),
    setting(
        "segment_id",
        Kind::String,
        Some("everyone"),
        "Segment whose events and individuals Segment Export exports.",
    ),
    setting(
        "export_window_hours",
        Kind::Number,
        Some("24"),
        "Length of one Segment Export window in hours: 0.25 to 24, dividing 24; windows are aligned to UTC midnight (the first may be shorter).",
    ),
    setting(
        "export_delay_hours",
        Kind::Number,
        Some("24"),
        "Segment Export windows ending after now minus this many hours wait for a later run, so sessions have settled.",
    ),
    setting(
        "lookback_hours",
        Kind::Number,
        Some("0"),
        "Each Segment Export run also exports this many hours before the bookmark again, for late rows; targets upserting on the key keep one row each.",
    ),
    setting(
        "poll_interval_seconds",
        Kind::Number,
        Some("5"),
        "How often a pending Segment Export operation is polled.",
    ),
    setting(
        "export_timeout_minutes",
        Kind::Number,
        Some("120"),
        "How long one Segment Export operation may stay pending before the run stops; the next run resumes it.",
    ),
    setting(
        "user_agent",
        Kind::String,
        Some("tap-fullstory/<version>"),
        "User-Agent header sent with every request (printable ASCII).",
    ),
    setting(
        "request_timeout",
        Kind::Number,
        Some("300"),
        "Seconds to wait for any single read from the server (not for a whole download).",
    ),
    setting(
        "connect_timeout",
        Kind::Number,
        Some("30"),
        "Seconds to wait for a connection to be established.",
    ),
    setting(
        "max_retries",
        Kind::Integer,
        Some("8"),
        "Retries of one request after a connection error, timeout, 429, 5xx or incomplete bundle, before the run fails.",
    ),
    setting(
        "retry_base_delay",
        Kind::Number,
        Some("2"),
        "Seconds before the first retry; doubles each retry, with jitter, up to retry_max_delay. A Retry-After header wins.",
    ),
    setting(
        "retry_max_delay",
        Kind::Number,
        Some("120"),
        "Upper bound in seconds of the backoff between retries. A Retry-After is obeyed up to this (or 60, if more); a longer one ends the run, saying when to re-run.",
    ),
    setting(
        "downloads_per_window",
        Kind::Integer,
        Some("2"),
        "Bundle downloads started per download_window_seconds (FullStory allows 2 per minute).",
    ),
    setting(
        "download_window_seconds",
        Kind::Number,
        Some("60"),
        "Length of the download rate-limit window in seconds; 0 turns pacing off.",
    ),
    setting(
        "progress_interval_seconds",
        Kind::Number,
        Some("30"),
        "How often a long download logs its progress (bytes, rate, ETA).",
    ),
    setting(
        "spool_dir",
        Kind::String,
        Some("system temp dir"),
        "Directory for the spool file of the bundle, window or REST stream being verified (zstd-compressed records: about a tenth of their JSON). Files are private and removed on every exit.",
    ),
    setting(
        "skip_bundles",
        Kind::StringList,
        None,
        "Ids of bundles to pass over deliberately, e.g. one the server sends malformed every time: their events are not synced, the bookmark moves past them, and each is logged at WARN. A JSON array, or a comma-separated string (as TAP_FULLSTORY_SKIP_BUNDLES).",
    ),
    setting(
        "skip_windows",
        Kind::StringList,
        None,
        "Starts of Segment Export windows to pass over deliberately (as the log names them, 2024-01-02T00:00:00Z), e.g. one the server sends malformed every time: no export is made for them, their events and individuals are not synced, the bookmark moves past them, and each is logged at WARN. A JSON array, or a comma-separated string (as TAP_FULLSTORY_SKIP_WINDOWS).",
    ),
    setting(
        "exports_in_flight",
        Kind::Integer,
        Some("4"),
        "Segment Export windows whose exports may be in flight at once: the next ones are created while earlier ones are prepared or downloaded, so FullStory prepares them side by side. Records are still written window by window, in order. 1 does one window at a time.",
    ),
    setting(
        "export_scope",
        Kind::String,
        None,
        "For a segment with event conditions, which events a Segment Export holds: events (only those matching), pages, sessions or individuals (every event of the matching pages, sessions or individuals). Sent only when set; FullStory's default otherwise.",
    ),
    setting(
        "custom_properties",
        Kind::String,
        Some("columns"),
        "How custom properties (keys named `<prefix>_<name>_<type>`, prefix user, evt, page or acct) reach the target: columns (each a typed field of events and individuals records, declared in a SCHEMA the first time it appears) or object (all in ExtraFields).",
    ),
    setting(
        "max_property_columns",
        Kind::Integer,
        Some("500"),
        "Most custom properties a stream gives columns; later new ones are kept in ExtraFields, with a warning. Leaves room under the 1,600 columns of a PostgreSQL or Redshift table.",
    ),
    setting(
        "emit_activate_version_messages",
        Kind::Boolean,
        Some("true"),
        "Follow the Singer table-version protocol on the FULL_TABLE streams (users, user, segments, webhook_endpoints, operations): each run's records carry a version, and an ACTIVATE_VERSION after a stream's last record lets a target that honours it (target-postgres) delete or mark the rows this run did not see. Never sent after a failed run, nor with batch_config. false sends none.",
    ),
    setting(
        "batch_config",
        Kind::Object,
        None,
        "Write BATCH messages instead of RECORDs: each bundle (or export window, or REST stream, one a platform for the settings streams) becomes a gzip JSONL file of raw records under a local directory. `{\"encoding\": {\"format\": \"jsonl\", \"compression\": \"gzip\"}, \"storage\": {\"root\": \"file:///dir\", \"prefix\": \"...\"}}`; only jsonl, gzip and file:// are supported.",
    ),
];

/// A setting's default as the table states it.
pub(super) fn default_of(key: &str) -> &'static str {
    // The table is compiled in and every default is checked by a test, so a
    // miss here is a build defect, not an input error.
    SETTINGS
        .iter()
        .find(|s| s.name == key)
        .and_then(|s| s.default)
        .expect("every defaulted setting has a default in SETTINGS")
}

/// A numeric setting's default as the table states it.
pub(super) fn default_number(key: &str) -> f64 {
    default_of(key)
        .parse()
        .expect("numeric defaults in SETTINGS are numbers")
}
