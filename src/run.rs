//! One sync run: every selected stream, in [`STREAMS`] order, through the
//! [`Pipeline`] from the source that feeds it. Which source that is gets
//! decided here, and only here.

use std::io::Write;
use std::sync::Arc;

use crate::catalog::{Schema, Selection, Selections};
use crate::config::{Config, EventsSource};
use crate::error::Result;
use crate::http::Client;
use crate::http::retry::Retry;
use crate::pipeline::{Options, Pipeline};
use crate::singer::SingerWriter;
use crate::source::Source;
use crate::source::data_export::DataExport;
use crate::source::rest::Rest;
use crate::source::segment_export::{ExportType, SegmentExport};
use crate::state::State;
use crate::stream::{Backend, STREAMS, StreamDef};

/// Syncs the selected streams, stopping at the first unrecoverable error.
/// Needs the multi-threaded runtime (see [`Pipeline::run`]).
pub(crate) async fn sync<W: Write>(
    config: Config,
    mut state: State,
    selections: Selections,
    out: &mut SingerWriter<W>,
) -> Result<()> {
    let client = Arc::new(Client::new(&config)?);
    let retry = Retry::from_config(&config);
    let options = Options::from_config(&config);
    let none_selected = STREAMS.iter().all(|def| selections.get(def.name).is_none());
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
                let spool_dir = config.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
                let source = Rest::new(client, retry, def, resource, spool_dir);
                stream.sync(source, &mut state, out).await?;
            }
        }
    }
    if none_selected {
        out.state(state.to_value())?;
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
