//! [`ConfError`] and the byte-offset → line:col arithmetic behind it.

use std::ops::Range;

use crate::raw;

/// A configuration error at a position: Display is `file:line:col: msg`, or `file: msg` when
/// it has no position (the file could not be read).
///
/// `line` and `col` are 1-based; `col` counts characters, as editors do. Both are 0 when the
/// error has no position in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    /// The file name as given to [`crate::load_file`] or [`crate::parse_str`].
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column in characters, 0 when unknown.
    pub col: usize,
    /// What is wrong and what would be right, on one line.
    pub msg: String,
}

impl std::fmt::Display for ConfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `file:0:0:` would send an editor to a line that does not exist.
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.msg)
        } else {
            write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.msg)
        }
    }
}

impl std::error::Error for ConfError {}

/// Turns byte offsets in one text into positioned [`ConfError`]s.
pub(crate) struct Locator<'a> {
    file: &'a str,
    text: &'a str,
    /// Byte offsets of every '\n', so that `line_of` is a binary search, not a scan: a file
    /// with thousands of routes asks for a line per route.
    newlines: Vec<usize>,
}

impl<'a> Locator<'a> {
    /// A locator for `text`, labelling errors with `file`.
    pub(crate) fn new(file: &'a str, text: &'a str) -> Self {
        let newlines = text.match_indices('\n').map(|(i, _)| i).collect();
        Locator {
            file,
            text,
            newlines,
        }
    }

    /// An error at the start of `span`.
    pub(crate) fn err(&self, span: &Range<usize>, msg: impl Into<String>) -> ConfError {
        let (line, col) = line_col(self.text, span.start);
        ConfError {
            file: self.file.to_string(),
            line,
            col,
            msg: msg.into(),
        }
    }

    /// Where the table header `header` (e.g. `[ha]`) is first written, for errors about a
    /// section as a whole whose keys carry no position (0..0 when not written).
    pub(crate) fn header_span(&self, header: &str) -> Range<usize> {
        let mut at = 0;
        for line in self.text.split_inclusive('\n') {
            let trimmed = line.trim_start();
            if trimmed.starts_with(header) {
                let start = at + (line.len() - trimmed.len());
                return start..start + header.len();
            }
            at += line.len();
        }
        0..0
    }

    /// The 1-based line of byte offset `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&n| n < offset) + 1
    }

    /// A syntax or type error from the toml deserializer of router.conf, at its span, on one
    /// line.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> ConfError {
        self.toml_error_with(e, raw::explain)
    }

    /// A syntax or type error from the toml deserializer, at its span, on one line; `explain`
    /// rewords serde's unknown/missing-key messages for the file's sections.
    pub(crate) fn toml_error_with(
        &self,
        e: &toml::de::Error,
        explain: fn(&str) -> Option<String>,
    ) -> ConfError {
        let mut msg = one_line(e.message());
        if msg.is_empty() {
            // toml leaves some syntax errors unexplained ("0=" at end of input, for one).
            msg = "invalid TOML syntax".to_string();
        }
        // Unknown and missing keys get section-aware wording; everything else keeps toml's.
        let msg = explain(&msg).unwrap_or(msg);
        match e.span() {
            Some(span) => self.err(&span, msg),
            None => ConfError {
                file: self.file.to_string(),
                line: 0,
                col: 0,
                msg,
            },
        }
    }
}

/// 1-based (line, column) of byte `offset` in `text`; the column counts characters.
///
/// Offsets past the end clamp to the end, and an offset inside a multi-byte character counts
/// from that character's start, so any offset gives a position.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let col = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, col)
}

/// Joins a multi-line message into one line ("a\nb" → "a: b"), trimming each part.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "ab\ncd\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 1), (1, 2));
        assert_eq!(line_col(t, 2), (1, 3));
        assert_eq!(line_col(t, 3), (2, 1));
        assert_eq!(line_col(t, 6), (3, 1));
    }

    #[test]
    fn line_col_counts_characters_and_clamps() {
        // "é" is two bytes; the column after it is 2, and an offset inside it maps to its start.
        let t = "é=1";
        assert_eq!(line_col(t, 2), (1, 2));
        assert_eq!(line_col(t, 1), (1, 1));
        assert_eq!(line_col(t, 999), (1, 4));
        assert_eq!(line_col("", 5), (1, 1));
    }

    #[test]
    fn line_of_agrees_with_line_col() {
        let t = "a\nbé\n\ncd";
        let at = Locator::new("f", t);
        for offset in 0..t.len() + 3 {
            assert_eq!(at.line_of(offset), line_col(t, offset).0, "offset {offset}");
        }
    }

    #[test]
    fn crlf_lines() {
        assert_eq!(line_col("a\r\nb", 3), (2, 1));
    }

    #[test]
    fn multi_line_messages_become_one() {
        assert_eq!(
            one_line("invalid table header\nduplicate key `router`\n"),
            "invalid table header: duplicate key `router`"
        );
    }

    #[test]
    fn display_format() {
        let e = ConfError {
            file: "r.conf".into(),
            line: 3,
            col: 7,
            msg: "bad".into(),
        };
        assert_eq!(e.to_string(), "r.conf:3:7: bad");
    }
}
