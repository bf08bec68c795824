//! Tidy: the house rules for `src/`, read from the source itself.
//!
//! - Layers: `src/lib.rs` lists the library's modules from the bottom
//!   layer up; a module may import only from its own layer or the layers
//!   below it. The binary (`src/main.rs`, `src/cli/`) is the top layer.
//! - Inside a layer, the modules import each other without a cycle.
//! - No source file over 800 lines; no function over 100 lines without a
//!   comment above it that starts `Long because`, saying why.
//! - Every `#[allow(...)]` says why (a comment on its line or the line
//!   above, or `reason = "..."`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 100;

/// The layers, bottom first, as `src/lib.rs` declares them; `cli` on top.
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(SRC).join("lib.rs")).expect("lib.rs");
    let mut out: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.split(';').next().unwrap_or("").trim().to_string())
        .collect();
    out.push("cli".into());
    out
}

fn sources() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("read src") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new(SRC), &mut out);
    out.sort();
    out
}

/// The layer and module (second path segment) a file belongs to:
/// `src/engine/fire.rs` is (`engine`, `fire`); `src/main.rs` is `cli`.
fn place(path: &Path) -> (String, String) {
    let rel = path.strip_prefix(SRC).expect("under src");
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.as_slice() {
        [f] if f == "main" => ("cli".into(), "main".into()),
        [f] => (f.clone(), String::new()),
        [layer, m, ..] => (layer.clone(), m.clone()),
        [] => (String::new(), String::new()),
    }
}

/// The code of a file without comments and without `#[cfg(test)]` modules
/// (tests may reach anywhere).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names that follow `prefix` in `code` (`crate::` -> `engine`, ...);
/// a group (`super::{a, b::c}`) gives each of its first segments.
fn after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let ident = |s: &'a str| {
        let s = s.trim_start();
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    };
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                out.extend(group.split(',').map(ident).filter(|s| !s.is_empty()));
            }
            None => out.push(ident(rest)),
        }
    }
    out
}

#[test]
fn layers_import_only_downwards_and_modules_form_no_cycle() {
    let layers = layers();
    assert!(layers.len() > 5, "lib.rs lists its layers: {layers:?}");
    let rank: BTreeMap<&str, usize> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let mut wrong = Vec::new();
    // Per layer: module -> modules of the same layer it uses.
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in sources() {
        let (layer, module) = place(&path);
        if layer == "lib" {
            continue;
        }
        let Some(&me) = rank.get(layer.as_str()) else {
            wrong.push(format!(
                "{}: `{layer}` is not a layer listed in src/lib.rs",
                path.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("read");
        let code = code(&text);
        // In the binary, the library is `nudge::` and `crate::` is the binary.
        let lib_prefix = if layer == "cli" { "nudge::" } else { "crate::" };
        let mut uses: Vec<(String, Option<String>)> = Vec::new();
        for seg in after(&code, lib_prefix) {
            uses.push((seg.to_string(), None));
        }
        for (i, _) in code.match_indices(&format!("{lib_prefix}{layer}::")) {
            let rest = &code[i + lib_prefix.len() + layer.len() + 2..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            uses.push((layer.clone(), Some(rest[..end].to_string())));
        }
        // `super::x` from a file directly in the layer's folder is a sibling.
        let depth = path.strip_prefix(SRC).map_or(0, |r| r.iter().count());
        if depth == 2 && !path.ends_with("mod.rs") {
            for seg in after(&code, "super::") {
                uses.push((layer.clone(), Some(seg.to_string())));
            }
        }
        for (target, sub) in uses {
            match rank.get(target.as_str()) {
                Some(&t) if t > me => wrong.push(format!(
                    "{}: `{layer}` imports `{target}`, a layer above it",
                    path.display()
                )),
                Some(_) if target == layer => {
                    if let Some(sub) = sub.filter(|s| *s != module && !s.is_empty()) {
                        graph
                            .entry(layer.clone())
                            .or_default()
                            .entry(module.clone())
                            .or_default()
                            .insert(sub);
                    }
                }
                _ => {}
            }
        }
    }
    for (layer, edges) in &graph {
        if let Some(cycle) = find_cycle(edges) {
            wrong.push(format!("in `{layer}`: {}", cycle.join(" -> ")));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A cycle in a module graph, as the path that closes it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut c = stack[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if !done.insert(n.to_string()) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_checker_finds_a_cycle_and_an_upward_import() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges
        .entry("check".into())
        .or_default()
        .insert("compile".into());
    assert_eq!(find_cycle(&edges), None);
    edges
        .entry("compile".into())
        .or_default()
        .insert("check".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["check".into(), "compile".into(), "check".into()])
    );
    assert_eq!(
        after("use crate::engine::Engine; x_crate::no", "crate::"),
        ["engine"]
    );
    assert_eq!(
        after("use super::{act, fire::Ctx};", "super::"),
        ["act", "fire"]
    );
    assert_eq!(
        code("a // crate::daemon\n#[cfg(test)]\nmod t { crate::cli }"),
        "a "
    );
}

#[test]
fn files_and_functions_stay_short_and_allows_say_why() {
    let mut wrong = Vec::new();
    for path in sources() {
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > MAX_FILE_LINES {
            wrong.push(format!(
                "{}: {} lines (at most {MAX_FILE_LINES}): split it by concern",
                path.display(),
                lines.len()
            ));
        }
        for (i, l) in lines.iter().enumerate() {
            let t = l.trim_start();
            if t.starts_with("#[allow(") || t.starts_with("#![allow(") {
                let said = l.contains("//")
                    || l.contains("reason =")
                    || i.checked_sub(1)
                        .is_some_and(|p| lines[p].trim_start().starts_with("//"));
                if !said {
                    wrong.push(format!(
                        "{}:{}: an allow without a reason",
                        path.display(),
                        i + 1
                    ));
                }
            }
            if let Some(name) = fn_name(l) {
                let indent = &l[..l.len() - t.len()];
                let close = format!("{indent}}}");
                let Some(len) = lines[i..].iter().position(|m| *m == close) else {
                    continue;
                };
                let why = lines[..i]
                    .iter()
                    .rev()
                    .take_while(|p| {
                        let p = p.trim_start();
                        p.starts_with("//") || p.starts_with("#[")
                    })
                    .any(|p| {
                        p.trim_start()
                            .trim_start_matches('/')
                            .trim()
                            .starts_with("Long because")
                    });
                if len + 1 > MAX_FN_LINES && !why {
                    wrong.push(format!(
                        "{}:{}: `{name}` has {} lines (at most {MAX_FN_LINES} without a `Long because` comment)",
                        path.display(),
                        i + 1,
                        len + 1
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The name of the function a line starts (with a body), if it starts one.
fn fn_name(line: &str) -> Option<&str> {
    let mut t = line.trim_start();
    for q in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "async ",
        "const ",
        "unsafe ",
    ] {
        t = t.strip_prefix(q).unwrap_or(t);
    }
    let rest = t.strip_prefix("fn ")?;
    if line.trim_end().ends_with(';') {
        return None;
    }
    rest.split(['(', '<']).next()
}
