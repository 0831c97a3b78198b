//! JSON text written by hand, member by member, so that ids keep every
//! digit and strings can be escaped each of the ways an export may escape
//! them; and the percent-encoding of `EventTargetSelectorTok`.

use std::fmt::Display;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// What `EventTargetSelectorTok` keeps unescaped: RFC 3986 unreserved
/// characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode everything but RFC 3986 unreserved characters, as in
/// `EventTargetSelectorTok`.
pub(crate) fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

/// Append `s` as a JSON string. Quotes, backslashes and control characters
/// are always escaped (short forms where JSON has them, `\u00XX` otherwise);
/// with `ascii` every non-ASCII char becomes `\uXXXX` (surrogate pairs past
/// the BMP), and with `slash` `/` becomes `\/`. All of these are valid JSON
/// that a client must decode to the same string.
pub(crate) fn escape_into(out: &mut String, s: &str, ascii: bool, slash: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '/' if slash => out.push_str("\\/"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if ascii && !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one JSON object's members in order.
pub(crate) struct Obj<'a> {
    out: &'a mut String,
    first: bool,
    ascii: bool,
    slash: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn open(out: &'a mut String, ascii: bool, slash: bool) -> Self {
        out.push('{');
        Obj {
            out,
            first: true,
            ascii,
            slash,
        }
    }

    pub(crate) fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        escape_into(self.out, k, false, false);
        self.out.push(':');
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape_into(self.out, v, self.ascii, self.slash);
    }

    pub(crate) fn opt_str(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    /// Integers and other numbers whose text we want verbatim.
    pub(crate) fn num(&mut self, k: &str, v: impl Display) {
        self.key(k);
        self.out.push_str(&v.to_string());
    }

    pub(crate) fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    pub(crate) fn null(&mut self, k: &str) {
        self.key(k);
        self.out.push_str("null");
    }

    /// A list of values whose JSON text is given.
    pub(crate) fn list(&mut self, k: &str, vs: &[String]) {
        self.key(k);
        self.out.push('[');
        self.out.push_str(&vs.join(","));
        self.out.push(']');
    }

    pub(crate) fn strs(&mut self, k: &str, vs: &[&str]) {
        self.key(k);
        self.out.push('[');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            escape_into(self.out, v, self.ascii, self.slash);
        }
        self.out.push(']');
    }

    pub(crate) fn close(self) {
        self.out.push('}');
    }
}
