//! Micro-benchmarks of the two hot stages: the bundle reader (gunzip and split
//! the array; the same events as NDJSON for comparison) and record shaping
//! (event in, RECORD line out).
//!
//!     cargo bench --bench pipeline

use divan::Bencher;
use divan::counter::BytesCount;
use fullstory_demo::{gzip, synthetic_events};
use tap_fullstory::catalog::{Schema, Selection};
use tap_fullstory::read::{Format, read_events, read_events_as};
use tap_fullstory::record::Shaper;

const EVENTS: usize = 20_000;

fn main() {
    divan::main();
}

/// A shaper with every field selected, as a sync without a catalog uses.
fn shaper() -> Shaper {
    let schema = Schema::events();
    Shaper::new(&schema, &Selection::all(&schema))
}

fn sample() -> Vec<u8> {
    synthetic_events(42, 1_704_067_200, 1_704_153_600, EVENTS)
}

#[divan::bench]
fn read_plain(bencher: Bencher) {
    let json = sample();
    bencher
        .counter(BytesCount::new(json.len()))
        .bench(|| read_events(json.as_slice(), |_| Ok::<_, ()>(())).unwrap());
}

#[divan::bench]
fn read_gzip(bencher: Bencher) {
    let json = sample();
    let body = gzip(&json);
    bencher
        .counter(BytesCount::new(json.len()))
        .bench(|| read_events(body.as_slice(), |_| Ok::<_, ()>(())).unwrap());
}

/// The same events as NDJSON, one per line.
fn sample_ndjson() -> Vec<u8> {
    let json = sample();
    let mut lines = Vec::with_capacity(json.len());
    read_events(json.as_slice(), |e| {
        lines.extend_from_slice(e);
        lines.push(b'\n');
        Ok::<_, ()>(())
    })
    .unwrap();
    lines
}

#[divan::bench]
fn read_ndjson_plain(bencher: Bencher) {
    let lines = sample_ndjson();
    bencher
        .counter(BytesCount::new(lines.len()))
        .bench(|| read_events_as(lines.as_slice(), Format::Ndjson, |_| Ok::<_, ()>(())).unwrap());
}

#[divan::bench]
fn read_ndjson_gzip(bencher: Bencher) {
    let lines = sample_ndjson();
    let body = gzip(&lines);
    bencher
        .counter(BytesCount::new(lines.len()))
        .bench(|| read_events_as(body.as_slice(), Format::Ndjson, |_| Ok::<_, ()>(())).unwrap());
}

#[divan::bench]
fn shape(bencher: Bencher) {
    let json = sample();
    let mut events = Vec::new();
    read_events(json.as_slice(), |e| {
        events.push(e.to_vec());
        Ok::<_, ()>(())
    })
    .unwrap();
    let mut shaper = shaper();
    let mut out = Vec::with_capacity(json.len() * 2);
    bencher
        .counter(BytesCount::new(json.len()))
        .bench_local(|| {
            out.clear();
            shaper.start_unit(chrono::Utc::now());
            for e in &events {
                shaper.shape(e, &mut out).unwrap();
            }
            out.len()
        });
}

#[divan::bench]
fn read_gzip_and_shape(bencher: Bencher) {
    let json = sample();
    let body = gzip(&json);
    let mut shaper = shaper();
    let mut out = Vec::with_capacity(json.len() * 2);
    bencher
        .counter(BytesCount::new(json.len()))
        .bench_local(|| {
            out.clear();
            shaper.start_unit(chrono::Utc::now());
            read_events(body.as_slice(), |e| shaper.shape(e, &mut out)).unwrap();
            out.len()
        });
}
