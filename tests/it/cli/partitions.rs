//! A data folder split into partitions (`storage.partitions`) through the
//! real binary: `nudge ingest` into three partitions gives the members and
//! effects one partition gives (file sinks one file per partition), a
//! redelivery is a duplicate in its partition, `nudge member` reads the
//! right one; a budget and a reward's stock are spent exactly over the
//! partitions, across runs; gifts to members of other partitions arrive
//! as in one; a project that needs every member in one
//! partition is refused before anything is made; partition folders that do not fit are
//! refused by name, and commands that do not read partitions yet say so.

use super::commands::nudge;
use std::path::Path;

const SINK: &str = "sinks:\n  - kind: file\n    path: out/effects.ndjson\n";

/// The CDNOW example project (its rules, its config with a file sink and
/// `partitions`), and its events in time order (the file is by customer,
/// and the dedup window wants history in time order).
fn cdnow(partitions: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cdnow");
    let config = std::fs::read_to_string(example.join("nudge.yaml")).expect("config");
    let config = format!("{config}\nstorage:\n  partitions: {partitions}\n{SINK}");
    std::fs::write(d.join("nudge.yaml"), config).expect("config");
    std::fs::create_dir(d.join("rules")).expect("rules");
    for f in ["tiers.rules", "winback.rules", "zombies.rules"] {
        std::fs::copy(example.join("rules").join(f), d.join("rules").join(f)).expect("rule");
    }
    let text = std::fs::read_to_string(example.join("events.ndjson")).expect("events");
    let mut events: Vec<(String, &str)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("event");
            (v["at"].as_str().expect("at").to_string(), l)
        })
        .collect();
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let sorted: String = events.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(d.join("events.ndjson"), sorted).expect("events");
    dir
}

/// Every effect line the folder's file sinks hold, without the rule set's
/// version (the configs differ by `partitions`), sorted.
fn effects(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(dir.join("out")).expect("out") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "ndjson") {
            let text = std::fs::read_to_string(&path).expect("effects");
            for l in text.lines() {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("effect");
                v.as_object_mut().expect("object").remove("ruleset");
                lines.push(v.to_string());
            }
        }
    }
    lines.sort();
    lines
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn three_partitions_give_what_one_gives() {
    let (one, three) = (cdnow(1), cdnow(3));
    let (out1, err1, code1) = nudge(one.path(), &["ingest", "events.ndjson"], None);
    let (out3, err3, code3) = nudge(three.path(), &["ingest", "events.ndjson"], None);
    assert_eq!((code1, code3), (0, 0), "{err1}\n{err3}");
    assert!(out3.contains("6919 applied, 0 duplicates"), "{out3}");
    assert!(out3.contains("members in the store: 2357"), "{out3}");
    assert_eq!(out1, out3, "the same report");
    assert_eq!(
        files(&three.path().join("data")),
        ["p0", "p1", "p2", "partitions"]
    );
    assert_eq!(
        files(&three.path().join("out")),
        [
            "effects-p0.ndjson",
            "effects-p0.ndjson.owner",
            "effects-p1.ndjson",
            "effects-p1.ndjson.owner",
            "effects-p2.ndjson",
            "effects-p2.ndjson.owner"
        ]
    );
    let sent = effects(three.path());
    assert!(sent.len() > 600, "{}", sent.len());
    assert_eq!(sent, effects(one.path()));
    // A segment counts and lists the same members (by partition, in key
    // order within each).
    let segment = |dir: &Path, more: &[&str]| {
        let args = [&["segment", "spend > 100", "--at", "1998-06-30"][..], more].concat();
        let (out, err, code) = nudge(dir, &args, None);
        assert_eq!(code, 0, "{err}");
        let mut lines: Vec<String> = out.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let count = segment(three.path(), &["--count"]);
    assert!(count[0].contains("\"members\":2357"), "{count:?}");
    assert_eq!(count, segment(one.path(), &["--count"]));
    assert_eq!(segment(three.path(), &[]), segment(one.path(), &[]));
    // The repurchase models are fitted over every partition's members:
    // the same fit, kept in each partition, so members show the same
    // predictions.
    let fit = |dir: &Path| {
        let (out, err, code) = nudge(dir, &["fit", "--at", "1998-06-30"], None);
        assert_eq!(code, 0, "{err}");
        out
    };
    let fitted = fit(three.path());
    assert!(fitted.contains("\"members\":2357"), "{fitted}");
    assert_eq!(fitted, fit(one.path()));
    let (model, err, code) = nudge(three.path(), &["model"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(model, fitted);
    for member in ["0001", "0671", "1108", "1452", "2357"] {
        let (a, _, _) = nudge(one.path(), &["member", member], None);
        let (b, err, code) = nudge(three.path(), &["member", member], None);
        assert_eq!(code, 0, "{err}");
        assert!(b.contains(&format!("\"member\":\"{member}\"")), "{b}");
        assert!(b.contains("p_alive"), "{b}");
        assert_eq!(a, b, "member {member}");
    }
    // The last weeks sent again (older is past the dedup window): every
    // event is a duplicate in its partition.
    let text = std::fs::read_to_string(three.path().join("events.ndjson")).expect("events");
    let recent: String = text
        .lines()
        .filter(|l| l.contains("\"at\":\"1998-06-1") || l.contains("\"at\":\"1998-06-2"))
        .map(|l| format!("{l}\n"))
        .collect();
    let n = recent.lines().count();
    assert!(n > 10, "{n}");
    std::fs::write(three.path().join("recent.ndjson"), recent).expect("recent");
    let (again, err, code) = nudge(three.path(), &["ingest", "recent.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        again.contains(&format!("0 applied, {n} duplicates")),
        "{again}"
    );
    assert_eq!(effects(three.path()), sent);
}

/// Events naming members and identifiers so that many link members of
/// different partitions (One ID merges).
fn one_id_events() -> String {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..1500)
        .map(|i| {
            let member = match next(3) {
                0 => String::new(),
                _ => format!(r#""member":"m{}","#, next(200)),
            };
            let ids = match (member.is_empty(), next(4)) {
                (true, _) | (_, 0) => format!(r#","ids":{{"phone":"p{}"}}"#, next(150)),
                (_, 1) => format!(r#","ids":{{"card":"c{}"}}"#, next(150)),
                _ => String::new(),
            };
            format!(
                "{{\"id\":\"e{i}\",\"type\":\"purchase\",{member}\"at\":\"2026-01-01T{:02}:{:02}:{:02}Z\",\"amount\":{}{ids}}}\n",
                i / 3600,
                i / 60 % 60,
                i % 60,
                1 + next(50)
            )
        })
        .collect()
}

#[test]
fn one_id_over_partitions_gives_what_one_gives() {
    let run = |partitions: usize| {
        let config = format!(
            "timezone: UTC\ntiers: [bronze, silver]\nids: [phone, card]\nevents:\n  purchase:\n    amount: money\nstorage:\n  partitions: {partitions}\n{SINK}"
        );
        let rules = "rule \"pts\" on purchase then award points floor(event.amount)\n\
                     rule \"silver\" on purchase when spend >= 200 then set tier silver\n";
        let dir = crate::common::project_with(&config, rules);
        std::fs::write(dir.path().join("e.ndjson"), one_id_events()).expect("events");
        let (out, err, code) = nudge(dir.path(), &["ingest", "e.ndjson"], None);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("1500 applied"), "{out}");
        let (again, err, code) = nudge(dir.path(), &["ingest", "e.ndjson"], None);
        assert_eq!(code, 0, "{err}");
        assert!(again.contains("0 applied, 1500 duplicates"), "{again}");
        let found: Vec<String> = [
            "m7",
            "m150",
            "phone:p3",
            "phone:p99",
            "card:c42",
            "card:c140",
        ]
        .iter()
        .map(|name| nudge(dir.path(), &["member", name], None).0)
        .collect();
        (effects(dir.path()), found, dir)
    };
    let (one, found_one, _a) = run(1);
    let (three, found_three, b) = run(3);
    let merges = one
        .iter()
        .filter(|l| l.contains("\"action\":\"merge\""))
        .count();
    assert!(merges > 50, "{merges} merges");
    assert_eq!(one.len(), three.len());
    assert_eq!(one, three);
    assert_eq!(found_one, found_three);
    assert!(found_three[2].contains("\"points\""), "{found_three:?}");
    // A backup of the folder restores members found by any name.
    let d = b.path();
    let (_, err, code) = nudge(d, &["export", "backup.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    let (_, err, code) = nudge(
        d,
        &["import-state", "backup.ndjson", "--data", "copy"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let (copy, _, _) = nudge(d, &["--data", "copy", "member", "phone:p3"], None);
    assert_eq!(copy, found_three[2]);
}

#[test]
fn commands_that_only_read_make_no_folder() {
    let dir = crate::common::project_with(
        "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\nstorage:\n  partitions: 2\n",
        "rule \"p\" on purchase then award points 1\n",
    );
    std::fs::create_dir(dir.path().join("data")).expect("data");
    let (_, err, code) = nudge(dir.path(), &["segment", "spend > 0", "--count"], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`storage.partitions` is 2, and this command does not make a data folder"),
        "{err}"
    );
    assert!(files(&dir.path().join("data")).is_empty(), "nothing made");
}

#[test]
fn partition_folders_that_do_not_fit_are_refused_by_name() {
    let dir = crate::common::project_with(
        "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\nstorage:\n  partitions: 2\n",
        "rule \"p\" on purchase then award points 1\n",
    );
    let d = dir.path();
    let events: String = (0..20)
        .map(|i| crate::common::purchase(&format!("e{i}"), &format!("m{i}"), 5.0) + "\n")
        .collect();
    std::fs::write(d.join("e.ndjson"), events).expect("events");
    let (out, err, code) = nudge(d, &["ingest", "e.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("members in the store: 20"), "{out}");

    // A config that says otherwise: the folder keeps its own number.
    let config = std::fs::read_to_string(d.join("nudge.yaml")).expect("config");
    std::fs::write(
        d.join("nudge.yaml"),
        config.replace("partitions: 2", "partitions: 4"),
    )
    .expect("config");
    let (out, err, code) = nudge(d, &["ingest", "e.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 applied, 20 duplicates"), "{out}");
    assert!(
        err.contains("has 2 partitions; `storage.partitions` (4) is for folders made from now on"),
        "{err}"
    );

    // Segments read every partition.
    let (out, err, code) = nudge(d, &["segment", "spend > 0", "--count"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#"{"count":20,"members":20}"#);
    // A backup of the whole folder restores it, partitions and all.
    let (_, err, code) = nudge(d, &["export", "backup.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    let sum = err
        .split("sha256 ")
        .nth(1)
        .expect("checksum")
        .trim()
        .to_string();
    let (_, err, code) = nudge(
        d,
        &["import-state", "backup.ndjson", "--data", "copy"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.ends_with(&format!("sha256 {sum}\n")), "{err}");
    assert_eq!(files(&d.join("copy")), ["p0", "p1", "partitions"]);
    for m in ["m0", "m7", "m19"] {
        let (a, _, _) = nudge(d, &["member", m], None);
        let (b, err, code) = nudge(d, &["--data", "copy", "member", m], None);
        assert_eq!(code, 0, "{err}");
        assert_eq!(a, b, "{m}");
    }
    let (again, err, code) = nudge(
        d,
        &["import-state", "backup.ndjson", "--data", "copy"],
        None,
    );
    assert_ne!(code, 0, "{again}");
    assert!(err.contains("is not empty"), "{err}");
    std::fs::remove_dir_all(d.join("copy")).expect("rm");

    // Partition folders swapped, then one missing.
    let data = d.join("data");
    std::fs::rename(data.join("p0"), data.join("tmp")).expect("rename");
    std::fs::rename(data.join("p1"), data.join("p0")).expect("rename");
    std::fs::rename(data.join("tmp"), data.join("p1")).expect("rename");
    for args in [
        &["ingest", "e.ndjson"][..],
        &["member", "m0"],
        &["member", "m1"],
    ] {
        let (_, err, code) = nudge(d, args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("it says it is partition "), "{args:?}: {err}");
        assert!(err.contains(" belongs (partition folders renamed"), "{err}");
    }
    std::fs::rename(data.join("p0"), data.join("tmp")).expect("rename");
    std::fs::rename(data.join("p1"), data.join("p0")).expect("rename");
    std::fs::rename(data.join("tmp"), data.join("p1")).expect("rename");

    // A partition given as the data folder.
    let (_, err, code) = nudge(d, &["--data", "data/p0", "member", "m1"], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("is a partition of a data folder (partition 0/2 "),
        "{err}"
    );

    // The file that says how many: edited, then lost.
    let file = data.join("partitions");
    let kept = std::fs::read_to_string(&file).expect("partitions");
    std::fs::write(&file, "300 x\n").expect("edit");
    let (_, err, code) = nudge(d, &["ingest", "e.ndjson"], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("says `300 x`, not the number of its partitions (2 to 256)"),
        "{err}"
    );
    std::fs::remove_file(&file).expect("remove");
    for args in [
        &["ingest", "e.ndjson"][..],
        &["member", "m1"],
        &["run"],
        &["segment", "spend > 0", "--count"],
    ] {
        let (_, err, code) = nudge(d, args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("holds partition folders (p0, ...) but not its `partitions` file"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(files(&data), ["p0", "p1"], "no store made beside them");
    std::fs::write(&file, kept).expect("restore");
    let (out, err, code) = nudge(d, &["ingest", "e.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 applied, 20 duplicates"), "{out}");

    // A partition from another data folder with the same number.
    let other = crate::common::project_with(
        &config.replace("partitions: 4", "partitions: 2"),
        "rule \"p\" on purchase then award points 1\n",
    );
    std::fs::write(
        other.path().join("e.ndjson"),
        crate::common::purchase("x1", "m1", 5.0),
    )
    .expect("events");
    let (_, err, code) = nudge(other.path(), &["ingest", "e.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    std::fs::remove_dir_all(data.join("p1")).expect("remove");
    std::fs::rename(other.path().join("data/p1"), data.join("p1")).expect("move");
    let (_, err, code) = nudge(d, &["ingest", "e.ndjson"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("says it is partition 1/2 "), "{err}");

    std::fs::remove_dir_all(data.join("p1")).expect("remove");
    for args in [&["member", "m1"][..], &["ingest", "e.ndjson"]] {
        let (_, err, code) = nudge(d, args, None);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains("its partition folder p1 is missing (it has 2 partitions)"),
            "{args:?}: {err}"
        );
    }
}

/// What one file sink's files hold: (rule, status) of each effect line.
fn statuses(dir: &Path) -> Vec<(String, String, String)> {
    effects(dir)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("effect");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("rule"), s("status"), s("reason"))
        })
        .collect()
}

#[test]
fn a_budget_and_a_stock_are_spent_exactly_over_partitions_across_runs() {
    let config = format!(
        "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\n  order_reward:\n    reward: string\nrewards:\n  lamp: {{ points: 1, stock: 7 }}\nstorage:\n  partitions: 3\n{SINK}"
    );
    let rules = "rule \"welcome\" on purchase then award points 10 budget 25\n\
                 rule \"pts\" on purchase then award points 1\n\
                 rule \"mall\" on order_reward then redeem reward event.reward\n";
    let dir = crate::common::project_with(&config, rules);
    let d = dir.path();
    let batch = |from: usize| -> String {
        (from..from + 40)
            .flat_map(|m| {
                [
                    crate::common::purchase(&format!("p{m}"), &format!("m{m}"), 5.0),
                    format!(
                        r#"{{"id":"o{m}","type":"order_reward","member":"m{m}","at":"2026-01-01T13:00:00Z","reward":"lamp"}}"#
                    ),
                ]
            })
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let count = |want: (&str, &str)| {
        statuses(d)
            .iter()
            .filter(|(r, s, _)| (r.as_str(), s.as_str()) == want)
            .count()
    };
    std::fs::write(d.join("a.ndjson"), batch(0)).expect("events");
    let (out, err, code) = nudge(d, &["ingest", "a.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("80 applied"), "{out}");
    assert!(files(&d.join("data")).contains(&"p2".to_string()));
    assert_eq!(count(("welcome", "sent")), 25);
    assert_eq!(count(("welcome", "capped")), 15);
    assert_eq!(count(("mall", "sent")), 7);
    let out_of_stock = statuses(d)
        .iter()
        .filter(|(r, s, why)| r == "mall" && s == "refused" && why == "out_of_stock")
        .count();
    assert_eq!(out_of_stock, 33);
    // A second run starts from what every partition spent.
    std::fs::write(d.join("b.ndjson"), batch(40)).expect("events");
    let (_, err, code) = nudge(d, &["ingest", "b.ndjson"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(count(("welcome", "sent")), 25);
    assert_eq!(count(("welcome", "capped")), 55);
    assert_eq!(count(("mall", "sent")), 7);
}

#[test]
fn gifts_to_members_of_other_partitions_arrive_as_in_one() {
    let run = |partitions: usize| {
        let config = format!(
            "timezone: UTC\ntiers: [bronze]\nevents:\n  purchase:\n    amount: money\n    friend: string?\nstorage:\n  partitions: {partitions}\n{SINK}"
        );
        let rules = "rule \"gift\" on purchase when event.friend is not null then award points floor(event.amount) to event.friend\n";
        let dir = crate::common::project_with(&config, rules);
        // 3,000 purchases over 300 members, each naming another member.
        let events: String = (0..3000)
            .map(|i| {
                format!(
                    "{{\"id\":\"e{i}\",\"type\":\"purchase\",\"member\":\"m{}\",\"at\":\"2026-01-01T{:02}:{:02}:00Z\",\"amount\":{},\"friend\":\"m{}\"}}\n",
                    i % 300,
                    i / 600,
                    i % 60,
                    i % 7 + 1,
                    (i * 7 + 1) % 300
                )
            })
            .collect();
        std::fs::write(dir.path().join("e.ndjson"), events).expect("events");
        let (out, err, code) = nudge(dir.path(), &["ingest", "e.ndjson"], None);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("3000 applied"), "{out}");
        let (member, err, code) = nudge(dir.path(), &["member", "m1"], None);
        assert_eq!(code, 0, "{err}");
        (effects(dir.path()), member)
    };
    let (one, points_one) = run(1);
    let (three, points_three) = run(3);
    assert_eq!(one.len(), 3000, "a gift per purchase");
    assert_eq!(one, three);
    assert_eq!(points_one, points_three);
    assert!(points_one.contains("points"), "{points_one}");
}
