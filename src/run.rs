//! One sync run: every selected stream, in [`STREAMS`] order, through the
//! [`Pipeline`] from the source that feeds it.

use std::io::Write;
use std::sync::Arc;

use crate::catalog::{Schema, Selections};
use crate::config::{Config, EventsSource};
use crate::error::Result;
use crate::http::Client;
use crate::pipeline::{Pipeline, Settings};
use crate::singer::SingerWriter;
use crate::source::data_export::DataExport;
use crate::source::rest::Rest;
use crate::source::segment_export::{ExportType, SegmentExport};
use crate::state::State;
use crate::stream::{STREAMS, SourceKind};

/// Syncs the selected streams, stopping at the first unrecoverable error.
/// Needs the multi-threaded runtime (see [`Pipeline::run`]).
pub(crate) async fn sync<W: Write>(
    config: Config,
    mut state: State,
    selections: Selections,
    out: &mut SingerWriter<W>,
) -> Result<()> {
    let client = Arc::new(Client::new(&config)?);
    let settings = Settings {
        spool_dir: config.spool_dir.clone().unwrap_or_else(std::env::temp_dir),
        progress_interval: config.progress_interval,
        batch: config.batch.clone().map(|b| (b, crate::batch::run_id())),
    };
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
        let schema = Schema::of(def);
        let selection = selection.clone();
        let settings = settings.clone();
        match (def.source, config.source) {
            (SourceKind::DataExport, EventsSource::DataExport) => {
                let source = DataExport::new(&config, Arc::clone(&client));
                Pipeline::new(source, def, schema, selection, settings, &mut state, out)
                    .run()
                    .await?;
            }
            (SourceKind::Rest(kind), _) => {
                Rest::new(&config, Arc::clone(&client))
                    .sync(def, kind, &schema, &selection, &settings, &mut state, out)
                    .await?;
            }
            (SourceKind::DataExport | SourceKind::SegmentExport, _) => {
                let kind = match def.source {
                    SourceKind::SegmentExport => ExportType::Individuals,
                    _ => ExportType::Events,
                };
                let source = SegmentExport::new(&config, Arc::clone(&client), kind);
                Pipeline::new(source, def, schema, selection, settings, &mut state, out)
                    .run()
                    .await?;
            }
        }
    }
    if none_selected {
        out.state(state.to_value())?;
    }
    Ok(())
}
