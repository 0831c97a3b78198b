//! A list held whole before any of it is written, so that an item listed
//! more than once is written once.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::spool::{CHUNK, create_spool};

/// A list read whole into a spool file before any item is written, so that
/// an item listed more than once (pages that shift while they are read) is
/// written once, as last listed. Memory holds a hash and a length per item.
pub(super) struct Held {
    pub(super) key: &'static str,
    file: BufWriter<File>,
    /// Per item, in order: the hash of its key (none: it has none) and its
    /// length in the file.
    items: Vec<(Option<u128>, u32)>,
    /// The last item of each key.
    last: HashMap<u128, usize>,
}

impl Held {
    pub(super) fn new(key: &'static str, dir: &Path) -> Result<Held> {
        let file = create_spool(dir).map_err(|e| {
            Error::spool(
                format!("cannot create a spool file in '{}'", dir.display()),
                "; set spool_dir to a writable directory with free space",
                e,
            )
        })?;
        Ok(Held {
            key,
            file: BufWriter::new(file),
            items: Vec::new(),
            last: HashMap::new(),
        })
    }

    pub(super) fn hold(&mut self, item: &[u8], key: Option<u128>) -> std::io::Result<()> {
        // Bodies are capped far below 4 GiB, and an item is part of one.
        let len = u32::try_from(item.len()).map_err(std::io::Error::other)?;
        self.file.write_all(item)?;
        if let Some(key) = key {
            self.last.insert(key, self.items.len());
        }
        self.items.push((key, len));
        Ok(())
    }

    /// The held items, to be written out.
    pub(super) fn replay(self) -> std::io::Result<Replay> {
        let mut file = self.file.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        let dropped = self
            .items
            .iter()
            .enumerate()
            .filter(|(i, (key, _))| key.is_some_and(|k| self.last[&k] != *i))
            .count();
        Ok(Replay {
            key: self.key,
            reader: BufReader::new(file),
            items: self.items,
            last: self.last,
            next: 0,
            dropped,
        })
    }
}

/// A held list being written out, each key's last listing only.
pub(super) struct Replay {
    pub(super) key: &'static str,
    reader: BufReader<File>,
    items: Vec<(Option<u128>, u32)>,
    last: HashMap<u128, usize>,
    next: usize,
    /// Items left out as listed again later.
    pub(super) dropped: usize,
}

impl Replay {
    /// Writes the next items, about a spool chunk of them, to `out`,
    /// counting them in `written`; false once every item is out.
    pub(super) fn next_chunk(
        &mut self,
        out: &mut Vec<u8>,
        written: &mut usize,
    ) -> std::io::Result<bool> {
        let mut item = Vec::new();
        while self.next < self.items.len() && out.len() < CHUNK {
            let (key, len) = self.items[self.next];
            item.resize(len as usize, 0);
            self.reader.read_exact(&mut item)?;
            let keep = key.is_none_or(|k| self.last[&k] == self.next);
            self.next += 1;
            if keep {
                if *written > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&item);
                *written += 1;
            }
        }
        Ok(self.next < self.items.len())
    }
}
