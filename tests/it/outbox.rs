//! The outbox and the file sink: each effect written once even after a
//! torn write; batches read across and kept until all of them is delivered.

use crate::engine::*;

#[test]
fn the_file_sink_writes_each_effect_once_even_after_a_torn_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut e = engine("rule \"points\" on purchase then award points 1");
    let s = e.schema.clone();
    let file = dir.path().join("out/effects.ndjson");
    e.process(&[
        purchase(&s, "1", "a", "2026-01-01", 1.0),
        purchase(&s, "2", "b", "2026-01-01", 1.0),
    ])
    .expect("process");
    assert_eq!(
        nudge::outbox::drain_to_file(&mut e, &file).expect("drain"),
        2
    );
    assert_eq!(
        nudge::outbox::drain_to_file(&mut e, &file).expect("drain"),
        0
    );
    // A crash after writing but before committing leaves bytes past the
    // committed length: they are cut and the entries written again.
    e.process(&[purchase(&s, "3", "c", "2026-01-02", 1.0)])
        .expect("process");
    let (_, third) = e.outbox(2, 1).expect("outbox").remove(0);
    let line = serde_json::to_string(&third).expect("json");
    let torn = &line.as_bytes()[..line.len() / 2];
    let append = |bytes: &[u8]| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, bytes))
            .expect("append")
    };
    append(torn);
    assert_eq!(
        nudge::outbox::drain_to_file(&mut e, &file).expect("drain"),
        1
    );
    let text = std::fs::read_to_string(&file).expect("read");
    let keys: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["key"].to_string())
        .collect();
    assert_eq!(keys.len(), 3);
    let mut unique = keys.clone();
    unique.dedup();
    assert_eq!(unique.len(), 3);
    // Bytes this engine did not write are not cut: another data folder
    // shares the file. Nothing is written until the file is its own again.
    e.process(&[purchase(&s, "4", "d", "2026-01-03", 1.0)])
        .expect("process");
    append(b"{\"someone\":\"else\"}\n");
    let before = std::fs::read(&file).expect("read");
    let err = nudge::outbox::drain_to_file(&mut e, &file).expect_err("foreign bytes");
    assert!(
        err.to_string()
            .contains("holds 19 bytes this data folder did not write"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).expect("read"), before);
    // A file cut part-way (or an older copy put back) is refused: writing
    // on would join its torn last line to the next effect.
    std::fs::write(&file, &before[..before.len() - 40]).expect("cut");
    let err = nudge::outbox::drain_to_file(&mut e, &file).expect_err("cut file");
    assert!(err.to_string().contains("fewer than the"), "{err}");
    assert_eq!(std::fs::read(&file).expect("read").len(), before.len() - 40);
    // Moved away (rotated): the next effects start a new file.
    std::fs::remove_file(&file).expect("rotate");
    assert_eq!(
        nudge::outbox::drain_to_file(&mut e, &file).expect("drain"),
        1
    );
    let text = std::fs::read_to_string(&file).expect("read");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"trigger\":\"event:4\""), "{text}");
    // Without a sink in the config, nothing is released.
    nudge::outbox::trim_delivered(&mut e).expect("release");
    assert_eq!(e.outbox(0, 10).expect("outbox").len(), 4);
    assert!(nudge::outbox::drain_to_file(&mut e, &file).is_ok());
}

#[test]
fn the_outbox_reads_across_batches_and_keeps_a_batch_until_all_of_it_is_delivered() {
    let s = SledStore::temporary().expect("store");
    let entry = |i: u64| (i, format!("e{i}").into_bytes());
    // Three commits: entries 0-2, 3-4, 5.
    for range in [0..3, 3..5, 5..6] {
        s.commit(WriteSet {
            outbox: range.map(entry).collect(),
            ..WriteSet::default()
        })
        .expect("commit");
    }
    let seqs = |from, limit| -> Vec<u64> {
        s.outbox(from, limit)
            .expect("read")
            .into_iter()
            .map(|(q, _)| q)
            .collect()
    };
    assert_eq!(seqs(0, 100), [0, 1, 2, 3, 4, 5]);
    assert_eq!(seqs(1, 3), [1, 2, 3]);
    assert_eq!(seqs(4, 100), [4, 5]);
    assert_eq!(s.outbox(4, 1).expect("read"), [(4, b"e4".to_vec())]);
    assert!(seqs(6, 10).is_empty());
    // Delivered below 4: the first batch goes; 3-4 stays (4 is not delivered).
    s.commit(WriteSet {
        delivered_below: Some(4),
        ..WriteSet::default()
    })
    .expect("release");
    assert_eq!(seqs(0, 100), [3, 4, 5]);
    s.commit(WriteSet {
        delivered_below: Some(6),
        ..WriteSet::default()
    })
    .expect("release");
    assert!(seqs(0, 100).is_empty());
}
