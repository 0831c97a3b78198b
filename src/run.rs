//! One sync run: every selected stream, in [`STREAMS`] order, through the
//! [`Pipeline`] from the source that feeds it. Which source that is gets
//! decided here, and only here.

use std::io::Write;
use std::sync::Arc;

use crate::catalog::{Schema, Selection, Selections};
use crate::config::{Config, EventsSource};
use crate::error::{Error, Result};
use crate::http::Client;
use crate::http::retry::Retry;
use crate::pipeline::{Options, Pipeline};
use crate::shutdown::Stop;
use crate::singer::SingerWriter;
use crate::source::Source;
use crate::source::data_export::DataExport;
use crate::source::rest::Rest;
use crate::source::segment_export::{ExportType, SegmentExport};
use crate::state::State;
use crate::stream::{Backend, STREAMS, StreamDef};

/// Syncs the selected streams, stopping at the first unrecoverable error,
/// except that a REST stream FullStory refuses (401, 403) is passed over
/// and the run goes on, to fail at the end naming every stream refused.
/// Needs the multi-threaded runtime (see [`Pipeline::run`]).
pub(crate) async fn sync<W: Write>(
    config: Config,
    mut state: State,
    selections: Selections,
    stop: Stop,
    out: &mut SingerWriter<W>,
) -> Result<()> {
    let client = Arc::new(Client::new(&config)?);
    let retry = Retry::from_config(&config);
    let options = Options::from_config(&config, stop);
    let none_selected = STREAMS.iter().all(|def| selections.get(def.name).is_none());
    // REST streams refused for the key's role, as "name (why)".
    let mut refused: Vec<String> = Vec::new();
    for def in STREAMS {
        let Some(selection) = selections.get(def.name) else {
            let then = if none_selected {
                "nothing to sync"
            } else {
                "skipping it"
            };
            // Streams that need opting into are skipped quietly.
            if def.selected_by_default {
                tracing::warn!(
                    "the catalog does not select the '{}' stream; {then}",
                    def.name
                );
            }
            continue;
        };
        let stream = Stream {
            def,
            selection: selection.clone(),
            options: options.clone(),
        };
        let client = Arc::clone(&client);
        match def.backend {
            Backend::Events => match config.source {
                EventsSource::DataExport => {
                    let source = DataExport::new(&config, client, retry);
                    stream.sync(source, &mut state, out).await?;
                }
                EventsSource::SegmentExport => {
                    let source = SegmentExport::new(&config, client, retry, ExportType::Events);
                    stream.sync(source, &mut state, out).await?;
                }
            },
            Backend::Individuals => {
                let source = SegmentExport::new(&config, client, retry, ExportType::Individuals);
                stream.sync(source, &mut state, out).await?;
            }
            Backend::Rest(resource) => {
                let spool_dir = options.spool_dir.clone();
                let source = Rest::new(client, retry, def, resource, spool_dir);
                // A stream the key may not read stops only itself.
                match stream.sync(source, &mut state, out).await {
                    Err(Error::Refused {
                        status: status @ (401 | 403),
                        message,
                    }) => {
                        tracing::error!("{message}; going on with the other streams");
                        let why = match status {
                            403 => format!("needs an API key with the {} role", resource.role),
                            _ => "the API key was not accepted".to_string(),
                        };
                        refused.push(format!("{} (HTTP {status}: {why})", def.name));
                    }
                    other => other?,
                }
            }
        }
    }
    if none_selected {
        out.state(state.to_value())?;
    }
    if !refused.is_empty() {
        return Err(Error::Refused {
            status: 403,
            message: format!(
                "{} of the selected streams could not be synced, as FullStory refused them: {}; the other streams synced, and the last STATE covers them; deselect these or use a key with the role each needs",
                refused.len(),
                refused.join(", ")
            ),
        });
    }
    Ok(())
}

/// One selected stream, before its source is chosen.
struct Stream {
    def: &'static StreamDef,
    selection: Selection,
    options: Options,
}

impl Stream {
    async fn sync<W: Write, S: Source>(
        self,
        source: S,
        state: &mut State,
        out: &mut SingerWriter<W>,
    ) -> Result<()> {
        let schema = Schema::of(self.def);
        Pipeline::new(source, schema, self.selection, self.options, state, out)
            .run()
            .await
            .map(drop)
    }
}
