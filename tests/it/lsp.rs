//! `nudge lsp` driven as an editor drives it: the real binary over stdio,
//! JSON-RPC with Content-Length frames, on a project in a scratch folder.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const CONFIG: &str = "timezone: UTC
tiers: [bronze, silver, gold]
attributes:
  city: string
events:
  purchase:
    amount: money
    category: string?
  signup:
    channel: string?
  top_up:
    amount: money
coupons:
  welcome: { threshold: 50, discount: 10, valid: 30d, channel: sms }
channels:
  sms: { cap: 2 per 7d }
rewards:
  hotpot set meal: { points: 1500 }
";

const GOOD: &str = "rule \"winback\"\n  on tick\n  when days_since_last_purchase > cycle * 1.5 and tier >= silver\n  then send coupon welcome via sms\n";

const PLUGIN: &str = "/// A member is a VIP when they spent a lot.\nfn is_vip(member) {\n    member.spend > 5000\n}\n";

struct Editor {
    child: Child,
    stdin: ChildStdin,
    inbox: Receiver<Value>,
    /// Notifications read while waiting for something else.
    seen: Vec<Value>,
    next_id: i64,
}

impl Editor {
    fn spawn(root: &Path) -> Editor {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .arg("lsp")
            .current_dir(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("nudge lsp starts");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, inbox) = channel();
        std::thread::spawn(move || {
            loop {
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if out.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let line = line.trim();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(n) = line.strip_prefix("Content-Length: ") {
                        len = n.parse().expect("a length");
                    }
                }
                let mut body = vec![0; len];
                out.read_exact(&mut body).expect("a whole message");
                if tx
                    .send(serde_json::from_slice(&body).expect("JSON"))
                    .is_err()
                {
                    return;
                }
            }
        });
        Editor {
            child,
            stdin,
            inbox,
            seen: Vec::new(),
            next_id: 1,
        }
    }

    fn start(root: &Path) -> Editor {
        let mut ed = Editor::spawn(root);
        let root_uri = uri(root);
        let caps = ed.request(
            "initialize",
            json!({"processId": null, "capabilities": {}, "rootUri": root_uri,
                   "workspaceFolders": [{"uri": root_uri, "name": "p"}]}),
        );
        assert_eq!(caps["capabilities"]["hoverProvider"], json!(true), "{caps}");
        ed.notify("initialized", json!({}));
        ed
    }

    fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, msg: Value) {
        self.send_raw(&msg.to_string());
    }

    fn send_raw(&mut self, body: &str) {
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len()).expect("test setup");
        self.stdin.flush().expect("test setup");
    }

    fn notify(&mut self, method: &str, params: Value) {
        self.send(json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let msg = self.next();
            if msg["id"] == json!(id) {
                assert!(msg.get("error").is_none(), "{method}: {msg}");
                return msg["result"].clone();
            }
            self.seen.push(msg);
        }
    }

    fn next(&mut self) -> Value {
        self.inbox
            .recv_timeout(Duration::from_secs(30))
            .expect("the server answered within 30 s")
    }

    /// The next diagnostics published for `uri` (earlier ones are skipped).
    fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(i) = self.seen.iter().position(|m| is_diags_for(m, uri)) {
                let m = self.seen.remove(i);
                return m["params"]["diagnostics"]
                    .as_array()
                    .expect("test setup")
                    .clone();
            }
            assert!(Instant::now() < deadline, "no diagnostics for {uri}");
            let msg = self.next();
            self.seen.push(msg);
        }
    }

    fn open(&mut self, path: &Path, text: &str) -> String {
        let u = uri(path);
        let lang = if path.extension().is_some_and(|e| e == "rules") {
            "nudge"
        } else {
            "yaml"
        };
        self.notify(
            "textDocument/didOpen",
            json!({"textDocument": {"uri": u, "languageId": lang, "version": 1, "text": text}}),
        );
        u
    }

    fn change(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({"textDocument": {"uri": uri, "version": 2}, "contentChanges": [{"text": text}]}),
        );
    }

    fn at(&mut self, method: &str, uri: &str, line: u32, character: u32) -> Value {
        self.request(
            method,
            json!({"textDocument": {"uri": uri}, "position": {"line": line, "character": character}}),
        )
    }
}

impl Drop for Editor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_diags_for(m: &Value, uri: &str) -> bool {
    m["method"] == "textDocument/publishDiagnostics" && m["params"]["uri"] == uri
}

fn uri(p: &Path) -> String {
    format!("file://{}", p.display())
}

fn project() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("test setup");
    let root = dir.path().canonicalize().expect("test setup");
    std::fs::write(root.join("nudge.yaml"), CONFIG).expect("test setup");
    std::fs::create_dir_all(root.join("rules")).expect("test setup");
    std::fs::create_dir_all(root.join("plugins")).expect("test setup");
    std::fs::write(root.join("rules/winback.rules"), GOOD).expect("test setup");
    std::fs::write(root.join("plugins/crm.rhai"), PLUGIN).expect("test setup");
    (dir, root)
}

fn codes(diags: &[Value]) -> Vec<String> {
    diags
        .iter()
        .map(|d| d["code"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn a_mistake_is_underlined_where_check_puts_it_and_goes_when_fixed() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let file = root.join("rules/winback.rules");
    let broken = GOOD.replace("tier >= silver", "tiar >= silver");
    let u = ed.open(&file, &broken);
    let diags = ed.diagnostics(&u);
    assert_eq!(codes(&diags), ["E201"], "{diags:?}");
    // Line 3 (0-based 2), `tiar` starts after "  when days_since_last_purchase > cycle * 1.5 and ".
    let col = broken.lines().nth(2).unwrap().find("tiar").unwrap() as u64;
    assert_eq!(
        diags[0]["range"]["start"],
        json!({"line": 2, "character": col})
    );
    assert_eq!(
        diags[0]["range"]["end"],
        json!({"line": 2, "character": col + 4})
    );
    assert!(
        diags[0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `tier`"),
        "{diags:?}"
    );

    // The quick fix takes the hint.
    let fix = ed.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": u}, "range": diags[0]["range"], "context": {"diagnostics": diags}}),
    );
    let edit = &fix[0]["edit"]["changes"][&u][0];
    assert_eq!(edit["newText"], "tier", "{fix}");
    assert_eq!(edit["range"], diags[0]["range"]);

    ed.change(&u, GOOD);
    assert_eq!(ed.diagnostics(&u), Vec::<Value>::new());
    // A save checks again (the file on disk still has no mistake).
    ed.notify("textDocument/didSave", json!({"textDocument": {"uri": u}}));
    assert_eq!(ed.diagnostics(&u), Vec::<Value>::new());
}

#[test]
fn a_duplicate_rule_name_is_reported_in_both_files() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let other = root.join("rules/other.rules");
    let u = ed.open(&other, GOOD);
    let here = ed.diagnostics(&u);
    assert_eq!(codes(&here), ["E220"], "{here:?}");
    // The file on disk that it clashes with, open or not, gets its own.
    let there = ed.diagnostics(&uri(&root.join("rules/winback.rules")));
    assert_eq!(codes(&there), ["E220"], "{there:?}");
    // Each hint names the other file as `nudge check` would, from the
    // project, and each links to the other as related information.
    let hint = |d: &Value| d["message"].as_str().unwrap_or("").to_string();
    assert!(
        hint(&here[0]).contains("the other is at rules/winback.rules:1:6"),
        "{here:?}"
    );
    assert!(
        hint(&there[0]).contains("the first is at rules/other.rules:1:6"),
        "{there:?}"
    );
    let link = |d: &Value| d["relatedInformation"][0]["location"]["uri"].clone();
    assert_eq!(
        link(&here[0]),
        json!(uri(&root.join("rules/winback.rules")))
    );
    assert_eq!(link(&there[0]), json!(uri(&other)));
}

#[test]
fn a_file_outside_the_rules_folder_is_checked_against_the_project() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    std::fs::create_dir_all(root.join("drafts")).unwrap();
    let draft = root.join("drafts/new.rules");
    // Not saved yet: it exists only in the editor.
    let u = ed.open(
        &draft,
        "rule \"draft\"\n  when tier >= platinum\n  then send coupon welcome via sms\n",
    );
    let diags = ed.diagnostics(&u);
    assert_eq!(
        codes(&diags),
        ["E202"],
        "the project's tiers apply: {diags:?}"
    );
    ed.change(
        &u,
        "rule \"draft\"\n  when tier >= gold\n  then send coupon welcome via sms\n",
    );
    assert_eq!(ed.diagnostics(&u), Vec::<Value>::new());
}

#[test]
fn completion_offers_fields_event_fields_templates_and_plugin_functions() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let file = root.join("rules/new.rules");
    let text = "rule \"x\"\n  on purchase\n  when ti\n";
    let u = ed.open(&file, text);
    let labels = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["label"].as_str().unwrap().to_string())
            .collect()
    };
    let got = labels(&ed.at("textDocument/completion", &u, 2, 9));
    assert!(got.contains(&"tier".to_string()), "{got:?}");
    assert!(got.contains(&"city".to_string()), "attributes too: {got:?}");

    ed.change(&u, "rule \"x\"\n  on purchase\n  when event.\n");
    let got = labels(&ed.at("textDocument/completion", &u, 2, 13));
    assert_eq!(got, ["amount", "category"], "the fields of `purchase` only");

    ed.change(&u, "rule \"x\"\n  when crm.\n");
    let got = ed.at("textDocument/completion", &u, 1, 11);
    assert_eq!(labels(&got), ["is_vip"]);
    assert_eq!(got[0]["detail"], "fn is_vip(member)");

    ed.change(&u, "rule \"x\"\n  when true\n  then send coupon \n");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 2, 19)),
        ["welcome"]
    );
    ed.change(&u, "rule \"x\"\n  when tier >= \n");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 1, 15)),
        ["bronze", "silver", "gold"]
    );
}

#[test]
fn hover_says_what_a_name_is() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let file = root.join("rules/winback.rules");
    let u = ed.open(&file, GOOD);
    let line = GOOD.lines().nth(2).unwrap();
    let hover = |ed: &mut Editor, word: &str, nth_line: u32, line: &str| -> String {
        let col = line.find(word).unwrap() as u32 + 1;
        let h = ed.at("textDocument/hover", &u, nth_line, col);
        h["contents"]["value"].as_str().unwrap_or("").to_string()
    };
    let cycle = hover(&mut ed, "cycle", 2, line);
    assert!(cycle.starts_with("**cycle** · decimal"), "{cycle}");
    assert!(cycle.contains("mean gap in days"), "{cycle}");
    let silver = hover(&mut ed, "silver", 2, line);
    assert!(silver.contains("tier 2 of 3"), "{silver}");
    let then = GOOD.lines().nth(3).unwrap();
    let welcome = hover(&mut ed, "welcome", 3, then);
    assert!(
        welcome.contains("spend 50, save 10, valid 30 days, via sms"),
        "{welcome}"
    );
    let sms = hover(&mut ed, "sms", 3, then);
    assert!(sms.contains("at most 2 per 7 days"), "{sms}");

    let uses = "rule \"v\"\n  when crm.is_vip(member)\n  then tag \"vip\"\n";
    ed.change(&u, uses);
    let vip = hover(&mut ed, "is_vip", 1, uses.lines().nth(1).unwrap());
    assert!(vip.contains("fn crm.is_vip(member)"), "{vip}");
    assert!(vip.contains("spent a lot"), "the doc comment: {vip}");

    // In a comment or a string a tier's name is prose: no hover, and no
    // definition to go to.
    let prose =
        "# silver members\nrule \"silver cycle\"\n  when tier >= silver\n  then tag \"silver\"\n";
    ed.change(&u, prose);
    for (nth, line) in [
        (0, "# silver members"),
        (1, "rule \"silver cycle\""),
        (3, "  then tag \"silver\""),
    ] {
        let col = line.find("silver").unwrap() as u32 + 1;
        for method in ["textDocument/hover", "textDocument/definition"] {
            let h = ed.at(method, &u, nth, col);
            assert!(h.is_null(), "{method} at {line:?}: {h}");
        }
    }
    assert!(hover(&mut ed, "silver", 2, "  when tier >= silver").contains("tier 2 of 3"));
}

#[test]
fn definition_goes_to_the_config_and_the_plugin() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let file = root.join("rules/winback.rules");
    let text = "rule \"v\"\n  when crm.is_vip(member) and tier >= gold\n  then send coupon welcome via sms\n";
    let u = ed.open(&file, text);
    let config = uri(&root.join("nudge.yaml"));
    let welcome = ed.at("textDocument/definition", &u, 2, 20);
    assert_eq!(welcome["uri"], config);
    // `  welcome: {...}` is line 11 (0-based) of the config.
    let line = CONFIG
        .lines()
        .position(|l| l.starts_with("  welcome:"))
        .unwrap();
    assert_eq!(
        welcome["range"]["start"],
        json!({"line": line, "character": 2})
    );
    let gold = ed.at("textDocument/definition", &u, 1, 39);
    assert_eq!(
        gold["range"]["start"],
        json!({"line": 1, "character": 24}),
        "{gold}"
    );
    let vip = ed.at("textDocument/definition", &u, 1, 12);
    assert_eq!(vip["uri"], uri(&root.join("plugins/crm.rhai")));
    assert_eq!(vip["range"]["start"], json!({"line": 1, "character": 3}));
}

#[test]
fn formatting_gives_the_fmt_layout() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let file = root.join("rules/winback.rules");
    let messy = "rule \"winback\" on tick when days_since_last_purchase > cycle * 1.5 and tier >= silver then send coupon welcome via sms\n";
    let u = ed.open(&file, messy);
    let edits = ed.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": u}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(edits[0]["newText"], GOOD, "{edits}");
    ed.change(&u, GOOD);
    let none = ed.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": u}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(none, json!([]));
    // Windows line endings stay.
    let crlf = messy.replace('\n', "\r\n");
    ed.change(&u, &crlf);
    let edits = ed.request(
        "textDocument/formatting",
        json!({"textDocument": {"uri": u}, "options": {"tabSize": 2, "insertSpaces": true}}),
    );
    assert_eq!(edits[0]["newText"], GOOD.replace('\n', "\r\n"), "{edits}");
}

#[test]
fn shutdown_and_exit_end_the_server() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    assert_eq!(ed.request("shutdown", Value::Null), Value::Null);
    ed.notify("exit", Value::Null);
    assert_eq!(ed.exit_code(), Some(0));
}

#[test]
fn the_editors_doc_example_holds_on_the_example_project() {
    // docs/editors.md: a draft beside the repository's own project, unsaved.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut ed = Editor::start(&root);
    let draft = root.join("drafts/winback-draft.rules");
    let text = "rule \"winback draft\"\n  on tick\n  when days_since_last_purchase > cycle * 1.5 and tier >= silver\n  then send coupon winback via sms\n  limit once per 30d\n";
    let u = ed.open(&draft, text);
    assert_eq!(ed.diagnostics(&u), Vec::<Value>::new());
    let h = ed.at("textDocument/hover", &u, 2, 37);
    let h = h["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(h.starts_with("**cycle** · decimal (built-in field)"), "{h}");
    let h = ed.at("textDocument/hover", &u, 3, 21);
    let h = h["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(
        h.contains("spend 100, save 25, valid 21 days, via sms"),
        "{h}"
    );
    let def = ed.at("textDocument/definition", &u, 3, 21);
    assert_eq!(def["uri"], uri(&root.join("nudge.yaml")));

    ed.change(&u, &text.replace("tier >= silver", "tier >= silvr"));
    let diags = ed.diagnostics(&u);
    assert_eq!(codes(&diags), ["E202"], "{diags:?}");
    let fix = ed.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": u}, "range": diags[0]["range"], "context": {"diagnostics": diags}}),
    );
    assert_eq!(fix[0]["title"], "Change to `silver` (E202)", "{fix}");
    assert!(!draft.exists(), "the server writes nothing");
}

fn labels(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["label"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn changes_sent_together_are_loaded_together() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let u = ed.open(&root.join("rules/winback.rules"), GOOD);
    assert!(ed.diagnostics(&u).is_empty());
    // A hundred edits in one write, as a fast typist's editor sends them;
    // only the last has a mistake.
    let mut burst = String::new();
    for i in 0..100 {
        let text = if i == 99 {
            GOOD.replace("cycle", "cycel")
        } else {
            format!("# {i}\n{GOOD}")
        };
        let body = json!({"jsonrpc": "2.0", "method": "textDocument/didChange",
            "params": {"textDocument": {"uri": u, "version": i + 2}, "contentChanges": [{"text": text}]}})
        .to_string();
        burst.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    }
    write!(ed.stdin, "{burst}").expect("test setup");
    ed.stdin.flush().expect("test setup");
    let mut loads = 0;
    loop {
        let d = ed.diagnostics(&u);
        loads += 1;
        if !d.is_empty() {
            assert_eq!(codes(&d), ["E201"]);
            break;
        }
    }
    // One load per change was 100; a few bursts of what the reader had
    // read ahead is what "loaded together" means.
    assert!(loads < 50, "{loads} loads for one burst of 100 changes");
}

#[test]
fn malformed_messages_get_errors_and_the_server_goes_on() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    ed.send_raw("{not json}");
    ed.send_raw(r#"{"id": 9, "method": 5}"#);
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let m = ed.next();
        if m.get("error").is_some() {
            errors.push((m["id"].clone(), m["error"]["code"].clone()));
        }
    }
    assert_eq!(
        errors,
        [(Value::Null, json!(-32700)), (json!(9), json!(-32600))]
    );
    // Still serving.
    let u = ed.open(&root.join("rules/winback.rules"), GOOD);
    let h = ed.at("textDocument/hover", &u, 2, 37);
    assert!(
        h["contents"]["value"]
            .as_str()
            .unwrap_or("")
            .contains("cycle"),
        "{h}"
    );
    // After shutdown, requests are refused until exit.
    assert_eq!(ed.request("shutdown", Value::Null), Value::Null);
    ed.send(
        json!({"jsonrpc": "2.0", "id": 99, "method": "textDocument/hover",
        "params": {"textDocument": {"uri": u}, "position": {"line": 2, "character": 37}}}),
    );
    let refused = loop {
        let m = ed.next();
        if m["id"] == 99 {
            break m;
        }
    };
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    ed.notify("exit", Value::Null);
    let deadline = Instant::now() + Duration::from_secs(10);
    while ed.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn event_fields_follow_the_trigger_and_the_aggregate() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let u = ed.open(
        &root.join("rules/new.rules"),
        "rule \"x\"\n  on tick\n  when event.\n",
    );
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 2, 13)),
        Vec::<String>::new()
    );
    let text = "rule \"x\"\n  on tick\n  when count(purchase where event.";
    ed.change(&u, text);
    let got = labels(&ed.at("textDocument/completion", &u, 2, 34));
    assert_eq!(got, ["amount", "category"], "the counted event's fields");
    ed.change(&u, "rule \"x\"\n  on purchase, top_up\n  when event.\n");
    let got = labels(&ed.at("textDocument/completion", &u, 2, 13));
    assert_eq!(got, ["amount"], "only what both triggers have");
    ed.change(&u, "rule \"x\"\n  on purchase, \n");
    let got = labels(&ed.at("textDocument/completion", &u, 1, 15));
    assert!(
        got.contains(&"top_up".to_string()) && got.contains(&"tick".to_string()),
        "{got:?}"
    );
    ed.change(&u, "rule \"x\"\n  when tier in [silver, \n");
    let got = labels(&ed.at("textDocument/completion", &u, 1, 23));
    assert_eq!(got, ["bronze", "silver", "gold"]);
    ed.change(&u, "segment \"s\"\n  when event.\n");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 1, 13)),
        Vec::<String>::new()
    );
    ed.change(&u, "rule \"x\"\n  on purchase\n  when event.amount > 5\n");
    let h = ed.at("textDocument/hover", &u, 2, 15);
    assert_eq!(
        h["contents"]["value"],
        "**event.amount** · event field\n\nmoney in `purchase`"
    );
    ed.change(&u, "# when event.\n");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 0, 13)),
        Vec::<String>::new()
    );
}

#[test]
fn names_in_quotes_complete_and_fix_whole() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let text = "rule \"x\"\n  on purchase\n  then tag \"coffee lover\"\n\nrule \"y\"\n  on purchase\n  then tag \"coffee l\n";
    let u = ed.open(&root.join("rules/new.rules"), text);
    let got = ed.at("textDocument/completion", &u, 6, 18);
    assert_eq!(
        labels(&got),
        ["coffee lover"],
        "the half-typed tag is not offered: {got}"
    );
    // The whole name replaces what was typed since the quote.
    assert_eq!(
        got[0]["textEdit"]["range"]["start"],
        json!({"line": 6, "character": 12})
    );
    assert_eq!(got[0]["textEdit"]["newText"], "coffee lover");
    ed.change(&u, "rule \"x\"\n  on purchase\n  then redeem reward \"");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 2, 22)),
        ["hotpot set meal"]
    );
    ed.change(&u, "rule \"x\"\n  on purchase\n  when event.category == \"");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 2, 27)),
        Vec::<String>::new()
    );
    ed.change(&u, "rule \"x\"\n  when crm.is_vip(\"");
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 1, 19)),
        Vec::<String>::new()
    );
    // The cursor inside a name: the edit takes the whole of it.
    ed.change(
        &u,
        "rule \"x\"\n  then tag \"coffee lover\"\n\nrule \"y\"\n  then tag \"coffe lover\"\n",
    );
    let got = ed.at("textDocument/completion", &u, 4, 17);
    assert_eq!(
        got[0]["textEdit"]["range"]["end"],
        json!({"line": 4, "character": 23}),
        "{got}"
    );

    let wrong = "rule \"x\"\n  on purchase\n  then redeem reward \"hotpot set mea\"\n";
    // What the earlier texts gave came before the last answer: drop it.
    ed.seen.retain(|m| !is_diags_for(m, &u));
    ed.change(&u, wrong);
    let diags = ed.diagnostics(&u);
    assert_eq!(codes(&diags), ["E201"], "{diags:?}");
    let fix = ed.request(
        "textDocument/codeAction",
        json!({"textDocument": {"uri": u}, "range": diags[0]["range"], "context": {"diagnostics": diags}}),
    );
    let edit = &fix[0]["edit"]["changes"][&u][0];
    assert_eq!(edit["newText"], "hotpot set meal", "{fix}");
    assert_eq!(edit["range"]["start"], json!({"line": 2, "character": 22}));
    assert_eq!(edit["range"]["end"], json!({"line": 2, "character": 36}));
}

#[test]
fn an_unsaved_file_takes_its_place_in_the_rules_folder() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    // `a.rules` sorts before `winback.rules`: its rule is the first definition.
    let text = GOOD.replace("tier >= silver", "tier >= silvr");
    let u = ed.open(&root.join("rules/a.rules"), &text);
    let diags = ed.diagnostics(&u);
    assert_eq!(codes(&diags), ["E202", "E220"], "{diags:?}");
    let first = diags[1]["message"].as_str().unwrap_or("");
    assert!(first.contains("(first definition)"), "{diags:?}");
    assert!(
        first.contains("the other is at rules/winback.rules:1:6"),
        "{diags:?}"
    );
    let there = ed.diagnostics(&uri(&root.join("rules/winback.rules")));
    assert_eq!(codes(&there), ["E220"]);
    assert!(
        there[0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("second definition"),
        "{there:?}"
    );
}

#[test]
fn a_buffer_never_saved_is_checked_against_the_workspace() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let u = "untitled:Untitled-1".to_string();
    ed.notify(
        "textDocument/didOpen",
        json!({"textDocument": {"uri": u, "languageId": "nudge", "version": 1,
               "text": "when tier >= platinum then tag \"x\"\n"}}),
    );
    let diags = ed.diagnostics(&u);
    assert_eq!(codes(&diags), ["E202"], "the workspace's tiers: {diags:?}");
    let got = labels(&ed.at("textDocument/completion", &u, 0, 5));
    assert!(got.contains(&"tier".to_string()), "{got:?}");
}

#[test]
fn requests_before_initialize_are_refused_and_exit_without_shutdown_fails() {
    let (_dir, root) = project();
    let mut ed = Editor::spawn(&root);
    ed.send(json!({"jsonrpc": "2.0", "id": 1, "method": "textDocument/hover",
        "params": {"textDocument": {"uri": "file:///x.rules"}, "position": {"line": 0, "character": 0}}}));
    let m = ed.next();
    assert_eq!(m["error"]["code"], -32002, "{m}");
    ed.notify("exit", Value::Null);
    assert_eq!(ed.exit_code(), Some(1), "an exit without shutdown");
}

#[test]
fn segments_complete_and_lead_to_their_definition() {
    let (_dir, root) = project();
    let mut ed = Editor::start(&root);
    let seg = "# segments\n  segment \"lapsed vip\" when days_since_last_purchase > 90\n";
    std::fs::write(root.join("rules/segments.rules"), seg).expect("write");
    let text = "rule \"x\"\n  when in segment \"\n";
    let u = ed.open(&root.join("rules/new.rules"), text);
    assert_eq!(
        labels(&ed.at("textDocument/completion", &u, 1, 19)),
        ["lapsed vip"]
    );
    ed.change(
        &u,
        "rule \"x\"\n  when in segment \"lapsed vip\"\n  then tag \"v\"\n",
    );
    let def = ed.at("textDocument/definition", &u, 1, 22);
    assert_eq!(def["uri"], uri(&root.join("rules/segments.rules")));
    assert_eq!(
        def["range"]["start"],
        json!({"line": 1, "character": 11}),
        "{def}"
    );
    let h = ed.at("textDocument/hover", &u, 1, 22);
    let h = h["contents"]["value"].as_str().unwrap_or("").to_string();
    assert!(h.contains("days_since_last_purchase > 90"), "{h}");
}
