//! Progress for people watching the log: download rate and ETA, the line
//! after each unit, and human-readable sizes, durations and peak memory.

use std::time::{Duration, Instant};

/// The periodic line of a long download, with its ETA when the size is known.
pub(crate) fn log_download(label: &str, received: u64, declared: Option<u64>, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = received as f64 / secs;
    let (of, eta) = match declared {
        Some(total) if total >= received && rate > 0.0 => (
            format!(" of {}", human_bytes(total)),
            format!(
                ", ETA {}",
                human_duration(Duration::from_secs_f64((total - received) as f64 / rate))
            ),
        ),
        _ => (String::new(), String::new()),
    };
    tracing::info!(
        "{label}: {}{of} downloaded in {}, {:.1} MB/s{eta}",
        human_bytes(received),
        human_duration(elapsed),
        rate / 1e6
    );
}

/// What one finished unit did, for its progress line.
pub(crate) struct UnitDone<'a> {
    pub(crate) noun: &'static str,
    pub(crate) id: &'a str,
    pub(crate) window: String,
    pub(crate) records: u64,
    /// What the records are called ("events").
    pub(crate) records_noun: &'static str,
    pub(crate) wire_bytes: u64,
    pub(crate) json_bytes: u64,
    pub(crate) took: Duration,
}

/// The line after each committed unit, with the run's ETA.
pub(crate) fn log_progress(done: usize, total: usize, unit: &UnitDone<'_>, run_started: Instant) {
    let secs = unit.took.as_secs_f64().max(1e-6);
    let left = total - done;
    let eta = if left > 0 {
        let per_unit = run_started.elapsed().as_secs_f64() / done as f64;
        format!(
            ", ETA {}",
            human_duration(Duration::from_secs_f64(per_unit * left as f64))
        )
    } else {
        String::new()
    };
    tracing::info!(
        "{} {done}/{total} id {} ({}): {} {noun}, {} downloaded, {} JSON, {:.1} MB/s, {:.0} {noun}/s; {left} left{eta}",
        unit.noun,
        unit.id,
        unit.window,
        unit.records,
        human_bytes(unit.wire_bytes),
        human_bytes(unit.json_bytes),
        unit.json_bytes as f64 / secs / 1e6,
        unit.records as f64 / secs,
        noun = unit.records_noun,
    );
}

/// The process's peak resident set size in bytes (0 if unknown), read from
/// `/proc/self/status` so no unsafe call is needed.
pub(crate) fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
            line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Bytes with a binary unit, for logs.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration as `1h02m`, `3m05s` or `12s`, for logs.
pub(crate) fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_duration(Duration::from_secs(3725)), "1h02m");
        assert_eq!(human_duration(Duration::from_secs(65)), "1m05s");
    }

    #[test]
    fn peak_rss_is_known_on_linux() {
        assert!(peak_rss() > 0);
    }
}
