//! The server's stdin and stdout: `Content-Length` frames of JSON-RPC.
//! Owns reading and writing frames; a frame that is not JSON, or JSON
//! that is not a request, response or notification, is answered with the
//! protocol's error (-32700, -32600) and skipped, where lsp-server's own
//! stdio transport would stop reading and so end the server. It does not
//! interpret any message.

use lsp_server::{Connection, Message};
use serde_json::{Value, json};
use std::io::{BufRead, Read, Write};
use std::thread::JoinHandle;

/// A frame larger than this is refused (and skipped): rule files are at
/// most 1 MiB, and an edit carries a file at most twice over in JSON.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Messages read ahead of the server; a burst of typing is far fewer.
const READ_AHEAD: usize = 256;

/// A connection on stdin and stdout, and the threads that serve it.
pub fn stdio() -> (Connection, Vec<JoinHandle<()>>) {
    // The reader reads ahead while the server loads, so that the changes
    // of a burst are all waiting when the load ends and are applied
    // together, loaded once. With no room (lsp-server's own choice) only
    // the one message the reader holds would be waiting: a load per change.
    let (to_server, from_editor) = crossbeam_channel::bounded::<Message>(READ_AHEAD);
    let (to_editor, from_server) = crossbeam_channel::bounded::<Message>(0);
    let reader = std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        while let Some(frame) = read_frame(&mut input) {
            let msg = match frame {
                Ok(m) => m,
                Err(reply) => {
                    write_frame(&reply.to_string());
                    continue;
                }
            };
            let exit = matches!(&msg, Message::Notification(n) if n.method == "exit");
            if to_server.send(msg).is_err() || exit {
                return;
            }
        }
    });
    let writer = std::thread::spawn(move || {
        for msg in from_server {
            let mut frame = Vec::new();
            if msg.write(&mut frame).is_ok() {
                write_bytes(&frame);
            }
        }
    });
    let connection = Connection {
        sender: to_editor,
        receiver: from_editor,
    };
    (connection, vec![reader, writer])
}

fn write_frame(body: &str) {
    write_bytes(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
}

/// One whole frame under stdout's lock, so the reader's error replies and
/// the server's messages never interleave.
fn write_bytes(frame: &[u8]) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // A closed stdout means the editor has gone; the reader ends the server.
    let _ = out.write_all(frame);
    let _ = out.flush();
}

/// The next frame: a message, or the error reply for a bad one; `None` at
/// the end of the input.
fn read_frame(input: &mut impl BufRead) -> Option<Result<Message, Value>> {
    let mut length = None;
    let mut saw_header = false;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = resync(line.trim_end_matches(['\r', '\n']));
        if line.is_empty() {
            if saw_header {
                break;
            }
            continue;
        }
        saw_header = true;
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let Some(length) = length else {
        return Some(Err(error(
            Value::Null,
            -32700,
            "a frame without a Content-Length header",
        )));
    };
    if length > MAX_FRAME {
        let mut skip = input.by_ref().take(length as u64);
        let _ = std::io::copy(&mut skip, &mut std::io::sink());
        return Some(Err(error(Value::Null, -32700, "a frame over 16 MiB")));
    }
    let mut body = vec![0; length];
    input.read_exact(&mut body).ok()?;
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Some(Err(error(Value::Null, -32700, &format!("not JSON: {e}")))),
    };
    // A present `"id": null` is refused too: read as a notification it
    // would get no answer at all.
    let id = value.get("id").cloned();
    if id
        .as_ref()
        .is_some_and(|id| !(id.is_string() || id.is_i64() || id.is_u64()))
    {
        return Some(Err(error(
            Value::Null,
            -32600,
            "an id is a string or an integer",
        )));
    }
    let id = id.unwrap_or(Value::Null);
    if value.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Some(Err(error(id, -32600, "not a JSON-RPC 2.0 message")));
    }
    match serde_json::from_value::<Message>(value) {
        Ok(m) => Some(Ok(m)),
        Err(e) => Some(Err(error(
            id,
            -32600,
            &format!("not a JSON-RPC message: {e}"),
        ))),
    }
}

/// A header line from its `Content-Length` on, when the bytes before it
/// are left over from a frame whose length was missing or wrong (a body
/// with no newline after it runs into the next frame's header): without
/// this the reader would never find a frame's start again.
fn resync(line: &str) -> &str {
    const HEADER: &str = "content-length:";
    match line.to_ascii_lowercase().find(HEADER) {
        Some(at) if at > 0 => &line[at..],
        _ => line,
    }
}

fn error(id: Value, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(text: &str) -> Vec<Result<Message, Value>> {
        let mut input = std::io::Cursor::new(text.as_bytes().to_vec());
        std::iter::from_fn(|| read_frame(&mut input)).collect()
    }

    fn frame(body: &str) -> String {
        format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    #[test]
    fn bad_frames_are_answered_and_skipped() {
        let text = [
            frame("{not json}"),
            frame("{}"),
            frame(r#"{"jsonrpc":"2.0","id":7,"method":5}"#),
            frame(r#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#),
            frame(r#"{"jsonrpc":"1.0","id":8,"method":"x"}"#),
            "X-Nothing: 1\r\n\r\n".to_string(),
            frame(r#"{"jsonrpc":"2.0","method":"initialized","params":{}}"#),
        ]
        .concat();
        let got = frames(&text);
        assert_eq!(got.len(), 7, "{got:?}");
        assert!(matches!(&got[0], Err(e) if e["error"]["code"] == -32700));
        assert!(matches!(&got[1], Err(e) if e["error"]["code"] == -32600));
        assert!(matches!(&got[2], Err(e) if e["error"]["code"] == -32600 && e["id"] == 7));
        assert!(matches!(&got[3], Err(e) if e["error"]["code"] == -32600 && e["id"].is_null()));
        assert!(matches!(&got[4], Err(e) if e["error"]["code"] == -32600 && e["id"] == 8));
        assert!(matches!(&got[5], Err(e) if e["error"]["code"] == -32700));
        assert!(matches!(&got[6], Ok(Message::Notification(n)) if n.method == "initialized"));
    }

    /// A frame whose length is missing, not a number or too short leaves
    /// bytes that run into the next frame's header; the reader finds the
    /// next frame's start there and goes on.
    #[test]
    fn the_frame_after_a_bad_length_is_read() {
        let ok = frame(r#"{"jsonrpc":"2.0","id":1,"method":"shutdown"}"#);
        let body = r#"{"jsonrpc":"2.0","id":59,"method":"textDocument/foo"}"#;
        for bad in [
            format!("Content-Type: x\r\n\r\n{body}"),
            format!("Content-Length: abc\r\n\r\n{body}"),
            format!("Content-Length: -5\r\n\r\n{body}"),
            format!("Content-Length: 10\r\n\r\n{body}"),
        ] {
            let got = frames(&format!("{bad}{ok}{ok}"));
            assert!(
                matches!(&got[0], Err(e) if e["error"]["code"] == -32700),
                "{bad}: {got:?}"
            );
            assert!(
                matches!(got.last(), Some(Ok(Message::Request(r))) if r.method == "shutdown"),
                "{bad}: {got:?}"
            );
            let shutdowns = got
                .iter()
                .filter(|m| matches!(m, Ok(Message::Request(_))))
                .count();
            assert_eq!(shutdowns, 2, "{bad}: {got:?}");
        }
    }

    #[test]
    fn a_null_id_is_answered() {
        let got = frames(&frame(r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#));
        assert!(matches!(&got[0], Err(e) if e["error"]["code"] == -32600 && e["id"].is_null()));
    }
}
