//! [`RemoteText`]: text a remote chose, made safe to put in a log line or a terminal.
//!
//! A peer decides the bytes of its user agent, its goodbye reason, the names in its
//! messages, and — through the error messages of the decoder — parts of our own error
//! texts. Written verbatim, a newline forges a log line, an escape sequence drives the
//! terminal, and a bidirectional override (U+202E) makes a line read differently from
//! what it holds. So such text is either refused where it is parsed (a `Version` or a
//! `Goodbye` holding these characters is a protocol violation) or shown through
//! [`RemoteText`], which escapes them and bounds the length. [`clean`] does the same
//! once, for text that is stored and sent on (error messages we build from what a
//! peer sent).
//!
//! ```
//! use switchyard_proto::text::RemoteText;
//!
//! let shown = RemoteText::new("evil\n\u{202E}txt.exe").to_string();
//! assert_eq!(shown, "evil\\n\\u{202e}txt.exe");
//! let long = "x".repeat(1000);
//! assert_eq!(RemoteText::with_max(&long, 4).to_string(), "xxxx…(+996 bytes)");
//! ```

use std::fmt;

/// Bytes of remote text shown by [`RemoteText::new`] and kept by [`clean`].
pub const MAX_REMOTE_TEXT: usize = 256;

/// Whether `c` may not reach a log line as it is: control characters (C0, DEL, C1),
/// line and paragraph separators (U+2028, U+2029), and the invisible formatting
/// characters — zero-width ones and bidirectional marks, embeddings, overrides and
/// isolates (U+200E/F, U+202A–U+202E, U+2066–U+2069), which can make a line read
/// differently from what it holds.
#[must_use]
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Displays remote text with every [unsafe](is_unsafe) character escaped (`\n`,
/// `\u{1b}`, `\u{202e}`), cut after a bounded number of bytes (escapes counted as
/// written, whole characters only) with `…(+N bytes)` saying how much is left out. Other characters, backslashes included, show as they are, so
/// displaying text that was [`clean`]ed already changes nothing.
#[derive(Debug, Clone, Copy)]
pub struct RemoteText<'a> {
    text: &'a str,
    max: usize,
}

impl<'a> RemoteText<'a> {
    /// `text`, shown up to [`MAX_REMOTE_TEXT`] bytes.
    #[must_use]
    pub fn new(text: &'a str) -> Self {
        Self::with_max(text, MAX_REMOTE_TEXT)
    }

    /// `text`, shown in at most `max` bytes (plus the note of what is left out).
    #[must_use]
    pub fn with_max(text: &'a str, max: usize) -> Self {
        RemoteText { text, max }
    }
}

impl fmt::Display for RemoteText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut written = 0;
        for (at, c) in self.text.char_indices() {
            let len = if !is_unsafe(c) {
                c.len_utf8()
            } else if c.is_ascii() {
                c.escape_debug().len()
            } else {
                c.escape_unicode().len()
            };
            if written + len > self.max {
                return write!(f, "…(+{} bytes)", self.text.len() - at);
            }
            written += len;
            if !is_unsafe(c) {
                write!(f, "{c}")?;
            } else if c.is_ascii() {
                // `\n`, `\t`, `\r`, `\0`, or `\u{1b}` and the like.
                write!(f, "{}", c.escape_debug())?;
            } else {
                write!(f, "{}", c.escape_unicode())?;
            }
        }
        Ok(())
    }
}

/// `text` as [`RemoteText::new`] shows it: escaped and bounded, ready to be kept in a
/// reason or an error and sent on in a `Goodbye`.
#[must_use]
pub fn clean(text: &str) -> String {
    if text.len() <= MAX_REMOTE_TEXT && !text.chars().any(is_unsafe) {
        return text.to_owned();
    }
    RemoteText::new(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_are_escaped() {
        for (raw, shown) in [
            ("a\nb", "a\\nb"),
            ("a\r\tb", "a\\r\\tb"),
            ("\x1b[31mred", "\\u{1b}[31mred"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("para\u{2029}sep", "para\\u{2029}sep"),
            ("rtl \u{202E}txt", "rtl \\u{202e}txt"),
            ("embed\u{202A}", "embed\\u{202a}"),
            ("isolate\u{2066}x\u{2069}", "isolate\\u{2066}x\\u{2069}"),
            ("c1\u{85}", "c1\\u{85}"),
            ("zero\u{200B}width", "zero\\u{200b}width"),
            ("plain ünïcödé ✓ \\ ok", "plain ünïcödé ✓ \\ ok"),
        ] {
            assert_eq!(RemoteText::new(raw).to_string(), shown, "{raw:?}");
            assert_eq!(clean(raw), shown);
            // Cleaning twice changes nothing.
            assert_eq!(clean(&clean(raw)), shown);
        }
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "y".repeat(10_000);
        let shown = RemoteText::new(&long).to_string();
        assert_eq!(shown, format!("{}…(+9744 bytes)", "y".repeat(256)));
        assert!(clean(&long).len() < MAX_REMOTE_TEXT + 32);
        // Two-byte characters: never cut in half.
        let wide = "é".repeat(200);
        let shown = RemoteText::with_max(&wide, 5).to_string();
        assert_eq!(shown, "éé…(+396 bytes)");
        // Escapes count as written: the output stays bounded.
        let lines = "\u{2028}".repeat(100);
        let shown = RemoteText::with_max(&lines, 20).to_string();
        assert_eq!(shown, "\\u{2028}\\u{2028}…(+294 bytes)");
        assert!(clean(&"\u{202E}".repeat(1000)).len() < MAX_REMOTE_TEXT + 32);
        assert_eq!(RemoteText::with_max("", 0).to_string(), "");
        assert_eq!(RemoteText::with_max("abc", 3).to_string(), "abc");
    }
}
