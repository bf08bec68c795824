//! Positions in a document: byte offsets (what diagnostics and the parser
//! use) to and from LSP positions (line, UTF-16 code unit, the protocol's
//! default encoding). Owns nothing else.

use lsp_types::{Position, Range};

/// Byte offset -> LSP position in `text`.
pub fn position(text: &str, offset: usize) -> Position {
    let offset = crate::base::diag::floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count();
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let character: usize = text[start..offset].chars().map(char::len_utf16).sum();
    Position::new(line as u32, character as u32)
}

pub fn range(text: &str, start: usize, end: usize) -> Range {
    Range::new(position(text, start), position(text, end))
}

/// LSP position -> byte offset in `text`; past a line's end is its end,
/// past the last line is the end of the text.
pub fn offset(text: &str, pos: Position) -> usize {
    let mut line_start = 0;
    for _ in 0..pos.line {
        match text[line_start..].find('\n') {
            Some(i) => line_start += i + 1,
            None => return text.len(),
        }
    }
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let mut units = 0;
    for (i, c) in text[line_start..line_end].char_indices() {
        if units >= pos.character as usize {
            return line_start + i;
        }
        units += c.len_utf16();
    }
    line_end
}

/// Applies an LSP content change (a range and its new text, or the whole
/// document when there is no range).
pub fn apply_change(text: &mut String, change: lsp_types::TextDocumentContentChangeEvent) {
    match change.range {
        Some(r) => {
            let start = offset(text, r.start);
            let end = offset(text, r.end).max(start);
            text.replace_range(start..end, &change.text);
        }
        None => *text = change.text,
    }
}

/// The word (letters in any script, digits, `_`) around byte `at`, with
/// its byte range; the dotted path it is part of is the caller's business.
pub fn word_at(text: &str, at: usize) -> Option<(usize, usize)> {
    let at = crate::base::diag::floor_char_boundary(text, at.min(text.len()));
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let start = text[..at]
        .char_indices()
        .rev()
        .take_while(|&(_, c)| is_word(c))
        .last()
        .map_or(at, |(i, _)| i);
    let end = text[at..]
        .char_indices()
        .find(|&(_, c)| !is_word(c))
        .map_or(text.len(), |(i, _)| at + i);
    (start < end).then_some((start, end))
}

/// Where the end of a line's text is, for what a position can mean.
#[derive(Debug, PartialEq)]
pub enum Line {
    Code,
    Comment,
    /// Inside a string that opened at this byte of the line (the quote).
    String(usize),
}

/// Where the end of `line` is: in code, a comment or a string.
pub fn line_state(line: &str) -> Line {
    let mut open = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match (open, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(_), '"') if !escaped => open = None,
            (None, '"') => open = Some(i),
            (None, '#') => return Line::Comment,
            _ => {}
        }
        escaped = false;
    }
    open.map_or(Line::Code, Line::String)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_positions_round_trip() {
        let text = "rule \"会员\"\n  when 𝄞tier >= gold\n";
        let at = text.find("tier").unwrap_or(0);
        let p = position(text, at);
        // `  when ` is 7 units, the clef is 2 (a surrogate pair).
        assert_eq!(p, Position::new(1, 9));
        assert_eq!(offset(text, p), at);
        assert_eq!(offset(text, Position::new(9, 0)), text.len());
        assert_eq!(
            offset(text, Position::new(0, 99)),
            text.find('\n').unwrap_or(0)
        );
    }

    #[test]
    fn words_stop_at_dots_and_spaces() {
        let text = "when event.amount > 5";
        let at = text.find("amount").unwrap_or(0) + 2;
        let (s, e) = word_at(text, at).unwrap_or((0, 0));
        assert_eq!(&text[s..e], "amount");
        assert_eq!(word_at(text, 4), Some((0, 4)));
        assert_eq!(word_at("a  b", 2), None);
    }
}
