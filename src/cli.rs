//! The command line: parsing arguments, setting up logging, and running the
//! requested mode. Returns the process exit code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Parser;

use crate::about::{self, AboutFormat};
use crate::catalog::{Selections, catalog_selecting};
use crate::config::{ENV_SOURCE, RawConfig};
use crate::error::{EXIT_INPUT, Error, Result, one_line};
use crate::shutdown::{self, Stop};
use crate::singer::SingerWriter;
use crate::state::State;

/// Singer tap for FullStory events and individuals (Data Export bundles or Segment Export).
#[derive(Debug, Parser)]
#[command(name = "tap-fullstory", version, about, long_about = None)]
pub(crate) struct Args {
    /// Config file (JSON). Repeat to layer files, later keys winning; `ENV`
    /// reads `TAP_FULLSTORY_<SETTING>` variables instead of a file.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Vec<PathBuf>,

    /// State file from a previous run (its last STATE message's value).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) state: Option<PathBuf>,

    /// Catalog file selecting streams and fields.
    #[arg(long, value_name = "FILE", conflicts_with = "properties")]
    pub(crate) catalog: Option<PathBuf>,

    /// Legacy name for --catalog.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) properties: Option<PathBuf>,

    /// Print the catalog and exit.
    #[arg(short, long)]
    pub(crate) discover: bool,

    /// Print what the tap is and the settings it takes, and exit.
    #[arg(long)]
    pub(crate) about: bool,

    /// Format of --about.
    #[arg(long, value_enum, default_value_t = AboutFormat::Text, requires = "about")]
    pub(crate) format: AboutFormat,
}

/// Parses the process arguments, runs, and returns the exit code.
pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // --help and --version land here too, with exit code 0.
            let code = if e.use_stderr() { EXIT_INPUT } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    init_logging();
    settle_allocator();
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{}", crate::redact::redact(&one_line(&e)));
            e.exit_code()
        }
    }
}

/// Keeps glibc from raising its mmap threshold as buffers churn, so large
/// short-lived buffers go back to the system and peak memory stays flat
/// however long the unit.
fn settle_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before other threads exist.
    // (Neither std nor rustix wraps mallopt, so this one call stays unsafe.)
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAP_FULLSTORY_LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(crate::redact::Stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn run(args: Args) -> Result<()> {
    if args.about {
        return print_stdout(&about::render(args.format));
    }
    if args.config.is_empty() && !args.discover {
        return Err(Error::Input(
            "no config given: pass --config FILE (or --config ENV to read TAP_FULLSTORY_* variables)"
                .to_string(),
        ));
    }
    let mut raw = RawConfig::default();
    for path in &args.config {
        if path.as_os_str() == ENV_SOURCE {
            raw.add_env();
        } else {
            raw.add_file(path)?;
        }
    }
    if args.discover {
        let mut text = serde_json::to_string_pretty(&catalog_selecting(raw.default_streams()))
            .map_err(|e| Error::Output(e.into()))?;
        text.push('\n');
        return print_stdout(&text);
    }

    let now = chrono::Utc::now();
    let config = raw.validate(now)?;
    let state = match &args.state {
        Some(path) => State::load(path, now)?,
        None => State::default(),
    };
    let selections = match args.catalog.as_ref().or(args.properties.as_ref()) {
        Some(path) => Selections::from_catalog_file(path)?,
        None => Selections::all_and(raw.default_streams()),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let mut out = SingerWriter::stdout()?;
    // A file size limit (ulimit -f) reached by the spool or a batch file
    // raises SIGXFSZ, which would kill the process; caught, it leaves the
    // write failing with EFBIG, reported like a full disk. The handler stays
    // for the life of the process.
    let _file_size_limit = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ))
    });
    let stop = Stop::default();
    runtime.spawn(shutdown::watchdog(stop.clone()));
    let result = runtime.block_on(async {
        tokio::select! {
            biased;
            signal = shutdown::signal() => Err(Error::Interrupted(signal)),
            () = output_closed() => Err(Error::OutputClosed),
            done = crate::run::sync(config, state, selections, stop, &mut out) => done,
        }
    });
    // Downloads still in flight are abandoned; their spool files are
    // anonymous and vanish with the process.
    runtime.shutdown_background();
    let flushed = out.flush();
    result.and(flushed)
}

fn print_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Error::from_output)
}

/// Resolves when stdout is a pipe whose reader has gone away, so a run that is
/// busy downloading stops at once instead of at its next write.
async fn output_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("stdout-watch".into())
        .spawn(move || {
            use rustix::event::{PollFd, PollFlags, poll};
            let stdout = std::io::stdout();
            // No events asked for: poll reports only error, hang-up and invalid fd.
            let mut fds = [PollFd::new(&stdout, PollFlags::empty())];
            let gone = PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL;
            loop {
                match poll(&mut fds, None) {
                    Ok(n) if n > 0 && fds[0].revents().intersects(gone) => {
                        let _ = tx.send(());
                        return;
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => return,
                }
            }
        });
    if spawned.is_err() || rx.await.is_err() {
        std::future::pending::<()>().await;
    }
}
