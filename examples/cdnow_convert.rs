//! Converts the CDNOW sample (whitespace-separated purchases) into nudge's
//! NDJSON purchase events:
//!
//!     cargo run --example cdnow_convert -- examples/cdnow/CDNOW_sample.txt > examples/cdnow/events.ndjson
//!
//! Each row becomes `{"id":"cdnow-ROW","type":"purchase","member":"SAMPLE_ID",
//! "at":"YYYY-MM-DDT12:00:00Z","amount":VALUE}`. The data set has days, not
//! times; noon UTC places every purchase after the 09:00 daily tick.

use std::io::{BufRead, Write};

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: cdnow_convert CDNOW_sample.txt > events.ndjson");
        std::process::exit(2);
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            std::process::exit(2);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let Ok(line) = line else { continue };
        let cols: Vec<&str> = line.split_whitespace().collect();
        let [_, member, date, _, amount] = cols[..] else {
            if !line.trim().is_empty() {
                eprintln!("line {}: expected 5 columns, skipped", i + 1);
            }
            continue;
        };
        let (y, m, d) = (&date[0..4], &date[4..6], &date[6..8]);
        let _ = writeln!(
            out,
            r#"{{"id":"cdnow-{}","type":"purchase","member":"{member}","at":"{y}-{m}-{d}T12:00:00Z","amount":{amount}}}"#,
            i + 1
        );
    }
}
