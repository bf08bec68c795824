//! `nudge lsp`: a language server for rule files over stdio. Owns the
//! protocol loop: it keeps the open documents, runs the project's load
//! (the same one `nudge check` runs, with the unsaved texts standing in
//! for the files) after every change, and publishes its diagnostics in
//! every file they are in. Requests (completion, hover, definition,
//! formatting, code actions) are answered from the last load and the
//! document's text; they never load anything themselves.
//!
//! Changes that arrive together are applied together and loaded once: a
//! fast typist does not queue one load per keystroke.

mod actions;
mod complete;
mod symbol;
mod text;
mod transport;
mod workspace;

use lsp_server::{Connection, Message, Notification, Request, RequestId, Response};
use lsp_types::notification::{
    DidChangeTextDocument, DidChangeWatchedFiles, DidCloseTextDocument, DidOpenTextDocument,
    DidSaveTextDocument, Notification as _, PublishDiagnostics,
};
use lsp_types::request::{
    CodeActionRequest, Completion, Formatting, GotoDefinition, HoverRequest, Request as _,
};
use lsp_types::{
    CodeActionProviderCapability, CompletionOptions, InitializeParams, OneOf,
    PublishDiagnosticsParams, ServerCapabilities, TextDocumentSyncCapability, TextDocumentSyncKind,
    Uri,
};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use workspace::{Doc, ProjectKey, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum LspError {
    #[error("the editor's connection closed")]
    Closed,
    #[error("a message could not be encoded: {0}")]
    Json(#[from] serde_json::Error),
}

/// Serves one editor on stdin and stdout until it says `exit`; `true`
/// when it said `shutdown` first.
pub fn serve_stdio() -> Result<bool, LspError> {
    let (connection, threads) = transport::stdio();
    let served = serve(&connection);
    drop(connection);
    for t in threads {
        let _ = t.join();
    }
    served
}

/// The server on any connection (stdio for editors, memory for the bench),
/// until `exit`: `true` when `shutdown` came before it, as it should.
pub fn serve(connection: &Connection) -> Result<bool, LspError> {
    let caps = ServerCapabilities {
        // Saves are asked for too: a save may follow a change made outside
        // the editor's buffer (a formatter on save), and settles the file.
        text_document_sync: Some(TextDocumentSyncCapability::Options(
            lsp_types::TextDocumentSyncOptions {
                open_close: Some(true),
                change: Some(TextDocumentSyncKind::INCREMENTAL),
                save: Some(lsp_types::TextDocumentSyncSaveOptions::Supported(true)),
                ..lsp_types::TextDocumentSyncOptions::default()
            },
        )),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(vec![".".into(), "\"".into()]),
            ..CompletionOptions::default()
        }),
        hover_provider: Some(lsp_types::HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        code_action_provider: Some(CodeActionProviderCapability::Simple(true)),
        ..ServerCapabilities::default()
    };
    let Some(params) = initialize(connection, caps)? else {
        return Ok(false);
    };
    let mut server = Server {
        ws: Workspace::new(root_of(&params)),
        dirty: BTreeSet::new(),
        shut_down: false,
    };
    loop {
        let msg = match connection.receiver.recv() {
            Ok(m) => m,
            Err(_) => return Err(LspError::Closed),
        };
        if server.handle(connection, msg)? {
            return Ok(server.shut_down);
        }
        // Take what else is waiting before loading: one load per burst.
        while let Ok(msg) = connection.receiver.try_recv() {
            if server.handle(connection, msg)? {
                return Ok(server.shut_down);
            }
        }
        publish(connection, &mut server.ws, &mut server.dirty)?;
    }
}

struct Server {
    ws: Workspace,
    /// Projects a change touched since their last load.
    dirty: BTreeSet<ProjectKey>,
    /// `shutdown` was asked: requests are refused until `exit`.
    shut_down: bool,
}

/// Waits for `initialize` (refusing other requests, as the protocol says)
/// and answers it with the capabilities; `None` if the editor exits first.
fn initialize(
    connection: &Connection,
    caps: ServerCapabilities,
) -> Result<Option<InitializeParams>, LspError> {
    loop {
        match connection.receiver.recv() {
            Ok(Message::Request(r)) if r.method == "initialize" => {
                let params = serde_json::from_value(r.params).unwrap_or_default();
                let result = serde_json::json!({
                    "capabilities": caps,
                    "serverInfo": {"name": "nudge", "version": env!("CARGO_PKG_VERSION")},
                });
                send(connection, Response::new_ok(r.id, result).into())?;
                return Ok(Some(params));
            }
            Ok(Message::Request(r)) => {
                let code = lsp_server::ErrorCode::ServerNotInitialized as i32;
                let why = "the server is not initialized yet".to_string();
                send(connection, Response::new_err(r.id, code, why).into())?;
            }
            Ok(Message::Notification(n)) if n.method == "exit" => return Ok(None),
            Ok(_) => {}
            Err(_) => return Err(LspError::Closed),
        }
    }
}

/// Loads each project a change touched and sends its diagnostics.
fn publish(
    connection: &Connection,
    ws: &mut Workspace,
    dirty: &mut BTreeSet<ProjectKey>,
) -> Result<(), LspError> {
    for key in std::mem::take(dirty) {
        for (uri, diagnostics) in ws.analyse(&key) {
            let params = PublishDiagnosticsParams::new(uri, diagnostics, None);
            let note = Notification::new(PublishDiagnostics::METHOD.into(), params);
            send(connection, note.into())?;
        }
    }
    Ok(())
}

impl Server {
    /// Handles one message; `true` once the editor says `exit`.
    fn handle(&mut self, connection: &Connection, msg: Message) -> Result<bool, LspError> {
        match msg {
            Message::Request(req) => {
                let resp = if self.shut_down {
                    refuse(req.id, "the server is shutting down")
                } else if req.method == "shutdown" {
                    self.shut_down = true;
                    Response::new_ok(req.id, ())
                } else if req.method == "initialize" {
                    refuse(req.id, "the server is already initialized")
                } else {
                    // Requests are answered from the latest texts: load first
                    // if a change is pending, so a completion sees the edit.
                    publish(connection, &mut self.ws, &mut self.dirty)?;
                    answer(&self.ws, req)
                };
                send(connection, resp.into())?;
            }
            Message::Notification(note) if note.method == "exit" => return Ok(true),
            Message::Notification(note) => notify(&mut self.ws, &mut self.dirty, note),
            Message::Response(_) => {}
        }
        Ok(false)
    }
}

fn refuse(id: RequestId, why: &str) -> Response {
    Response::new_err(id, lsp_server::ErrorCode::InvalidRequest as i32, why.into())
}

fn send(connection: &Connection, msg: Message) -> Result<(), LspError> {
    connection.sender.send(msg).map_err(|_| LspError::Closed)
}

fn notify(ws: &mut Workspace, dirty: &mut BTreeSet<ProjectKey>, note: Notification) {
    use lsp_types as t;
    let params = note.params;
    let touched: Option<PathBuf> = match note.method.as_str() {
        DidOpenTextDocument::METHOD => of::<t::DidOpenTextDocumentParams>(params).and_then(|p| {
            let path = path_of(&p.text_document.uri)?;
            let (uri, text) = (p.text_document.uri, p.text_document.text);
            ws.docs.insert(path.clone(), Doc { uri, text });
            Some(path)
        }),
        DidChangeTextDocument::METHOD => {
            of::<t::DidChangeTextDocumentParams>(params).and_then(|p| {
                let path = path_of(&p.text_document.uri)?;
                let doc = ws.docs.get_mut(&path)?;
                p.content_changes
                    .into_iter()
                    .for_each(|c| text::apply_change(&mut doc.text, c));
                Some(path)
            })
        }
        DidCloseTextDocument::METHOD => of::<t::DidCloseTextDocumentParams>(params).and_then(|p| {
            let path = path_of(&p.text_document.uri)?;
            ws.docs.remove(&path);
            Some(path)
        }),
        DidSaveTextDocument::METHOD => {
            of::<t::DidSaveTextDocumentParams>(params).and_then(|p| path_of(&p.text_document.uri))
        }
        DidChangeWatchedFiles::METHOD => {
            // A file changed on disk: every loaded project may read it.
            dirty.extend(ws.analyses.keys().cloned());
            None
        }
        _ => None,
    };
    if let Some(path) = touched {
        dirty.insert(ws.project_of(&path));
    }
}

/// A notification's parameters; one that does not parse is ignored, as
/// the protocol asks of notifications.
fn of<P: serde::de::DeserializeOwned>(params: serde_json::Value) -> Option<P> {
    serde_json::from_value(params).ok()
}

fn answer(ws: &Workspace, req: Request) -> Response {
    let id = req.id.clone();
    let result = match req.method.as_str() {
        Completion::METHOD => params(req).map(|p| to_json(complete::complete(ws, &p))),
        HoverRequest::METHOD => params(req).map(|p| to_json(symbol::hover(ws, &p))),
        GotoDefinition::METHOD => params(req).map(|p| to_json(symbol::definition(ws, &p))),
        Formatting::METHOD => params(req).map(|p| to_json(actions::format(ws, &p))),
        CodeActionRequest::METHOD => params(req).map(|p| to_json(actions::code_actions(ws, &p))),
        _ => {
            return Response::new_err(
                id,
                lsp_server::ErrorCode::MethodNotFound as i32,
                format!("nudge lsp does not answer `{}`", req.method),
            );
        }
    };
    match result {
        Ok(v) => Response::new_ok(id, v),
        Err(e) => bad_params(id, e),
    }
}

fn params<P: serde::de::DeserializeOwned>(req: Request) -> Result<P, serde_json::Error> {
    serde_json::from_value(req.params)
}

fn to_json<T: serde::Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn bad_params(id: RequestId, e: serde_json::Error) -> Response {
    Response::new_err(
        id,
        lsp_server::ErrorCode::InvalidParams as i32,
        format!("invalid parameters: {e}"),
    )
}

fn root_of(params: &InitializeParams) -> Option<PathBuf> {
    if let Some(folder) = params.workspace_folders.as_ref().and_then(|f| f.first()) {
        return path_of(&folder.uri);
    }
    // Older clients name the root only this way.
    #[allow(deprecated)]
    params.root_uri.as_ref().and_then(path_of)
}

/// The file a `file:` URI names, made absolute (resolved where it exists);
/// an unsaved buffer (`untitled:Untitled-1`) gets a path of its own under
/// [`workspace::UNTITLED`], as a `.rules` file.
pub fn path_of(uri: &Uri) -> Option<PathBuf> {
    let url = url::Url::parse(uri.as_str()).ok()?;
    if url.scheme() == "untitled" {
        let name: String = url
            .path()
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        return Some(Path::new(workspace::UNTITLED).join(format!("{name}.rules")));
    }
    let path = url.to_file_path().ok()?;
    Some(workspace::absolute(&path))
}

pub fn uri_of(path: &Path) -> Option<Uri> {
    let url = url::Url::from_file_path(path).ok()?;
    url.as_str().parse().ok()
}
