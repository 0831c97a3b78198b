//! BATCH output (the Meltano SDK's batch extension): each verified unit is
//! written as one gzip JSONL file of raw records under a local storage root,
//! then named in a `BATCH` message instead of being sent as RECORD lines.

use std::fs::File;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// gzip level of batch files: level 6 keeps them near an eighth of the JSON,
/// where level 1 is close to a fifth; the target's load, not this, is the
/// slow step of a BATCH run.
pub(crate) const GZIP_LEVEL: u32 = 6;

/// The only encoding supported, as the BATCH message states it.
pub(crate) const FORMAT: &str = "jsonl";
pub(crate) const COMPRESSION: &str = "gzip";

/// A validated `batch_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchConfig {
    /// The local directory batch files go to.
    pub(crate) root: PathBuf,
    /// Put before every file name.
    pub(crate) prefix: String,
}

const SHAPE: &str = r#"{"encoding": {"format": "jsonl", "compression": "gzip"}, "storage": {"root": "file:///path/to/dir"}}"#;

impl BatchConfig {
    /// Checks a `batch_config` value (an object, or a string holding one as
    /// an environment variable does). The error completes "batch_config ...".
    pub(crate) fn from_value(value: &Value) -> std::result::Result<BatchConfig, String> {
        let parsed;
        let value = match value {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| format!("is not valid JSON ({e}); expected {SHAPE}"))?;
                &parsed
            }
            other => other,
        };
        let Value::Object(top) = value else {
            return Err(format!("must be an object like {SHAPE}"));
        };
        only_keys(top, "", &["encoding", "storage"])?;
        let encoding = object(top, "encoding")?;
        only_keys(encoding, "encoding.", &["format", "compression"])?;
        match encoding.get("format") {
            Some(Value::String(f)) if f == FORMAT => {}
            Some(other) => {
                return Err(format!(
                    "encoding.format is {other}; only \"jsonl\" is supported"
                ));
            }
            None => return Err("encoding.format is missing; set it to \"jsonl\"".into()),
        }
        match encoding.get("compression") {
            Some(Value::String(c)) if c == COMPRESSION => {}
            Some(other) => {
                return Err(format!(
                    "encoding.compression is {other}; only \"gzip\" is supported"
                ));
            }
            None => {
                return Err("encoding.compression is missing; set it to \"gzip\"".into());
            }
        }
        let storage = object(top, "storage")?;
        only_keys(storage, "storage.", &["root", "prefix"])?;
        let root = match storage.get("root") {
            Some(Value::String(root)) => root_dir(root)?,
            Some(_) => return Err("storage.root must be a string (a file:// URL)".into()),
            None => {
                return Err(
                    "storage.root is missing; set it to a file:// URL of a directory".into(),
                );
            }
        };
        let prefix = match storage.get("prefix") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(p)) if p.contains(['/', '\0']) || p.starts_with('.') => {
                return Err(format!(
                    "storage.prefix {p:?} must be a plain file-name prefix (no '/', not starting with '.')"
                ));
            }
            Some(Value::String(p)) => p.clone(),
            Some(_) => return Err("storage.prefix must be a string".into()),
        };
        Ok(BatchConfig { root, prefix })
    }
}

fn object<'v>(
    map: &'v Map<String, Value>,
    key: &str,
) -> std::result::Result<&'v Map<String, Value>, String> {
    match map.get(key) {
        Some(Value::Object(inner)) => Ok(inner),
        Some(_) => Err(format!("{key} must be an object; expected {SHAPE}")),
        None => Err(format!("{key} is missing; expected {SHAPE}")),
    }
}

fn only_keys(
    map: &Map<String, Value>,
    path: &str,
    allowed: &[&str],
) -> std::result::Result<(), String> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "has an unknown key '{path}{k}'; supported: {}",
            allowed
                .iter()
                .map(|a| format!("{path}{a}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => Ok(()),
    }
}

/// The directory a `file://` root names; it must exist. The path is read
/// as the Meltano SDK reads it, as written after `file://` (a `%20` is
/// those three characters), and only if no such directory exists as
/// percent-decoded.
fn root_dir(root: &str) -> std::result::Result<PathBuf, String> {
    let Some(rest) = root.strip_prefix("file://") else {
        return Err(format!(
            "storage.root {root:?} is not a file:// URL; only local directories (file://) are supported"
        ));
    };
    let path = rest.strip_prefix("localhost").unwrap_or(rest);
    if !path.starts_with('/') {
        return Err(format!(
            "storage.root {root:?} is not a local absolute path; use file:///path"
        ));
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    [path, &decoded]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            format!("storage.root {root:?} is not an existing directory; create it first")
        })
}

/// An id for this run that batch file names carry: start time and process id.
pub(crate) fn run_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id()
    )
}

/// A batch file being written: hidden under a temporary name in the storage
/// root until [`Partial::publish`], removed if dropped before that.
pub(crate) struct Partial {
    file: tempfile::NamedTempFile,
    final_path: PathBuf,
}

impl Partial {
    /// Starts the batch file of one unit of `stream` (a bundle or window
    /// by its id; none for a REST stream, whose one file per run is its unit).
    pub(crate) fn create(
        config: &BatchConfig,
        run_id: &str,
        stream: &str,
        unit_id: Option<&str>,
    ) -> std::io::Result<Partial> {
        let unit = unit_id.map(|id| format!("{}-", file_safe(id)));
        let name = format!(
            "{}{stream}-{}{run_id}.{FORMAT}.gz",
            config.prefix,
            unit.unwrap_or_default()
        );
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&config.root)?;
        Ok(Partial {
            file,
            final_path: config.root.join(name),
        })
    }

    pub(crate) fn file_mut(&mut self) -> &mut File {
        self.file.as_file_mut()
    }

    /// Gives the file its final name (never replacing another file), makes
    /// the rename durable, and returns the file's URL for the manifest. The
    /// file's data was synced when it was finished.
    pub(crate) fn publish(self) -> Result<String> {
        let final_path = self.final_path;
        let shown = final_path.display().to_string();
        self.file.persist_noclobber(&final_path).map_err(|e| {
            Error::spool(
                format!("cannot publish the batch file '{shown}'"),
                "",
                e.error,
            )
        })?;
        if let Some(dir) = final_path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| Error::spool(format!("cannot sync '{}'", dir.display()), "", e))?;
        }
        // `file://` and the path as it is: the Meltano SDK opens what
        // follows `file://` without percent-decoding it.
        match final_path.to_str() {
            Some(path) => Ok(format!("file://{path}")),
            None => Err(Error::Unit(format!(
                "batch file '{shown}' has a name that is not UTF-8"
            ))),
        }
    }
}

impl std::io::Write for Partial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A unit id as it may appear in a file name.
fn file_safe(id: &str) -> String {
    id.chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The path a `file://` manifest entry names, for tests.
#[cfg(test)]
fn path_of(url: &str) -> Option<PathBuf> {
    url.strip_prefix("file://").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;
    use std::path::Path;

    fn good(root: &Path) -> Value {
        json!({
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": url::Url::from_directory_path(root).unwrap().to_string(), "prefix": "fs-"},
        })
    }

    #[test]
    fn accepts_the_sdk_shape_as_object_or_string() {
        let dir = tempfile::tempdir().unwrap();
        let want = BatchConfig {
            root: dir.path().to_path_buf(),
            prefix: "fs-".into(),
        };
        let v = good(dir.path());
        assert_eq!(BatchConfig::from_value(&v).unwrap().prefix, want.prefix);
        let s = Value::String(v.to_string());
        assert_eq!(
            BatchConfig::from_value(&s)
                .unwrap()
                .root
                .canonicalize()
                .unwrap(),
            want.root.canonicalize().unwrap()
        );
    }

    #[test]
    fn rejects_what_it_cannot_do_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (json!({"format": "parquet"}), "format", "jsonl"),
            (json!({"compression": "none"}), "compression", "gzip"),
            (json!({"root": "s3://bucket/x"}), "root", "file://"),
            (
                json!({"root": "file:///nonexistent/dir"}),
                "root",
                "existing directory",
            ),
            (json!({"prefix": "a/b"}), "prefix", "'/'"),
            (
                json!({"batch_size": 10}),
                "unknown key",
                "encoding, storage",
            ),
        ];
        for (change, want1, want2) in cases {
            let mut v = good(dir.path());
            let (k, val) = change.as_object().unwrap().iter().next().unwrap();
            match k.as_str() {
                "format" | "compression" => v["encoding"][k] = val.clone(),
                "root" | "prefix" => v["storage"][k] = val.clone(),
                _ => v[k] = val.clone(),
            }
            let err = BatchConfig::from_value(&v).unwrap_err();
            assert!(err.contains(want1) && err.contains(want2), "{k}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        assert!(BatchConfig::from_value(&json!([1])).is_err());
        assert!(BatchConfig::from_value(&json!("{not json")).is_err());
    }

    #[test]
    fn a_root_with_a_space_and_a_percent_gives_manifests_the_sdk_opens() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("fs batches%20x");
        std::fs::create_dir(&dir).unwrap();
        let raw = format!("file://{}", dir.display());
        let encoded = url::Url::from_directory_path(&dir).unwrap().to_string();
        assert!(
            encoded.contains("%20") && encoded.contains("%2520"),
            "{encoded}"
        );
        for root in [raw, encoded] {
            let mut v = good(&dir);
            v["storage"]["root"] = json!(root);
            let config = BatchConfig::from_value(&v).unwrap();
            assert_eq!(config.root, dir, "{root}");
        }
        let mut v = good(&dir);
        v["storage"]["root"] = json!(format!("file://{}", dir.display()));
        let config = BatchConfig::from_value(&v).unwrap();
        let mut partial = Partial::create(&config, "RUN", "events", Some("1")).unwrap();
        partial.file_mut().write_all(b"x").unwrap();
        let url = partial.publish().unwrap();
        // What follows file:// is the path itself, as the SDK opens it.
        assert_eq!(
            url,
            format!("file://{}/fs-events-1-RUN.jsonl.gz", dir.display())
        );
        assert_eq!(std::fs::read(path_of(&url).unwrap()).unwrap(), b"x");
    }

    #[test]
    fn partial_files_appear_only_when_published() {
        let dir = tempfile::tempdir().unwrap();
        let config = BatchConfig::from_value(&good(dir.path())).unwrap();
        let mut partial = Partial::create(&config, "RUN", "events", Some("12/34")).unwrap();
        partial.file_mut().write_all(b"x").unwrap();
        let names = || -> Vec<String> {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        assert!(names().iter().all(|n| n.starts_with('.')), "{:?}", names());
        let url = partial.publish().unwrap();
        assert_eq!(names(), vec!["fs-events-12_34-RUN.jsonl.gz".to_string()]);
        assert_eq!(std::fs::read(path_of(&url).unwrap()).unwrap(), b"x");

        // A second file of the same name is refused, not overwritten.
        let again = Partial::create(&config, "RUN", "events", Some("12/34")).unwrap();
        assert!(again.publish().is_err());
        let dropped = Partial::create(&config, "RUN", "events", Some("56")).unwrap();
        drop(dropped);
        assert_eq!(names().len(), 1);

        // A REST stream's file has no unit id in its name.
        let mut rest = Partial::create(&config, "RUN", "users", None).unwrap();
        rest.write_all(b"y").unwrap();
        let url = rest.publish().unwrap();
        assert!(url.ends_with("/fs-users-RUN.jsonl.gz"), "{url}");
        assert_eq!(std::fs::read(path_of(&url).unwrap()).unwrap(), b"y");
    }
}
