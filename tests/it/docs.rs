//! Docs that run: every fenced block in README.md and docs/*.md is checked
//! by what its info string says it is.
//!
//! - `rules` / `yaml rules`: a rule file; `nudge check` passes with it in the
//!   repository's rules folder and on its own (`<!-- config: PATH -->` on
//!   the line above names another config).
//! - `yaml config`: top-level keys replacing the repository config's; the
//!   result passes `nudge check`.
//! - `rhai`: a plugin (`<!-- plugin: NAME -->` above names it); passes
//!   `nudge check`.
//! - `json`: one JSON value, or one a line.
//! - `console`: `$ COMMAND` lines run with `sh -c` in a scratch copy of the
//!   repository, `nudge` on the PATH; the lines after a command are what it
//!   prints (stdout, then stderr): `...` alone stands for any lines, `[..]`
//!   for any text within a line. A command without output lines must exit
//!   0. `nudge run &` starts the daemon on a free port, which replaces
//!   `localhost:8080` in the commands and output after it. `nats-server
//!   ... &` starts a NATS server in the background; `4222` anywhere in the
//!   block is replaced by a free port for it.
//! - `text` (not a command or rule) and `sh` (commands CI runs itself: the
//!   README's two top-level commands, and the editor extension's build in
//!   `scripts/test`) are not run. An untagged block fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct Block {
    line: usize,
    info: String,
    /// The line before the opening fence (for `<!-- config: ... -->`).
    before: String,
    body: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        let Some(info) = trimmed.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - trimmed.len();
        let mut body = Vec::new();
        let mut j = i + 1;
        while j < lines.len() && lines[j].trim() != "```" {
            let l = lines[j];
            body.push(
                l.get(indent..)
                    .filter(|_| l.len() >= indent)
                    .unwrap_or(l.trim_start())
                    .to_string(),
            );
            j += 1;
        }
        out.push(Block {
            line: i + 1,
            info: info.trim().to_string(),
            before: if i > 0 {
                lines[i - 1].trim().to_string()
            } else {
                String::new()
            },
            body,
        });
        i = j + 1;
    }
    out
}

/// A scratch copy of the repository (without build output and data).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{ROOT}' --exclude=./target --exclude=./data --exclude=./.git -cf - . | tar -xf - -C '{}'",
            dir.path().display()
        ))
        .status()
        .expect("tar");
    assert!(status.success());
    dir
}

fn path_with_nudge() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_nudge"))
        .parent()
        .expect("bin dir")
        .display()
        .to_string();
    format!("{bin}:{}", std::env::var("PATH").unwrap_or_default())
}

fn sh(dir: &Path, cmd: &str) -> (i32, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .env("PATH", path_with_nudge())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("`{cmd}` took more than 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + String::from_utf8_lossy(&out.stderr).as_ref();
    (out.status.code().unwrap_or(-1), text)
}

/// `got` matches `expected` line by line: `...` any lines, `[..]` any text.
fn matches(expected: &[String], got: &[&str]) -> bool {
    let Some((first, rest)) = expected.split_first() else {
        return got.is_empty();
    };
    if first == "..." {
        return (0..=got.len()).any(|k| matches(rest, &got[k..]));
    }
    got.split_first()
        .is_some_and(|(g, more)| line_matches(first, g) && matches(rest, more))
}

fn line_matches(expected: &str, got: &str) -> bool {
    let (expected, got) = (expected.trim_end(), got.trim_end());
    let parts: Vec<&str> = expected.split("[..]").collect();
    if parts.len() == 1 {
        return expected == got;
    }
    let Some(mut rest) = got.strip_prefix(parts[0]) else {
        return false;
    };
    for (i, p) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(p);
        }
        match rest.find(p) {
            Some(at) => rest = &rest[at + p.len()..],
            None => return false,
        }
    }
    true
}

fn trimmed_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    lines
}

fn marker<'a>(before: &'a str, name: &str) -> Option<&'a str> {
    before
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim()
        .strip_prefix(name)?
        .strip_prefix(':')
        .map(str::trim)
}

fn check_rules(b: &Block, file: &str) -> Result<(), String> {
    let dir = scratch();
    let d = dir.path();
    let text = b.body.join("\n") + "\n";
    std::fs::write(d.join("rules").join(file), text).expect("write");
    let config = marker(&b.before, "config").unwrap_or("nudge.yaml");
    let mut runs = vec![format!(
        "nudge check --color=never --config {config} --rules rules/{file}"
    )];
    if config == "nudge.yaml" {
        runs.push("nudge check --color=never".into());
    }
    for cmd in runs {
        let (code, out) = sh(d, &cmd);
        if code != 0 {
            return Err(format!("`{cmd}` exited {code}:\n{out}"));
        }
    }
    Ok(())
}

/// The repository's config with the fragment's top-level keys replaced.
fn merged_config(base: &str, fragment: &str) -> String {
    let top_key = |l: &str| -> Option<String> {
        let first = l.chars().next()?;
        (first.is_ascii_alphabetic()).then(|| l.split(':').next().unwrap_or("").to_string())
    };
    let replaced: Vec<String> = fragment.lines().filter_map(top_key).collect();
    let mut out = String::new();
    let mut skipping = false;
    for l in base.lines() {
        if let Some(k) = top_key(l) {
            skipping = replaced.contains(&k);
        }
        if !skipping {
            out.push_str(l);
            out.push('\n');
        }
    }
    out + fragment
}

struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `cmd` (without its `&`) and returns the address it listens on.
fn start_daemon(d: &Path, cmd: &str, daemons: &mut Daemons) -> Result<String, String> {
    let config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    let config: String = config
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("listen:") {
                "  listen: 127.0.0.1:0".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(d.join("nudge.yaml"), config + "\n").expect("config");
    let log = d.join("daemon.log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .current_dir(d)
        .env("PATH", path_with_nudge())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon");
    daemons.0.push(child);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = out
            .lines()
            .find_map(|l| l.strip_prefix("nudge listening on http://"))
        {
            return Ok(addr.trim().to_string());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("`{cmd}` did not start listening"))
}

/// Starts a NATS server in the background and waits for its port.
fn start_nats(d: &Path, cmd: &str, port: &str, daemons: &mut Daemons) -> Result<(), String> {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("PATH=$PATH:/usr/sbin exec {cmd}"))
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("`{cmd}`: {e}"))?;
    daemons.0.push(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!("`{cmd}` did not start listening"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn run_console(b: &Block) -> Result<(), String> {
    let dir = scratch();
    let d = dir.path();
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for l in &b.body {
        match l.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_string(), Vec::new())),
            None => match steps.last_mut() {
                Some((_, out)) => out.push(l.clone()),
                None => return Err(format!("output before the first command: {l:?}")),
            },
        }
    }
    let mut daemons = Daemons(Vec::new());
    let mut addr: Option<String> = None;
    let nats = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    for (cmd, mut expected) in steps {
        // NATS's port first: a daemon's port may contain `4222` (34222).
        let port = |s: &str| {
            let s = s.replace(":4222", &format!(":{nats}"));
            let s = s.replace("-p 4222", &format!("-p {nats}"));
            match &addr {
                Some(a) => s.replace("localhost:8080", a).replace("127.0.0.1:8080", a),
                None => s,
            }
        };
        let cmd = port(&cmd);
        for e in &mut expected {
            *e = port(e);
        }
        while expected.last().is_some_and(|e| e.trim().is_empty()) {
            expected.pop();
        }
        if let Some(server) = cmd.trim_end().strip_suffix('&')
            && server.starts_with("nats-server ")
        {
            start_nats(d, server, &nats, &mut daemons)?;
            continue;
        }
        if let Some(daemon) = cmd.trim_end().strip_suffix('&') {
            addr = Some(start_daemon(d, daemon.trim(), &mut daemons)?);
            continue;
        }
        let (code, out) = sh(d, &cmd);
        if expected.is_empty() {
            if code != 0 {
                return Err(format!("`{cmd}` exited {code}:\n{out}"));
            }
        } else if !matches(&expected, &trimmed_lines(&out)) {
            return Err(format!(
                "`{cmd}` (exit {code}) printed:\n{out}\n--- the doc says:\n{}",
                expected.join("\n")
            ));
        }
    }
    Ok(())
}

fn run_block(b: &Block) -> Result<(), String> {
    let text = b.body.join("\n");
    match b.info.as_str() {
        "text" | "sh" => Ok(()),
        "rules" => check_rules(b, "doc.rules"),
        "yaml rules" => check_rules(b, "doc.yaml"),
        "yaml config" => {
            let dir = scratch();
            let d = dir.path();
            let base = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
            std::fs::write(d.join("nudge.yaml"), merged_config(&base, &(text + "\n")))
                .expect("write");
            let (code, out) = sh(d, "nudge check --color=never");
            if code == 0 { Ok(()) } else { Err(out) }
        }
        "rhai" => {
            let dir = scratch();
            let d = dir.path();
            let name = marker(&b.before, "plugin").unwrap_or("doc");
            std::fs::write(d.join("plugins").join(format!("{name}.rhai")), text).expect("write");
            let (code, out) = sh(d, "nudge check --color=never");
            if code == 0 { Ok(()) } else { Err(out) }
        }
        "json" => {
            if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                return Ok(());
            }
            for l in text.lines().filter(|l| !l.trim().is_empty()) {
                serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("{l}: {e}"))?;
            }
            Ok(())
        }
        "console" => run_console(b),
        "" => Err("an untagged block: say what it is (rules, console, text, ...)".into()),
        other => Err(format!("unknown info string `{other}`")),
    }
}

fn check_doc(name: &str) {
    let path = PathBuf::from(ROOT).join(name);
    let text = std::fs::read_to_string(&path).expect("doc");
    let mut failures = Vec::new();
    let all = blocks(&text);
    for b in &all {
        if let Err(e) = run_block(b) {
            failures.push(format!("{name}:{} ({}): {e}", b.line, b.info));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn readme() {
    check_doc("README.md");
}

#[test]
fn every_doc_is_checked() {
    let mut docs: Vec<String> = std::fs::read_dir(PathBuf::from(ROOT).join("docs"))
        .expect("docs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .collect();
    docs.sort();
    let tested = [
        "architecture.md",
        "backtest.md",
        "cluster.md",
        "config.md",
        "editors.md",
        "engine.md",
        "language.md",
        "marketing.md",
        "operations.md",
        "plugins.md",
        "prediction.md",
        "reliability.md",
    ];
    assert_eq!(docs, tested, "a doc without a test below");
}

/// The layer table of docs/architecture.md lists the layers of
/// src/lib.rs, in its order.
#[test]
fn architecture() {
    check_doc("docs/architecture.md");
    let doc = std::fs::read_to_string(PathBuf::from(ROOT).join("docs/architecture.md"))
        .expect("architecture.md");
    let table: Vec<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .collect();
    let lib = std::fs::read_to_string(PathBuf::from(ROOT).join("src/lib.rs")).expect("lib.rs");
    let mut layers: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    layers.push("cli");
    assert_eq!(table, layers);
}

#[test]
fn cluster() {
    check_doc("docs/cluster.md");
}

#[test]
fn backtest() {
    check_doc("docs/backtest.md");
}

#[test]
fn config() {
    check_doc("docs/config.md");
}

#[test]
fn editors() {
    check_doc("docs/editors.md");
}

#[test]
fn engine() {
    check_doc("docs/engine.md");
}

#[test]
fn language() {
    check_doc("docs/language.md");
}

#[test]
fn marketing() {
    check_doc("docs/marketing.md");
}

#[test]
fn operations() {
    check_doc("docs/operations.md");
}

#[test]
fn plugins() {
    check_doc("docs/plugins.md");
}

#[test]
fn prediction() {
    check_doc("docs/prediction.md");
}

#[test]
fn reliability() {
    check_doc("docs/reliability.md");
}

#[test]
fn the_matcher_takes_wildcards_and_refuses_differences() {
    let exp = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(matches(&exp(&["a", "...", "z"]), &["a", "b", "c", "z"]));
    assert!(matches(&exp(&["took [..] s"]), &["took 0.25 s"]));
    assert!(!matches(&exp(&["took [..] s"]), &["took 0.25 ms"]));
    assert!(!matches(&exp(&["a", "b"]), &["a", "c"]));
    assert!(!matches(&exp(&["a"]), &["a", "b"]));
}
