//! Edits the server offers: formatting a `.rules` file in the `nudge fmt`
//! layout, and quick fixes that take a checker's "did you mean" hint.

use super::text;
use super::workspace::{Workspace, is_rules_text};
use crate::base::diag::SourceId;
use lsp_types::{
    CodeAction, CodeActionKind, CodeActionOrCommand, CodeActionParams, DocumentFormattingParams,
    NumberOrString, TextEdit, WorkspaceEdit,
};
use std::collections::HashMap;

/// The whole document replaced by its formatted text; nothing when it
/// does not parse (the diagnostics say why) or is already formatted.
pub fn format(ws: &Workspace, p: &DocumentFormattingParams) -> Option<Vec<TextEdit>> {
    let path = super::path_of(&p.text_document.uri)?;
    if !is_rules_text(&path) {
        return None;
    }
    let doc = ws.docs.get(&path)?;
    let stem = path
        .file_stem()
        .map_or("rules".into(), |s| s.to_string_lossy());
    let mut formatted = crate::lang::print::format_file(SourceId(0), &doc.text, &stem).ok()?;
    // The layout is written with `\n`; a file kept with `\r\n` keeps them.
    if doc.text.contains("\r\n") {
        formatted = formatted.replace('\n', "\r\n");
    }
    if formatted == doc.text {
        return Some(Vec::new());
    }
    Some(vec![TextEdit::new(
        text::range(&doc.text, 0, doc.text.len()),
        formatted,
    )])
}

/// A quick fix for each diagnostic in the range whose hint names the
/// replacement (`did you mean `tier`?`, "write `event.category`").
pub fn code_actions(ws: &Workspace, p: &CodeActionParams) -> Option<Vec<CodeActionOrCommand>> {
    let path = super::path_of(&p.text_document.uri)?;
    let doc = ws.docs.get(&path)?;
    let mut out = Vec::new();
    for d in &p.context.diagnostics {
        let hint = d
            .data
            .as_ref()
            .and_then(|v| v.get("hint"))
            .and_then(|h| h.as_str())
            .or_else(|| d.message.split_once("\nhint: ").map(|(_, h)| h));
        let Some(replacement) = hint.and_then(suggestion) else {
            continue;
        };
        let start = text::offset(&doc.text, d.range.start);
        let end = text::offset(&doc.text, d.range.end).max(start);
        let covered = &doc.text[start..end];
        let first_line = d.message.lines().next().unwrap_or("");
        // A name in quotes (a reward, a segment) is replaced inside them.
        let (s, e) = match quoted(covered) {
            Some(inside) => inside,
            None if replacement.contains(' ') => continue,
            None => wrong_name(covered, first_line).unwrap_or((0, covered.len())),
        };
        let (s, e) = (start + s, start + e);
        let edit = TextEdit::new(text::range(&doc.text, s, e), replacement.to_string());
        let code = match &d.code {
            Some(NumberOrString::String(c)) => format!(" ({c})"),
            _ => String::new(),
        };
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title: format!("Change to `{replacement}`{code}"),
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![d.clone()]),
            edit: Some(WorkspaceEdit {
                changes: Some(HashMap::from([(p.text_document.uri.clone(), vec![edit])])),
                ..WorkspaceEdit::default()
            }),
            is_preferred: Some(true),
            ..CodeAction::default()
        }));
    }
    Some(out)
}

/// The name a hint proposes: "did you mean `X`?" or "... write `X`".
fn suggestion(hint: &str) -> Option<&str> {
    let tail = hint
        .strip_prefix("did you mean `")
        .or_else(|| hint.split_once("write `").map(|(_, t)| t))?;
    let name = tail.split('`').next()?;
    (!name.is_empty()).then_some(name)
}

/// The inside of the last `"..."` in `covered`.
fn quoted(covered: &str) -> Option<(usize, usize)> {
    let close = covered.rfind('"')?;
    let open = covered[..close].rfind('"')?;
    Some((open + 1, close))
}

/// Where, inside the diagnostic's text, the name the message quotes is
/// (a diagnostic on `event.amont` replaces `amont`, not `event.`).
fn wrong_name(covered: &str, message: &str) -> Option<(usize, usize)> {
    let quoted = message.split('`').nth(1)?;
    let last = quoted.rsplit('.').next()?;
    if covered == quoted || covered == last {
        return Some((0, covered.len()));
    }
    let i = covered.rfind(last)?;
    Some((i, i + last.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_their_replacement() {
        assert_eq!(suggestion("did you mean `tier`?"), Some("tier"));
        assert_eq!(
            suggestion("`category` is a field of the event: write `event.category`"),
            Some("event.category")
        );
        assert_eq!(
            suggestion("fields are the built-ins (see docs/language.md)"),
            None
        );
        assert_eq!(
            wrong_name("event.amont", "unknown event field `amont`"),
            Some((6, 11))
        );
        assert_eq!(wrong_name("tiar", "unknown field `tiar`"), Some((0, 4)));
    }
}
