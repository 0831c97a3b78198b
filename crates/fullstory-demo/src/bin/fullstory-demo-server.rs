//! A local FullStory Data Export server with synthetic bundles, for demos.
//!
//! ```text
//! fullstory-demo-server --port 8765 --bundles 25 --events 200 --rate-limit 2/60
//! ```

use std::process::ExitCode;
use std::time::Duration;

use chrono::NaiveDate;
use clap::{Parser, ValueEnum};
use fullstory_demo::{Encoding, Server, ServerOptions, synthetic_bundles_with, synthetic_rest};

#[derive(Parser, Debug)]
#[command(about = "Serve synthetic FullStory Data Export bundles on 127.0.0.1")]
struct Args {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long, default_value_t = 8765)]
    port: u16,
    /// Key clients must send as `Authorization: Basic <key>`.
    #[arg(long, default_value = "demo-key")]
    api_key: String,
    /// Number of bundles.
    #[arg(long, default_value_t = 25)]
    bundles: usize,
    /// Events per bundle.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Start of the first bundle (UTC date, YYYY-MM-DD).
    #[arg(long, default_value = "2024-01-01", value_parser = parse_date)]
    start: NaiveDate,
    /// Hours covered by each bundle.
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(i64).range(1..))]
    bundle_hours: i64,
    /// How bundle bodies are sent.
    #[arg(long, value_enum, default_value_t = Enc::Gzip)]
    encoding: Enc,
    /// Seed for the synthetic data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// At most N downloads per SECS seconds, as N/SECS (FullStory: 2/60).
    #[arg(long, value_parser = parse_rate)]
    rate_limit: Option<(usize, Duration)>,
    /// Users served by /v2/users (10 a page).
    #[arg(long, default_value_t = 25)]
    users: usize,
    /// Segments served by /segments/v1.
    #[arg(long, default_value_t = 23)]
    segments: usize,
    /// Versions of each recording settings object.
    #[arg(long, default_value_t = 12)]
    versions: usize,
    /// Custom properties added to every event besides the usual ones
    /// (`evt_extra<k>_<type>`), for events rich in them.
    #[arg(long, default_value_t = 0)]
    properties: usize,
    /// Seconds a Segment Export operation takes to prepare.
    #[arg(long, default_value_t = 0.0)]
    export_prepare_secs: f64,
    /// Cut the first download of each file after this share of its bytes
    /// (0.6: at 60%); what follows is served whole.
    #[arg(long)]
    cut_downloads: Option<f64>,
    /// Answer no Range request: a download cut off must start over.
    #[arg(long)]
    no_ranges: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Enc {
    /// application/gzip file
    Gzip,
    /// application/json with Content-Encoding: gzip
    ContentEncoding,
    /// uncompressed application/json
    Plain,
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|e| format!("expected YYYY-MM-DD: {e}"))
}

fn parse_rate(s: &str) -> Result<(usize, Duration), String> {
    let (n, secs) = s.split_once('/').ok_or("expected N/SECS, e.g. 2/60")?;
    let n = n
        .trim()
        .parse::<usize>()
        .map_err(|e| format!("bad N: {e}"))?;
    let secs = secs
        .trim()
        .parse::<u64>()
        .map_err(|e| format!("bad SECS: {e}"))?;
    if secs == 0 {
        return Err("SECS must be at least 1".into());
    }
    Ok((n, Duration::from_secs(secs)))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let enc = match args.encoding {
        Enc::Gzip => Encoding::GzipFile,
        Enc::ContentEncoding => Encoding::ContentEncodingGzip,
        Enc::Plain => Encoding::Plain,
    };
    let first_start = args
        .start
        .and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp());
    let bundles = synthetic_bundles_with(
        args.bundles,
        args.events,
        first_start,
        args.bundle_hours * 3600,
        args.seed,
        enc,
        args.properties,
    );
    let server = match Server::start(ServerOptions {
        api_key: args.api_key,
        bundles,
        page_size: 20,
        rate_limit: args.rate_limit,
        port: args.port,
        rest: synthetic_rest(args.users, args.segments, args.versions),
    }) {
        Ok(server) => server,
        Err(e) => {
            eprintln!(
                "fullstory-demo-server: cannot listen on 127.0.0.1:{}: {e}",
                args.port
            );
            return ExitCode::FAILURE;
        }
    };
    server.set_download_cut(args.cut_downloads);
    server.set_ranges(!args.no_ranges);
    if args.export_prepare_secs > 0.0 {
        server.set_prepare_time(Duration::from_secs_f64(args.export_prepare_secs));
    }
    eprintln!(
        "fullstory-demo-server listening on {} ({} bundles x {} events)",
        server.url(),
        args.bundles,
        args.events
    );
    // Serve until killed; park can wake spuriously, hence the loop.
    loop {
        std::thread::park();
    }
}
