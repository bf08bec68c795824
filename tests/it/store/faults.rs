//! Storage faults through the real binary: a disk that fills up under the
//! daemon (503, nothing acknowledged lost, recovery after a restart),
//! damaged data folders (refused with the path and what to do, or opened
//! with every entry intact: never silently older), and backups that round
//! trip with the same checksum.

use crate::common::*;
use std::path::Path;
use std::process::{Command, Output};

const RULE: &str = "rule \"pts\" on purchase then award points 1\n";

fn config() -> String {
    "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\nhttp:\n  listen: 127.0.0.1:0\n".to_string()
}

fn nudge(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nudge"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("nudge")
}

fn events(range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!(r#"{{"id":"e{i}","type":"purchase","member":"m{}","at":"2026-01-01T12:00:00Z","amount":{}}}"#, i % 300, 1 + i % 50))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A project with a data folder filled by `nudge ingest` of `n` events.
fn filled(n: usize) -> tempfile::TempDir {
    let dir = project_with(&config(), RULE);
    std::fs::write(dir.path().join("events.ndjson"), events(0..n)).expect("events");
    let out = nudge(dir.path(), &["ingest", "events.ndjson"]);
    assert!(out.status.success(), "{out:?}");
    dir
}

/// A filled project and its export's checksum.
fn filled_and_exported(n: usize) -> (tempfile::TempDir, String) {
    let dir = filled(n);
    let (code, err) = export(dir.path(), "data");
    assert_eq!(code, Some(0), "{err}");
    let sum = checksum(&err);
    (dir, sum)
}

/// `nudge export` of the folder: (exit code, stderr).
fn export(dir: &Path, data: &str) -> (Option<i32>, String) {
    let out = nudge(dir, &["export", "backup.ndjson", "--data", data]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn checksum(stderr: &str) -> String {
    stderr
        .rsplit("sha256 ")
        .next()
        .map(|s| s.trim().to_string())
        .expect("checksum")
}

#[test]
fn a_backup_round_trips_through_the_cli() {
    let (dir, sum) = filled_and_exported(1000);
    let d = dir.path();
    let first = std::fs::read(d.join("backup.ndjson")).expect("backup");
    let out = nudge(d, &["import-state", "backup.ndjson", "--data", "restored"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(checksum(&String::from_utf8_lossy(&out.stderr)), sum);
    let (code, err) = export(d, "restored");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(checksum(&err), sum);
    assert_eq!(
        std::fs::read(d.join("backup.ndjson")).expect("again"),
        first
    );
    let a = nudge(d, &["member", "m7", "--data", "data"]);
    let b = nudge(d, &["member", "m7", "--data", "restored"]);
    assert!(a.status.success() && a.stdout == b.stdout, "{a:?} {b:?}");
    // The restored folder runs: redelivered events are duplicates.
    let dm = start_cmd(
        {
            let mut c = daemon_cmd(d);
            c.args(["--data", "restored"]);
            c
        },
        None,
    );
    let (code, body) = http(
        &dm.addr,
        "POST",
        "/v1/events",
        &format!("[{}]", events(0..1000).trim().replace('\n', ",")),
    );
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"duplicates\":1000"), "{body}");
    drop(dm);
    // Into a folder that is not empty, or from a damaged file: refused,
    // nothing written.
    std::fs::write(d.join("backup.ndjson"), &first).expect("backup");
    let out = nudge(d, &["import-state", "backup.ndjson", "--data", "restored"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{out:?}"
    );
    let cut = &first[..first.len() - 20];
    std::fs::write(d.join("cut.ndjson"), cut).expect("cut");
    let out = nudge(d, &["import-state", "cut.ndjson", "--data", "fresh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !d.join("fresh").exists(),
        "a failed import leaves no folder"
    );
}

/// Damages a copy of a data folder.
type Damage = Box<dyn Fn(&Path)>;

/// Every way of damaging the folder either makes `nudge` refuse it (exit 2,
/// the folder named, what to do) or leaves every entry as it was.
#[test]
fn damaged_data_folders_are_refused_or_intact_never_silently_older() {
    let (dir, sum) = filled_and_exported(2000);
    let d = dir.path();
    let db = std::fs::read(d.join("data/db")).expect("db");
    let snap = std::fs::read_dir(d.join("data"))
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
        })
        .expect("snapshot");
    let mut damages: Vec<(String, Damage)> = Vec::new();
    for tenth in [1, 3, 5, 7, 9] {
        let len = db.len() * tenth / 10;
        damages.push((
            format!("db cut to {len}"),
            Box::new(move |p: &Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p.join("db"))
                    .expect("db");
                f.set_len(len as u64).expect("truncate");
            }),
        ));
    }
    for at in (0..db.len()).step_by(db.len() / 12 + 1) {
        damages.push((
            format!("db bytes flipped at {at}"),
            Box::new(move |p: &Path| {
                let mut b = std::fs::read(p.join("db")).expect("db");
                for x in b.iter_mut().skip(at).take(64) {
                    *x ^= 0x5a;
                }
                std::fs::write(p.join("db"), b).expect("db");
            }),
        ));
    }
    let snap_name = snap.file_name().expect("name").to_owned();
    damages.push((
        "snapshot cut".into(),
        Box::new(move |p: &Path| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p.join(&snap_name))
                .expect("snap");
            f.set_len(100).expect("truncate");
        }),
    ));
    // The control: a copy with nothing damaged opens with every entry.
    // (Whether a flipped or cut tail lands in space sled has not used yet
    // depends on how its last flush fell, so those may all be refused.)
    damages.push(("nothing damaged".into(), Box::new(|_: &Path| {})));
    damages.push((
        "db removed".into(),
        Box::new(|p: &Path| std::fs::remove_file(p.join("db")).expect("rm")),
    ));
    damages.push((
        "conf flipped".into(),
        Box::new(|p: &Path| {
            let mut b = std::fs::read(p.join("conf")).expect("conf");
            b[10] ^= 0x5a;
            std::fs::write(p.join("conf"), b).expect("conf");
        }),
    ));
    let (mut refused, mut intact) = (0, 0);
    let mut control_intact = false;
    for (what, damage) in &damages {
        let copy = d.join("copy");
        let _ = std::fs::remove_dir_all(&copy);
        copy_dir(&d.join("data"), &copy);
        damage(&copy);
        let (code, err) = export(d, "copy");
        match code {
            Some(0) => {
                assert_eq!(checksum(&err), sum, "{what}: opened with other contents");
                intact += 1;
                control_intact |= what == "nothing damaged";
            }
            Some(2) => {
                assert!(
                    err.contains("copy")
                        && (err.contains("restore it from a backup")
                            || err.contains("move it away")),
                    "{what}: {err}"
                );
                refused += 1;
            }
            other => panic!("{what}: exit {other:?}: {err}"),
        }
    }
    println!(
        "{} damages: refused {refused}, intact {intact}",
        damages.len()
    );
    assert!(control_intact, "the undamaged copy must open");
    assert!(refused >= 5, "refused {refused}, intact {intact}");
}

/// sled recovers a log whose last entries are damaged to the entry before,
/// without a word: the commit mark beside the store catches it, and the
/// daemon refuses to start (every time: no restart loop that serves).
#[test]
fn a_lost_last_commit_is_caught_and_the_daemon_refuses_to_start() {
    let dir = filled(500);
    let d = dir.path();
    let before = std::fs::read(d.join("data/db")).expect("db");
    std::fs::write(d.join("more.ndjson"), events(500..502)).expect("more");
    assert!(nudge(d, &["ingest", "more.ndjson"]).status.success());
    let after = std::fs::read(d.join("data/db")).expect("db");
    let changed: Vec<usize> = (0..after.len())
        .filter(|&i| before.get(i) != Some(&after[i]))
        .collect();
    assert!(!changed.is_empty(), "the second ingest wrote to the log");
    let (lo, hi) = (changed[0], changed[changed.len() - 1]);
    let mut damaged = after.clone();
    for x in &mut damaged[lo..=hi] {
        *x = 0;
    }
    std::fs::write(d.join("data/db"), damaged).expect("damage");
    for _ in 0..2 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nudge"))
            .current_dir(d)
            .arg("run")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        wait_until(
            std::time::Duration::from_secs(20),
            "the daemon started on a damaged folder",
            || child.try_wait().ok().flatten().is_some(),
        );
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("data is damaged")
                && err.contains("were flushed")
                && err.contains("nudge import-state"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_full_disk_answers_503_loses_nothing_and_recovers_after_a_restart() {
    let dir = project_with(&config(), RULE);
    let d = dir.path();
    // 2 MiB per file (sh counts 512-byte blocks): sled's log fills it.
    let mut cmd = Command::new("sh");
    cmd.current_dir(d).args([
        "-c",
        &format!("ulimit -f 4096 && exec {} run", env!("CARGO_BIN_EXE_nudge")),
    ]);
    let daemon = start_cmd(cmd, Some(d.join("daemon.log")));
    let (mut acked, mut sent) = (Vec::new(), 0);
    let mut unavailable = 0;
    while unavailable < 20 {
        assert!(sent < 50_000, "the disk never filled");
        let body = events(sent..sent + 5);
        let (code, reply) = http(
            &daemon.addr,
            "POST",
            "/v1/events",
            &format!("[{}]", body.trim().replace('\n', ",")),
        );
        match code {
            202 => acked.extend(sent..sent + 5),
            503 => {
                unavailable += 1;
                assert!(
                    reply.contains("too large") || reply.contains("storage"),
                    "{reply}"
                );
            }
            other => panic!("{other}: {reply}"),
        }
        sent += 5;
    }
    assert!(!acked.is_empty());
    // Still serving reads and status while writes fail; status says they
    // fail (503, `ok: false`, the storage error), so a health check sees it.
    let (code, status) = http(&daemon.addr, "GET", "/v1/status", "");
    assert_eq!(code, 503, "{status}");
    assert!(status.contains("\"ok\":false"), "{status}");
    assert!(status.contains("the last commit failed"), "{status}");
    assert_eq!(http(&daemon.addr, "GET", "/v1/members/m1", "").0, 200);
    drop(daemon);
    // Room again: every acknowledged event is there; the rest go in once.
    let daemon = start(d);
    // Posts NDJSON lines in requests of 5,000; the replies.
    let post_all = |ndjson: &str| -> Vec<(usize, String)> {
        let lines: Vec<&str> = ndjson.lines().collect();
        lines
            .chunks(5000)
            .map(|chunk| {
                let (code, reply) = http(
                    &daemon.addr,
                    "POST",
                    "/v1/events",
                    &format!("[{}]", chunk.join(",")),
                );
                assert_eq!(code, 202, "{reply}");
                (chunk.len(), reply)
            })
            .collect()
    };
    let ack_body = acked.iter().map(|&i| events(i..i + 1)).collect::<String>();
    for (n, reply) in post_all(&ack_body) {
        assert!(
            reply.contains(&format!("\"applied\":0,\"duplicates\":{n}")),
            "acknowledged events were lost: {reply}"
        );
    }
    post_all(&events(0..sent));
    // Each member has exactly one point per event of theirs.
    for m in [0usize, 1, 150, 299] {
        let want = (0..sent).filter(|i| i % 300 == m).count() as i64;
        assert_eq!(points(&daemon.addr, &format!("m{m}")), want, "member m{m}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

/// A data folder whose last tick lies ahead of this machine's clock (it
/// came from a machine whose clock was ahead, or the clock was set back):
/// the daemon holds its daily ticks and says so in status and metrics,
/// instead of silently never ticking.
#[test]
fn a_last_tick_ahead_of_the_clock_holds_ticks_and_says_so() {
    use sha2::{Digest, Sha256};
    let (dir, _) = filled_and_exported(3);
    let d = dir.path();
    let text = std::fs::read_to_string(d.join("backup.ndjson")).expect("backup");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let ahead = nudge::base::time::parse_date("2099-01-01").expect("date");
    let mut lines: Vec<String> = Vec::new();
    let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let key = b"xlast_tick".to_vec();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        match (v["k"].as_str(), v["v"].as_str()) {
            (Some(k), Some(val)) if k != hex(&key) => {
                let bytes = |h: &str| {
                    (0..h.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).expect("hex"))
                        .collect::<Vec<u8>>()
                };
                entries.push((bytes(k), bytes(val)));
            }
            (Some(_), Some(_)) => {}
            _ if v.get("nudge_backup").is_some() => lines.push(line.to_string()),
            _ => {}
        }
    }
    entries.push((key, ahead.to_le_bytes().to_vec()));
    entries.sort();
    let mut sum = Sha256::new();
    for (k, v) in &entries {
        for part in [k, v] {
            sum.update((part.len() as u64).to_le_bytes());
            sum.update(part);
        }
        lines.push(serde_json::json!({"k": hex(k), "v": hex(v)}).to_string());
    }
    lines.push(
        serde_json::json!({"entries": entries.len(), "sha256": hex(&sum.finalize())}).to_string(),
    );
    std::fs::write(d.join("ahead.ndjson"), lines.join("\n") + "\n").expect("write");
    let out = nudge(d, &["import-state", "ahead.ndjson", "--data", "ahead"]);
    assert!(out.status.success(), "{out:?}");
    let mut cmd = daemon_cmd(d);
    cmd.args(["--data", "ahead"]);
    let daemon = start_cmd(cmd, None);
    wait_until(
        std::time::Duration::from_secs(30),
        "ticks were never held",
        || {
            http(&daemon.addr, "GET", "/v1/status", "")
                .1
                .contains("\"ticks\":{\"error\"")
        },
    );
    let (_, status) = http(&daemon.addr, "GET", "/v1/status", "");
    assert!(
        status.contains("the last tick, 2099-01-01, lies ahead of the clock")
            && status.contains("\"ok\":false"),
        "{status}"
    );
    let (_, metrics) = http(&daemon.addr, "GET", "/metrics", "");
    assert!(
        metrics.lines().any(|l| l == "nudge_ticks_held 1"),
        "{metrics}"
    );
}
