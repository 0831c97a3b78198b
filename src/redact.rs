//! Keeping credentials out of everything the tap prints: the API key in all
//! its encodings, `Authorization`-style header values, URL userinfo and
//! signed-URL query strings, whatever text they arrive in.
//!
//! Server text (error bodies, unexpected pages, error chains, URLs) goes
//! through [`redact`] or [`url()`] where it is quoted; [`Stderr`] runs every
//! log line through [`redact`] again on its way out, as a last line of
//! defence for text nobody thought to redact.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{OnceLock, RwLock};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use regex_lite::Regex;

/// What a secret is replaced with.
pub(crate) const MARK: &str = "[redacted]";

/// Secrets shorter than this are not searched for as text: a one-letter key
/// would blank every such letter of every line. Header and URL patterns
/// still hide them where they are sent.
const MIN_SECRET: usize = 4;

/// How much of a body is searched before a snippet is cut from it.
const SNIPPET_WINDOW: usize = 64 * 1024;
/// How many characters of a body a message quotes.
const SNIPPET_CHARS: usize = 200;

/// One known secret as it may appear in text.
struct Form {
    text: String,
    /// A base64 form: the whole base64 run around it is a credential.
    base64: bool,
}

/// Every registered secret in every form, longest first.
static SECRETS: RwLock<Vec<Form>> = RwLock::new(Vec::new());

/// Query parameter names that carry credentials (pre-signed storage URLs,
/// tokens), as a regex alternation.
const SECRET_PARAMS: &str = r"[a-z0-9_.\-]*(?:signature|token|secret|passw(?:or)?d|credential|api[_\-]?key|apikey|session)[a-z0-9_.\-]*|sig|key|auth|code|policy|key-pair-id|x-amz-[a-z0-9\-]+|x-goog-[a-z0-9\-]+";

/// Header and field names whose value is a credential.
const SECRET_FIELDS: &str = r"(?:proxy-)?authorization|cookie|set-cookie|x-api-key|api[_\-]?key|apikey|[a-z0-9_\-]*(?:token|secret|passw(?:or)?d|signature|credential)[a-z0-9_\-]*";

/// Registers the API key: from now on it, its percent-encoded, JSON-escaped
/// and base64 forms are redacted from everything.
pub(crate) fn register_secret(secret: &str) {
    let mut forms: Vec<Form> = Vec::new();
    let mut add = |text: String, base64: bool| {
        if text.len() >= MIN_SECRET && !forms.iter().any(|f| f.text == text) {
            forms.push(Form { text, base64 });
        }
    };
    add(secret.to_string(), false);
    let percent = percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
        .to_string();
    add(lower_hex_escapes(&percent), false);
    add(percent, false);
    add(
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        false,
    );
    if let Ok(json) = serde_json::to_string(secret) {
        let json = json.trim_matches('"').to_string();
        add(json.replace('/', "\\/"), false);
        add(json, false);
    }
    // Inside a longer base64 text (say of "user:<key>"), the key's bytes can
    // start at any of three offsets; only whole 4-character groups are fixed
    // by the key alone, so those are searched for and the run around them
    // redacted.
    let bytes = secret.as_bytes();
    for skip in 0..3.min(bytes.len()) {
        let rest = &bytes[skip..];
        let whole = rest.len() / 3 * 3;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&rest[..whole]);
            if encoded.len() >= 8 {
                add(encoded, true);
            }
        }
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for form in forms {
        if !secrets.iter().any(|f| f.text == form.text) {
            secrets.push(form);
        }
    }
    secrets.sort_by_key(|f| std::cmp::Reverse(f.text.len()));
}

/// Registers what a signed link (a storage URL that carries its own
/// authorization) holds as secrets: the values of its query and its path,
/// where some storage services sign. Values shorter than a signature could
/// be (`X-Amz-Expires=3600`) stay printable.
pub(crate) fn register_signed_link(link: &str) {
    let Ok(parsed) = url::Url::parse(link) else {
        register_secret(link);
        return;
    };
    for (_, value) in parsed.query_pairs() {
        if value.len() >= 8 {
            register_secret(&value);
        }
    }
    for part in parsed.query().unwrap_or_default().split('&') {
        if let Some((_, raw)) = part.split_once('=')
            && raw.len() >= 8
        {
            register_secret(raw);
        }
    }
    let path = parsed.path();
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    for text in [path, &decoded] {
        if text.len() >= 8 {
            register_secret(text);
        }
    }
    for segment in parsed.path_segments().into_iter().flatten() {
        let decoded = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
        for text in [segment, &decoded] {
            if text.len() >= 16 {
                register_secret(text);
            }
        }
    }
}

fn lower_hex_escapes(percent: &str) -> String {
    let mut out = String::with_capacity(percent.len());
    let mut hex_left = 0;
    for c in percent.chars() {
        if hex_left > 0 {
            out.push(c.to_ascii_lowercase());
            hex_left -= 1;
        } else {
            if c == '%' {
                hex_left = 2;
            }
            out.push(c);
        }
    }
    out
}

/// The text with every known secret and every credential-looking value
/// (header values, URL userinfo, signed query parameters) replaced by
/// [`MARK`].
pub(crate) fn redact(text: &str) -> String {
    let mut out = Cow::Borrowed(text);
    {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for form in secrets.iter() {
            if out.contains(&form.text) {
                out = Cow::Owned(replace_secret(&out, form));
            }
        }
    }
    for (pattern, with) in patterns() {
        if let Cow::Owned(replaced) = pattern.replace_all(&out, *with) {
            out = Cow::Owned(replaced);
        }
    }
    out.into_owned()
}

fn replace_secret(text: &str, form: &Form) -> String {
    if !form.base64 {
        return text.replace(&form.text, MARK);
    }
    let is_b64 = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '-' | '_' | '=');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(&form.text) {
        let before = &rest[..at];
        let start = before.trim_end_matches(is_b64).len();
        out.push_str(&before[..start]);
        out.push_str(MARK);
        let after = &rest[at + form.text.len()..];
        rest = after.trim_start_matches(is_b64);
    }
    out.push_str(rest);
    out
}

/// The patterns and their replacements, compiled once.
fn patterns() -> &'static [(Regex, &'static str)] {
    static PATTERNS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let rules: [(String, &'static str); 5] = [
            // `"authorization": "Basic …"`, `token='…'`: a quoted value.
            (
                format!(r#"(?i)\b({SECRET_FIELDS})(["']?\s*[:=]\s*["'])[^"'\r\n]*"#),
                "${1}${2}[redacted]",
            ),
            // `Authorization: Basic …` as a header line: the rest of the line.
            (
                r#"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key)(\s*[:=]\s*)[^\s"'<>][^\r\n"'<>]*"#
                    .to_string(),
                "${1}${2}[redacted]",
            ),
            // `Basic …`, `Bearer …` anywhere (HTML tables, flattened text).
            (
                r"(?i)\b(basic|bearer)\s+[A-Za-z0-9._~+/=:%\-]{4,}".to_string(),
                "${1} [redacted]",
            ),
            // `scheme://user:password@host`.
            (
                r#"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@"'<>?#\[\]]+@"#.to_string(),
                "${1}[redacted]@",
            ),
            // `?X-Amz-Signature=…&sig=…`, also in bare request lines.
            (
                format!(r#"(?i)([?&;](?:{SECRET_PARAMS})=)[^&\s"'<>#]*"#),
                "${1}[redacted]",
            ),
        ];
        rules
            .into_iter()
            .map(|(pattern, with)| {
                // The patterns are constants; a test compiles every one.
                let re = Regex::new(&pattern).expect("redaction patterns are valid");
                (re, with)
            })
            .collect()
    })
}

/// Whether a query parameter of this name carries a credential.
fn secret_param(name: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(&format!("(?i)^(?:{SECRET_PARAMS})$")).expect("redaction patterns are valid")
    })
    .is_match(name)
}

/// A URL as it may be printed: no userinfo, no fragment, and for a URL
/// carrying a credential in its query (a pre-signed storage link) only
/// scheme, host and path.
pub(crate) fn url(text: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(text) else {
        return redact(text);
    };
    if parsed.has_authority() {
        let _ = parsed.set_username("");
        let _ = parsed.set_password(None);
    }
    parsed.set_fragment(None);
    if parsed.query_pairs().any(|(name, _)| secret_param(&name)) {
        parsed.set_query(None);
    }
    redact(parsed.as_str())
}

/// The scheme, host and port of a URL, for saying where a request went.
pub(crate) fn origin(parsed: &url::Url) -> String {
    let host = parsed.host_str().unwrap_or("(no host)");
    let shown = match parsed.port() {
        Some(port) => format!("{}://{host}:{port}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    redact(&shown)
}

/// The start of a response body, redacted and printable on one line.
pub(crate) fn snippet(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    let mut window = &body[..body.len().min(SNIPPET_WINDOW)];
    if window.len() < body.len() {
        // Never end the searched text inside a secret that the cut would
        // leave unrecognisable.
        let end = window
            .iter()
            .rposition(u8::is_ascii_whitespace)
            .unwrap_or(0);
        window = &window[..end];
    }
    let text = redact(&String::from_utf8_lossy(window));
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    let cut: String = flat.chars().take(SNIPPET_CHARS).collect();
    if cut.len() < flat.len() || window.len() < body.len() {
        format!("{}...", cut.trim_end())
    } else {
        cut
    }
}

/// A `tracing` writer for stderr that redacts each log line before writing
/// it. Each event is gathered whole, so a secret cannot straddle two writes.
pub(crate) struct Stderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::with_capacity(256))
    }
}

/// One log event on its way to stderr.
pub(crate) struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Line {
    /// The event redacted, and kept to one line: a line break or other
    /// control character inside it (a server's text, an id it named) is
    /// written escaped, so it can neither split the event nor pose as the
    /// start of another. Tabs and the escape that starts a colour stay.
    fn redacted(&self) -> String {
        let text = redact(&String::from_utf8_lossy(&self.0));
        let body = text.strip_suffix('\n').unwrap_or(&text);
        let mut line = String::with_capacity(text.len() + 1);
        for c in body.chars() {
            match c {
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                '\t' | '\u{1b}' => line.push(c),
                c if c.is_control() => line.push_str(&c.escape_unicode().to_string()),
                c => line.push(c),
            }
        }
        line.push('\n');
        line
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        // Nowhere to report a failing stderr.
        let _ = io::stderr().lock().write_all(self.redacted().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys are registered for the whole test process; each test uses its own.

    #[test]
    fn a_log_event_stays_one_line_whatever_it_quotes() {
        let event = "2026-01-01T00:00:00Z ERROR user 1/1 (id evil\n2099-01-01T00:00:00Z  INFO sync complete\r\u{7}\tx \u{1b}[31m)\n";
        let line = Line(event.as_bytes().to_vec()).redacted();
        assert_eq!(
            line,
            "2026-01-01T00:00:00Z ERROR user 1/1 (id evil\\n2099-01-01T00:00:00Z  INFO sync complete\\r\\u{7}\tx \u{1b}[31m)\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn a_signed_links_query_values_and_path_are_secrets() {
        let sig = "f00dfeedcafe1234beef5678aa";
        let token = "pathsig-9f8e7d6c5b4a39281706";
        register_signed_link(&format!(
            "https://storage.example/b/{token}/file.gz?X-Amz-Expires=3600&X-Amz-Signature={sig}&a=b"
        ));
        for echoed in [
            format!("<SignatureProvided>{sig}</SignatureProvided>"),
            format!("X-Amz-Signature: {sig}"),
            format!("Signature={sig} was wrong"),
            format!("bad path /b/{token}/file.gz"),
            format!("no key {token} here"),
        ] {
            let out = redact(&echoed);
            assert!(!out.contains(sig) && !out.contains(token), "{out}");
        }
        // Short values that are no credential stay readable.
        assert_eq!(redact("expires in 3600 s, a=b"), "expires in 3600 s, a=b");
    }

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(patterns().len(), 5);
        assert!(secret_param("X-Amz-Signature"));
        assert!(!secret_param("start"));
    }

    #[test]
    fn the_key_in_every_encoding_is_redacted() {
        let key = "na1.Kq/7+Zx=LmNoPq";
        register_secret(key);
        let b64 = STANDARD_NO_PAD.encode(format!("user:{key}"));
        let percent =
            percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        for text in [
            format!("raw {key} here"),
            format!("pct {percent} here"),
            "pct na1%2eKq%2f7%2bZx%3dLmNoPq here".to_string(),
            format!(r#"json "{}" here"#, key.replace('/', "\\/")),
            format!("b64 {b64} here"),
            format!("b64 {} here", STANDARD_NO_PAD.encode(key)),
            format!("b64 {} here", URL_SAFE_NO_PAD.encode(format!("xx{key}"))),
        ] {
            let out = redact(&text);
            assert!(out.contains(MARK), "{text} -> {out}");
            assert!(!out.contains("Kq/7") && !out.contains("Kq%2F7"), "{out}");
            assert!(out.ends_with(" here"), "{out}");
            for b in [&b64[4..16], &STANDARD_NO_PAD.encode(key)[..12]] {
                assert!(!out.contains(b), "{text} -> {out}");
            }
        }
    }

    #[test]
    fn credential_values_are_redacted_whatever_the_key() {
        let cases = [
            ("Authorization: Basic dGhlLWtleQ==\r\nHost: x", "dGhlLWtleQ"),
            (r#"{"Authorization":"Bearer abc.def"}"#, "abc.def"),
            ("<td>Basic zzzzzzzz</td>", "zzzzzzzz"),
            ("proxy-authorization = Basic cXFx", "cXFx"),
            ("https://u:hunter2@h.example/p", "hunter2"),
            (
                "GET /b?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA1 HTTP/1.1",
                "deadbeef",
            ),
            ("https://s.example/f?sv=1&sig=s3cr3t%3D", "s3cr3t"),
            (r#"{"access_token": "tok123"}"#, "tok123"),
            ("Cookie: session=abc123", "abc123"),
        ];
        for (text, secret) in cases {
            let out = redact(text);
            assert!(!out.contains(secret), "{text} -> {out}");
            assert!(out.contains(MARK), "{text} -> {out}");
        }
        // Ordinary text is left alone.
        let plain = "GET http://127.0.0.1:9/api/v1/export/list?start=5 answered HTTP 500";
        assert_eq!(redact(plain), plain);
    }

    #[test]
    fn urls_show_no_credentials_and_signed_ones_only_host_and_path() {
        assert_eq!(
            url("https://u:p@h.example:8443/a/b?start=1#frag"),
            "https://h.example:8443/a/b?start=1"
        );
        assert_eq!(
            url("https://bucket.s3.example/x/y.gz?X-Amz-Signature=abc&X-Amz-Expires=300"),
            "https://bucket.s3.example/x/y.gz"
        );
        assert_eq!(
            url("https://store.example/f?sig=abc"),
            "https://store.example/f"
        );
        let parsed = url::Url::parse("http://u:p@127.0.0.1:81/x?sig=1").unwrap();
        assert_eq!(origin(&parsed), "http://127.0.0.1:81");
        assert!(!url("not a url with Bearer abcdefg").contains("abcdefg"));
    }

    #[test]
    fn snippets_are_redacted_before_they_are_cut() {
        let key = "Snip-Key-0123456789abcdef";
        register_secret(key);
        // The key straddles the 200th character.
        let body = format!("{}{key}{}", "x".repeat(190), "y".repeat(100));
        let out = snippet(body.as_bytes());
        assert!(!out.contains("Snip-Key") && !out.contains("0123"), "{out}");
        assert!(out.ends_with("..."), "{out}");
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet(b"a\nb"), "a b");
        assert!(snippet(&[b'x'; 500]).ends_with("..."));
    }

    #[test]
    fn the_log_writer_redacts_whole_lines() {
        let key = "Line-Key-abcdefghij";
        register_secret(key);
        let mut line = Line(Vec::new());
        line.write_all(b"500: Line-Key-").unwrap();
        line.write_all(b"abcdefghij\n").unwrap();
        assert_eq!(line.redacted(), "500: [redacted]\n");
        line.0.clear();
    }
}
