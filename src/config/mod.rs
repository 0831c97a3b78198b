//! Settings: loading them from config files and `TAP_FULLSTORY_*` environment
//! variables, and checking them into a run's [`Config`]. The table of what the
//! tap accepts is in `settings`.

mod settings;

pub(crate) use settings::{ENV_PREFIX, Kind, SETTINGS};

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::batch::BatchConfig;
use crate::error::{Error, Result};
use crate::json_file::read_json_object;
use crate::redact;
use crate::time::parse_datetime;
use crate::urls::is_loopback;
use settings::{default_number, default_of};

/// The API key. Its `Debug` form is masked so it cannot leak through logs.
#[derive(Clone)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    /// The key itself, for building the Authorization header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Validated settings for one run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) api_key: ApiKey,
    pub(crate) start_date: DateTime<Utc>,
    pub(crate) end_date: Option<DateTime<Utc>>,
    pub(crate) base_url: String,
    pub(crate) api_url: String,
    pub(crate) user_agent: String,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_retries: u32,
    pub(crate) retry_base_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) downloads_per_window: u32,
    pub(crate) download_window: Duration,
    pub(crate) progress_interval: Duration,
    pub(crate) spool_dir: Option<PathBuf>,
    pub(crate) skip_bundles: Vec<String>,
    pub(crate) batch: Option<BatchConfig>,
    pub(crate) source: EventsSource,
    pub(crate) segment: SegmentSettings,
    pub(crate) custom_properties: PropertyMode,
    pub(crate) max_property_columns: u32,
    /// Whether the FULL_TABLE streams carry table versions and end with
    /// ACTIVATE_VERSION.
    pub(crate) activate_version: bool,
}

/// How custom properties reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyMode {
    /// Each a typed field of the record.
    Columns,
    /// All in `ExtraFields`.
    Object,
}

/// Where the `events` stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventsSource {
    DataExport,
    SegmentExport,
}

/// The Segment Export settings.
#[derive(Debug, Clone)]
pub(crate) struct SegmentSettings {
    pub(crate) segment_id: String,
    /// Which events of a segment with event conditions an event export holds.
    pub(crate) scope: Option<ExportScope>,
    /// Windows whose exports may be in flight at once (at least 1).
    pub(crate) in_flight: usize,
    /// Starts of windows to pass over deliberately.
    pub(crate) skip: Vec<DateTime<Utc>>,
    pub(crate) window: chrono::TimeDelta,
    pub(crate) delay: chrono::TimeDelta,
    pub(crate) lookback: chrono::TimeDelta,
    pub(crate) poll_interval: Duration,
    pub(crate) timeout: Duration,
}

/// Which events of a segment with event conditions an event export holds,
/// in order of increasing scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportScope {
    Events,
    Pages,
    Sessions,
    Individuals,
}

impl ExportScope {
    /// The value the API takes.
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            ExportScope::Events => "SCOPE_EVENT",
            ExportScope::Pages => "SCOPE_PAGES",
            ExportScope::Sessions => "SCOPE_SESSIONS",
            ExportScope::Individuals => "SCOPE_INDIVIDUAL",
        }
    }
}

/// Where a setting's value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Env(String),
}

impl Origin {
    fn describe(&self, key: &str) -> String {
        match self {
            Origin::File(path) => format!("config file '{}': key '{key}'", path.display()),
            Origin::Env(var) => format!("environment variable {var}"),
        }
    }
}

/// The word on the command line that stands for "read settings from the environment".
pub(crate) const ENV_SOURCE: &str = "ENV";

/// Raw settings gathered from every source, later ones overriding earlier ones.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    values: Vec<(String, Value, Origin)>,
}

impl RawConfig {
    /// Sets `key` as if a file `test.json` held it.
    #[cfg(test)]
    pub(crate) fn set_for_test(&mut self, key: &str, value: &str) {
        let source = Origin::File(PathBuf::from("test.json"));
        self.set(key.to_string(), Value::String(value.to_string()), source);
    }

    fn set(&mut self, key: String, value: Value, source: Origin) {
        self.values.retain(|(k, _, _)| *k != key);
        self.values.push((key, value, source));
    }

    fn get(&self, key: &str) -> Option<(&Value, &Origin)> {
        self.values
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, s)| (v, s))
    }

    /// Reads one JSON config file and layers it over what is already there.
    pub(crate) fn add_file(&mut self, path: &Path) -> Result<()> {
        let object = read_json_object(path, "config")?;
        for (key, value) in object {
            self.set(key, value, Origin::File(path.to_path_buf()));
        }
        Ok(())
    }

    /// Layers every `TAP_FULLSTORY_<SETTING>` variable that is set and non-empty.
    pub(crate) fn add_env(&mut self) {
        for setting in SETTINGS {
            let var = format!("{ENV_PREFIX}{}", setting.name.to_uppercase());
            if let Ok(value) = std::env::var(&var)
                && !value.is_empty()
            {
                self.set(
                    setting.name.to_string(),
                    Value::String(value),
                    Origin::Env(var),
                );
            }
        }
    }

    /// The streams selected by default besides the always-default ones: the
    /// individuals stream when `source` is `segment_export`.
    pub(crate) fn default_streams(&self) -> &'static [&'static str] {
        match self.events_source() {
            Ok(EventsSource::SegmentExport) => &["individuals"],
            // A bad `source` is reported when the config is validated.
            Ok(EventsSource::DataExport) | Err(_) => &[],
        }
    }

    /// Where the events stream comes from: the `source` setting.
    fn events_source(&self) -> Result<EventsSource> {
        match self.string("source")?.as_deref() {
            None | Some("data_export") => Ok(EventsSource::DataExport),
            Some("segment_export") => Ok(EventsSource::SegmentExport),
            Some(other) => Err(self.bad(
                "source",
                &format!("is {other:?}; use \"data_export\" or \"segment_export\""),
            )),
        }
    }

    /// Checks every setting and produces the run's configuration.
    pub(crate) fn validate(&self, now: DateTime<Utc>) -> Result<Config> {
        // The key is a secret before anything else can print it, even a
        // warning about a setting named like it.
        if let Some((Value::String(s), _)) = self.get("api_key")
            && !s.trim().is_empty()
        {
            redact::register_secret(s.trim());
        }
        for (key, _, source) in &self.values {
            if !SETTINGS.iter().any(|s| s.name == key) {
                tracing::warn!("{}: unknown setting, ignored", source.describe(key));
            }
        }

        let api_key = match self.get("api_key") {
            None => return Err(missing("api_key")),
            Some((Value::String(s), _)) if !s.trim().is_empty() => ApiKey(s.trim().to_string()),
            Some((Value::String(_), source)) => {
                return Err(bad(
                    source,
                    "api_key",
                    "is empty; set it to your FullStory API key",
                ));
            }
            Some((_, source)) => return Err(bad(source, "api_key", "must be a string")),
        };

        let start_date = self
            .datetime("start_date")?
            .ok_or_else(|| missing("start_date"))?;
        if start_date > now {
            return Err(self.bad(
                "start_date",
                "is in the future; no bundle can end after it yet",
            ));
        }
        if start_date.timestamp() < 0 {
            return Err(self.bad(
                "start_date",
                "is before 1970, long before FullStory recorded anything; use the date your account began capturing",
            ));
        }
        let end_date = self.datetime("end_date")?;
        if let Some(end) = end_date
            && end <= start_date
        {
            return Err(self.bad("end_date", "must be later than start_date"));
        }

        let base_url = match self.string("base_url")? {
            Some(url) => check_base_url(&url).map_err(|why| self.bad("base_url", &why))?,
            None => default_of("base_url").to_string(),
        };

        let source = self.events_source()?;
        let api_url = match self.string("api_url")? {
            Some(url) => check_base_url(&url).map_err(|why| self.bad("api_url", &why))?,
            None => default_of("api_url").to_string(),
        };
        let segment = self.segment_settings()?;

        let user_agent = self
            .string("user_agent")?
            .unwrap_or_else(|| format!("tap-fullstory/{}", env!("CARGO_PKG_VERSION")));
        if reqwest::header::HeaderValue::from_str(&user_agent).is_err() {
            return Err(self.bad(
                "user_agent",
                "cannot be sent as an HTTP header: use printable ASCII, with no line breaks or control characters",
            ));
        }

        Ok(Config {
            api_key,
            start_date,
            end_date,
            base_url,
            api_url,
            user_agent,
            request_timeout: self.seconds("request_timeout", false)?,
            connect_timeout: self.seconds("connect_timeout", false)?,
            max_retries: self.integer("max_retries", 0)?,
            retry_base_delay: self.seconds("retry_base_delay", true)?,
            retry_max_delay: self.seconds("retry_max_delay", true)?,
            downloads_per_window: self.integer("downloads_per_window", 1)?,
            download_window: self.seconds("download_window_seconds", true)?,
            progress_interval: self.seconds("progress_interval_seconds", false)?,
            spool_dir: self.string("spool_dir")?.map(PathBuf::from),
            skip_bundles: self.string_list("skip_bundles")?,
            batch: self.batch_config()?,
            source,
            segment,
            custom_properties: self.property_mode()?,
            max_property_columns: self.integer("max_property_columns", 0)?,
            activate_version: self.boolean("emit_activate_version_messages")?,
        })
    }

    fn property_mode(&self) -> Result<PropertyMode> {
        match self.string("custom_properties")?.as_deref() {
            None | Some("columns") => Ok(PropertyMode::Columns),
            Some("object") => Ok(PropertyMode::Object),
            Some(other) => Err(self.bad(
                "custom_properties",
                &format!("is {other:?}; use \"columns\" or \"object\""),
            )),
        }
    }

    fn segment_settings(&self) -> Result<SegmentSettings> {
        let segment_id = match self.string("segment_id")? {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            Some(_) => return Err(self.bad("segment_id", "is empty")),
            None => default_of("segment_id").to_string(),
        };
        let hours = |key: &'static str| -> Result<f64> {
            Ok(self.number(key)?.unwrap_or_else(|| default_number(key)))
        };
        let window = hours("export_window_hours")?;
        // Whole seconds that divide a day, so windows tile each UTC day.
        let window_secs = (window * 3600.0).round();
        if !(900.0..=86_400.0).contains(&window_secs)
            || (window * 3600.0 - window_secs).abs() > 1e-6
            || 86_400.0 % window_secs != 0.0
        {
            return Err(self.bad(
                "export_window_hours",
                "must be between 0.25 and 24 and divide 24 (e.g. 0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 24)",
            ));
        }
        let delay = hours("export_delay_hours")?;
        if !(0.0..=24.0 * 366.0).contains(&delay) {
            return Err(self.bad("export_delay_hours", "must be 0 or more hours"));
        }
        let lookback = hours("lookback_hours")?;
        if !(0.0..=24.0 * 366.0).contains(&lookback) {
            return Err(self.bad("lookback_hours", "must be 0 or more hours"));
        }
        let millis = |h: f64| chrono::TimeDelta::milliseconds((h * 3_600_000.0).round() as i64);
        let timeout = self
            .number("export_timeout_minutes")?
            .unwrap_or_else(|| default_number("export_timeout_minutes"));
        if !(timeout > 0.0 && timeout <= 7.0 * 24.0 * 60.0) {
            return Err(self.bad(
                "export_timeout_minutes",
                "must be more than 0 and at most a week",
            ));
        }
        let scope = match self.string("export_scope")?.as_deref() {
            None => None,
            Some("events") => Some(ExportScope::Events),
            Some("pages") => Some(ExportScope::Pages),
            Some("sessions") => Some(ExportScope::Sessions),
            Some("individuals") => Some(ExportScope::Individuals),
            Some(other) => {
                return Err(self.bad(
                    "export_scope",
                    &format!(
                        "is {other:?}; use \"events\", \"pages\", \"sessions\" or \"individuals\""
                    ),
                ));
            }
        };
        let in_flight = self.integer("exports_in_flight", 1)?;
        if in_flight > 64 {
            return Err(self.bad("exports_in_flight", "must be at most 64"));
        }
        let mut skip = Vec::new();
        for start in self.string_list("skip_windows")? {
            match parse_datetime(&start) {
                Some(at) => skip.push(at),
                None => {
                    return Err(self.bad(
                        "skip_windows",
                        &format!(
                            "holds {start:?}, which is not a window's start; use the start the log names (2024-01-02T00:00:00Z)"
                        ),
                    ));
                }
            }
        }
        Ok(SegmentSettings {
            segment_id,
            scope,
            in_flight: in_flight as usize,
            skip,
            window: chrono::TimeDelta::seconds(window_secs as i64),
            delay: millis(delay),
            lookback: millis(lookback),
            poll_interval: self.seconds("poll_interval_seconds", false)?,
            timeout: Duration::from_secs_f64(timeout * 60.0),
        })
    }

    /// An error about `key`, naming where its value came from.
    fn bad(&self, key: &str, why: &str) -> Error {
        match self.get(key) {
            Some((_, source)) => bad(source, key, why),
            None => Error::Input(format!("config: setting '{key}' {why}")),
        }
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None | Some((Value::Null, _)) => Ok(None),
            Some((Value::String(s), _)) => Ok(Some(s.clone())),
            Some((_, source)) => Err(bad(source, key, "must be a string")),
        }
    }

    fn batch_config(&self) -> Result<Option<BatchConfig>> {
        match self.get("batch_config") {
            None | Some((Value::Null, _)) => Ok(None),
            Some((value, source)) => BatchConfig::from_value(value)
                .map(Some)
                .map_err(|why| bad(source, "batch_config", &why)),
        }
    }

    fn datetime(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        let Some(text) = self.string(key)? else {
            return Ok(None);
        };
        match parse_datetime(&text) {
            Some(dt) => Ok(Some(dt)),
            None => Err(self.bad(
                key,
                &format!(
                    "{text:?} is not a date-time; use RFC 3339 (2024-01-31T00:00:00Z) or YYYY-MM-DD"
                ),
            )),
        }
    }

    /// A list given as a JSON array of strings (or whole numbers), or as one
    /// comma-separated string (environment variables are strings).
    fn string_list(&self, key: &str) -> Result<Vec<String>> {
        let Some((value, source)) = self.get(key) else {
            return Ok(Vec::new());
        };
        let items: Vec<String> = match value {
            Value::Null => return Ok(Vec::new()),
            Value::String(s) => s.split(',').map(|item| item.trim().to_string()).collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.trim().to_string()),
                    // Only whole numbers that survived parsing exactly.
                    Value::Number(n) if n.is_u64() => Ok(n.to_string()),
                    _ => Err(bad(
                        source,
                        key,
                        "must list strings (write long numeric ids in quotes)",
                    )),
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(bad(
                    source,
                    key,
                    "must be a JSON array of strings or a comma-separated string",
                ));
            }
        };
        Ok(items.into_iter().filter(|item| !item.is_empty()).collect())
    }

    /// A number given as JSON number or numeric string (environment variables are strings).
    fn number(&self, key: &str) -> Result<Option<f64>> {
        let Some((value, source)) = self.get(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Null => return Ok(None),
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => Err(bad(source, key, "must be a number")),
        }
    }

    /// A true/false setting; environment variables spell it `true`,
    /// `false`, `1` or `0`.
    fn boolean(&self, key: &'static str) -> Result<bool> {
        let Some((value, source)) = self.get(key) else {
            return Ok(default_of(key) == "true");
        };
        match value {
            Value::Null => Ok(default_of(key) == "true"),
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(bad(source, key, "must be true or false")),
            },
            _ => Err(bad(source, key, "must be true or false")),
        }
    }

    fn seconds(&self, key: &'static str, zero_ok: bool) -> Result<Duration> {
        let secs = match self.number(key)? {
            Some(secs) => secs,
            None => default_number(key),
        };
        if secs < 0.0 || (!zero_ok && secs == 0.0) || secs > 86_400.0 * 7.0 {
            let range = if zero_ok {
                "between 0 and 604800 seconds"
            } else {
                "more than 0 and at most 604800 seconds"
            };
            return Err(self.bad(key, &format!("must be {range}")));
        }
        Ok(Duration::from_secs_f64(secs))
    }

    fn integer(&self, key: &'static str, min: u32) -> Result<u32> {
        let Some(n) = self.number(key)? else {
            return Ok(default_number(key) as u32);
        };
        if n.fract() != 0.0 || n < f64::from(min) || n > 1_000_000.0 {
            return Err(self.bad(key, &format!("must be a whole number of at least {min}")));
        }
        Ok(n as u32)
    }
}

fn missing(key: &str) -> Error {
    Error::Input(format!(
        "config: required setting '{key}' is missing; add it to the config file or set {ENV_PREFIX}{}",
        key.to_uppercase()
    ))
}

fn bad(source: &Origin, key: &str, why: &str) -> Error {
    Error::Input(format!("{} {why}", source.describe(key)))
}

/// Accepts http(s) URLs; plain http only for loopback hosts, so the key never
/// travels unencrypted over a network. Refuses credentials (they would be
/// logged, and sent instead of the key), a query and a fragment (request
/// URLs are built by appending paths). Returns the URL without a trailing
/// slash. Messages never quote the URL's credentials.
fn check_base_url(url: &str) -> std::result::Result<String, String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{:?} is not a valid URL ({e})", redact::url(url)))?;
    let shown = redact::url(url);
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "must not hold a user name or password ({}://user:password@...); remove them: the tap authenticates with api_key only",
            parsed.scheme()
        ));
    }
    if parsed.query().is_some() {
        return Err(format!(
            "{shown:?} must not have a query string (?...); give the API host only, such as https://export.fullstory.com"
        ));
    }
    if parsed.fragment().is_some() {
        return Err(format!(
            "{shown:?} must not have a fragment (#...); give the API host only, such as https://export.fullstory.com"
        ));
    }
    match parsed.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback(&parsed) {
                return Err(format!(
                    "{shown:?} uses plain http, which would send the API key unencrypted; use https (http is accepted for loopback addresses only)"
                ));
            }
        }
        other => return Err(format!("{shown:?} must be an http(s) URL, not {other}:")),
    }
    if parsed.host().is_none() {
        return Err(format!("{shown:?} has no host"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn raw(value: Value) -> RawConfig {
        let mut raw = RawConfig::default();
        for (k, v) in value.as_object().unwrap() {
            raw.set(k.clone(), v.clone(), Origin::File(PathBuf::from("c.json")));
        }
        raw
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = raw(json!({"api_key": "k", "start_date": "2024-01-01"}))
            .validate(now())
            .unwrap();
        assert_eq!(cfg.base_url, "https://export.fullstory.com");
        assert_eq!(cfg.api_url, "https://api.fullstory.com");
        assert_eq!(cfg.downloads_per_window, 2);
        assert_eq!(cfg.download_window, Duration::from_secs(60));
        assert_eq!(cfg.start_date.to_rfc3339(), "2024-01-01T00:00:00+00:00");
    }

    #[test]
    fn numeric_defaults_come_from_the_table() {
        let cfg = raw(json!({"api_key": "k", "start_date": "2024-01-01"}))
            .validate(now())
            .unwrap();
        for s in SETTINGS {
            if matches!(s.kind, Kind::Number | Kind::Integer) {
                let text = s.default.unwrap();
                assert!(text.parse::<f64>().is_ok(), "{}: {text}", s.name);
            }
        }
        assert_eq!(cfg.request_timeout, Duration::from_secs(300));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(30));
        assert_eq!(cfg.max_retries, 8);
        assert_eq!(cfg.retry_base_delay, Duration::from_secs(2));
        assert_eq!(cfg.retry_max_delay, Duration::from_secs(120));
        assert_eq!(cfg.progress_interval, Duration::from_secs(30));
    }

    #[test]
    fn later_values_override_earlier_ones() {
        let mut r = raw(json!({"api_key": "k", "start_date": "2024-01-01"}));
        r.set(
            "start_date".into(),
            json!("2025-01-01"),
            Origin::File("b.json".into()),
        );
        let cfg = r.validate(now()).unwrap();
        assert_eq!(cfg.start_date.to_rfc3339(), "2025-01-01T00:00:00+00:00");
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let err = raw(json!({"api_key": "k", "start_date": "soon"}))
            .validate(now())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'c.json'") && err.contains("'start_date'"),
            "{err}"
        );

        let err = raw(json!({"api_key": " ", "start_date": "2024-01-01"}))
            .validate(now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("api_key") && err.contains("empty"), "{err}");

        let err = raw(json!({"start_date": "2024-01-01"}))
            .validate(now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'api_key' is missing"), "{err}");
    }

    #[test]
    fn rejects_bad_dates() {
        let future = raw(json!({"api_key": "k", "start_date": "2030-01-01"}));
        assert!(future.validate(now()).is_err());
        let reversed =
            raw(json!({"api_key": "k", "start_date": "2024-02-01", "end_date": "2024-01-01"}));
        assert!(
            reversed
                .validate(now())
                .unwrap_err()
                .to_string()
                .contains("end_date")
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_base_url("http://127.0.0.1:8080/").is_ok());
        assert!(check_base_url("http://localhost:1").is_ok());
        assert!(check_base_url("http://[::1]:1").is_ok());
        assert!(check_base_url("http://export.fullstory.com").is_err());
        assert!(check_base_url("ftp://127.0.0.1").is_err());
        assert!(check_base_url("not a url").is_err());
        assert_eq!(
            check_base_url("https://example.com/").unwrap(),
            "https://example.com"
        );
    }

    #[test]
    fn skip_bundles_takes_an_array_or_a_comma_separated_string() {
        let skip = |v: Value| {
            raw(json!({"api_key": "k", "start_date": "2024-01-01", "skip_bundles": v}))
                .validate(now())
                .map(|c| c.skip_bundles)
        };
        assert_eq!(skip(json!(["1", 2, " x "])).unwrap(), ["1", "2", "x"]);
        assert_eq!(
            skip(json!("1, 12345678901234567890123,,")).unwrap(),
            ["1", "12345678901234567890123"]
        );
        assert!(skip(json!(null)).unwrap().is_empty());
        let err = skip(json!([1.2345678901234568e22]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'skip_bundles'") && err.contains("quotes"),
            "{err}"
        );
        assert!(skip(json!({"a": 1})).is_err());
        let cfg = raw(json!({"api_key": "k", "start_date": "2024-01-01"}))
            .validate(now())
            .unwrap();
        assert!(cfg.skip_bundles.is_empty());
    }

    #[test]
    fn base_url_with_credentials_query_or_fragment_is_refused() {
        let err = check_base_url("https://user:hunter2pw@example.com").unwrap_err();
        assert!(err.contains("user name or password"), "{err}");
        assert!(
            !err.contains("hunter2pw") && !err.contains("user:hunter2"),
            "{err}"
        );
        let err = check_base_url("https://tok@example.com").unwrap_err();
        assert!(!err.contains("tok@"), "{err}");
        let err = check_base_url("https://example.com/?x=1").unwrap_err();
        assert!(err.contains("query string"), "{err}");
        let err = check_base_url("https://example.com?").unwrap_err();
        assert!(err.contains("query string"), "{err}");
        let err = check_base_url("https://example.com/#top").unwrap_err();
        assert!(err.contains("fragment"), "{err}");
        assert!(check_base_url("https://example.com/prefix/").is_ok());
    }

    #[test]
    fn api_url_is_checked_like_base_url() {
        let cfg = raw(
            json!({"api_key": "k", "start_date": "2024-01-01", "api_url": "http://127.0.0.1:9/"}),
        )
        .validate(now())
        .unwrap();
        assert_eq!(cfg.api_url, "http://127.0.0.1:9");
        let err = raw(json!({"api_key": "k", "start_date": "2024-01-01", "api_url": "http://api.fullstory.com"}))
            .validate(now())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'api_url'") && err.contains("plain http"),
            "{err}"
        );
    }

    #[test]
    fn segment_export_settings() {
        let base = json!({"api_key": "k", "start_date": "2024-01-01"});
        let cfg = raw(base.clone()).validate(now()).unwrap();
        assert_eq!(cfg.source, EventsSource::DataExport);
        assert_eq!(cfg.api_url, "https://api.fullstory.com");
        assert_eq!(cfg.segment.segment_id, "everyone");
        assert_eq!(cfg.segment.window, chrono::TimeDelta::hours(24));
        assert_eq!(cfg.segment.delay, chrono::TimeDelta::hours(24));
        assert_eq!(cfg.segment.lookback, chrono::TimeDelta::zero());
        assert_eq!(cfg.segment.poll_interval, Duration::from_secs(5));
        assert_eq!(cfg.segment.timeout, Duration::from_secs(7200));
        let with = |k: &str, v: Value| {
            let mut c = base.clone();
            c[k] = v;
            raw(c).validate(now())
        };
        assert_eq!(
            with("source", json!("segment_export")).unwrap().source,
            EventsSource::SegmentExport
        );
        assert!(with("source", json!("bundles")).is_err());
        for ok in [0.25, 0.5, 1.0, 3.0, 8.0, 24.0] {
            assert!(with("export_window_hours", json!(ok)).is_ok(), "{ok}");
        }
        for bad in [0.0, 0.2, 5.0, 7.0, 25.0, 48.0, -1.0] {
            assert!(with("export_window_hours", json!(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            with("export_window_hours", json!("0.25"))
                .unwrap()
                .segment
                .window,
            chrono::TimeDelta::minutes(15)
        );
        assert!(with("export_delay_hours", json!(-1)).is_err());
        assert_eq!(
            with("export_delay_hours", json!(0)).unwrap().segment.delay,
            chrono::TimeDelta::zero()
        );
        assert!(with("lookback_hours", json!(-0.5)).is_err());
        assert!(with("api_url", json!("http://api.fullstory.com")).is_err());
        assert_eq!(
            with("api_url", json!("http://127.0.0.1:9/"))
                .unwrap()
                .api_url,
            "http://127.0.0.1:9"
        );
        assert!(with("segment_id", json!(" ")).is_err());
        assert!(with("export_timeout_minutes", json!(0)).is_err());
        assert!(with("poll_interval_seconds", json!(0)).is_err());
    }

    #[test]
    fn numbers_accept_strings() {
        let cfg = raw(json!({"api_key": "k", "start_date": "2024-01-01", "max_retries": "3", "download_window_seconds": 0}))
            .validate(now())
            .unwrap();
        assert_eq!(cfg.max_retries, 3);
        assert_eq!(cfg.download_window, Duration::ZERO);
        assert!(
            raw(json!({"api_key": "k", "start_date": "2024-01-01", "max_retries": 1.5}))
                .validate(now())
                .is_err()
        );
    }

    #[test]
    fn booleans_take_json_or_env_spellings() {
        let flag = |v: Value| {
            raw(json!({"api_key": "k", "start_date": "2024-01-01", "emit_activate_version_messages": v}))
                .validate(now())
                .map(|c| c.activate_version)
        };
        assert!(flag(Value::Null).unwrap());
        assert!(!flag(json!(false)).unwrap());
        assert!(!flag(json!("0")).unwrap());
        assert!(flag(json!(" TRUE ")).unwrap());
        let err = flag(json!("no")).unwrap_err().to_string();
        assert!(
            err.contains("emit_activate_version_messages") && err.contains("true or false"),
            "{err}"
        );
        assert!(flag(json!(1)).is_err());
    }
}
