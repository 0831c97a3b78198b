//! Metrics in the singer-python format (`METRIC: {...}` log lines), which
//! orchestrators read from stderr.

use std::time::Duration;

use reqwest::StatusCode;

/// Logs an `http_request_duration` timer for one request.
pub(crate) fn http_request(
    endpoint: &str,
    elapsed: Duration,
    status: Option<StatusCode>,
    ok: bool,
) {
    let metric = serde_json::json!({
        "type": "timer",
        "metric": "http_request_duration",
        "value": elapsed.as_secs_f64(),
        "tags": {
            "endpoint": endpoint,
            "http_status_code": status.map(|s| s.as_u16()),
            "status": if ok { "succeeded" } else { "failed" },
        }
    });
    tracing::info!("METRIC: {metric}");
}

/// Logs a `record_count` counter for records written to a stream.
pub(crate) fn record_count(stream: &str, count: u64) {
    let metric = serde_json::json!({
        "type": "counter",
        "metric": "record_count",
        "value": count,
        "tags": {"endpoint": stream},
    });
    tracing::info!("METRIC: {metric}");
}
