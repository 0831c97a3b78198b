//! URL rules shared by the config and the HTTP client: what counts as
//! loopback (the only place plain http may go), and escaping ids and tokens
//! into a URL.

use url::Url;

/// What a value keeps unescaped in a URL: RFC 3986 unreserved characters.
const URL_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-escapes an id or token for a URL path segment or query value.
pub(crate) fn url_escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, URL_KEEP).to_string()
}

/// An id escaped as one URL path segment. An id that is empty, `.` or `..`
/// is refused: it would address the path's parent or itself, and no
/// escaping helps, as URL parsers read `%2E` as a dot there too.
pub(crate) fn path_segment(id: &str) -> Result<String, String> {
    if matches!(id, "" | "." | "..") {
        return Err(format!(
            "the id {id:?} cannot be put in a URL path: it would address another resource"
        ));
    }
    Ok(url_escape(id))
}

/// Whether a URL points at this machine (127.0.0.0/8, ::1, localhost).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_escaped() {
        assert_eq!(url_escape("156314880048"), "156314880048");
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
        assert_eq!(url_escape("a+b/="), "a%2Bb%2F%3D");
    }

    #[test]
    fn dot_segments_are_refused_in_paths() {
        for bad in ["", ".", ".."] {
            assert!(path_segment(bad).is_err(), "{bad:?}");
        }
        for (id, want) in [
            ("...", "..."),
            (".a", ".a"),
            ("a/..", "a%2F.."),
            ("%2e", "%252e"),
        ] {
            let seg = path_segment(id).unwrap();
            assert_eq!(seg, want);
            // Parsed as a URL, the segment stays where it was put.
            let url = Url::parse(&format!("http://h/operations/v1/{seg}")).unwrap();
            assert_eq!(url.path(), format!("/operations/v1/{want}"));
        }
    }

    #[test]
    fn loopback_is_recognised() {
        for yes in [
            "http://127.0.0.1:1",
            "http://127.8.9.1",
            "http://[::1]:2",
            "http://LocalHost",
        ] {
            assert!(is_loopback(&Url::parse(yes).unwrap()), "{yes}");
        }
        for no in [
            "http://10.0.0.1",
            "https://export.fullstory.com",
            "http://localhost.example",
        ] {
            assert!(!is_loopback(&Url::parse(no).unwrap()), "{no}");
        }
    }
}
