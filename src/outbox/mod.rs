//! Where effects go. The NDJSON file sink: drains the outbox to a file,
//! each effect once, in outbox order (so in order per member). A sink gets
//! each key once: a `deferred` record (quiet hours) is not delivered; the
//! same effect is, as `sent`, when the engine releases it.
//!
//! Exactly once across crashes: after each write the file is synced, and
//! its length and the next outbox entry are committed together. On the next
//! drain, bytes past the committed length (written, but the crash came
//! before the commit) are cut off and written again from the outbox, once
//! they are checked to be the start of what it would write: bytes of
//! another writer (two data folders on one sink path) are refused, not cut.
//! A file shorter than the committed length starts over when it is empty
//! or missing (rotated) and is refused otherwise (cut, or an older copy).

use crate::config::Sink;
use crate::engine::Engine;
use crate::model::Effect;
use crate::model::Status;
use crate::store::{Store, StoreError};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write effects to {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    /// Bytes past this data folder's committed length that are not the
    /// start of what it would write: someone else writes to the file.
    #[error(
        "the file sink {path} holds {extra} bytes this data folder did not write (another data folder or program writes to it); nothing was cut or written: give each data folder its own sink path, or move the file away"
    )]
    Foreign { path: String, extra: u64 },
    /// The sink file is shorter than this data folder wrote it, and not
    /// empty: cut, or an older copy put back.
    #[error(
        "the file sink {path} holds {len} bytes, fewer than the {committed} this data folder wrote to it (it was cut, or an older copy was put back); nothing was written: move it away (the next effects then start a new file) or put back the whole file"
    )]
    Shorter {
        path: String,
        len: u64,
        committed: u64,
    },
    /// The sink file's owner file names another data folder.
    #[error(
        "the file sink {path} belongs to another data folder ({owner} names it); nothing was written: give each data folder its own sink path, or move both files away"
    )]
    Owned { path: String, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes every outbox entry past this sink's cursor to the NDJSON file at
/// `sink` (a partition's own beside it, [`Engine::sink_file`]); returns
/// how many. Entries stay in the outbox until every sink has them (see
/// [`trim_delivered`]).
pub fn drain_to_file<S: Store>(engine: &mut Engine<S>, sink: &Path) -> Result<usize, SinkError> {
    // The cursors are the configured sink's, whichever file it writes.
    let len_key = crate::store::keys::file_len(sink);
    let next_key = crate::store::keys::file_cursor(sink);
    let file_path = engine.sink_file(sink);
    let path = file_path.as_path();
    let io = |source| SinkError::File {
        path: path.display().to_string(),
        source,
    };
    claim(engine, path)?;
    let committed = engine.store().meta_u64(&len_key)?;
    let mut next = engine.store().meta_u64(&next_key)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    let mut len = file.metadata().map_err(io)?.len();
    if len < committed {
        start_over(engine, path, len, committed, &len_key)?;
    }
    if len > committed {
        // Only a write of ours cut short is cut off; a file another data
        // folder shares (the config's sink path, two `--data` folders)
        // would otherwise lose that folder's effects.
        let tail = read_tail(path, committed, len).map_err(io)?;
        if !expected_from(engine, next, tail.len())?.starts_with(&tail) {
            return Err(SinkError::Foreign {
                path: path.display().to_string(),
                extra: len - committed,
            });
        }
        file.set_len(committed).map_err(io)?;
        len = committed;
    }
    let mut total = 0;
    loop {
        let mut buf = Vec::new();
        let Some((last, n)) = file_lines(engine, next, &mut buf)? else {
            return Ok(total);
        };
        next = last + 1;
        file.write_all(&buf).map_err(io)?;
        file.sync_data().map_err(io)?;
        len += buf.len() as u64;
        total += n;
        let meta = vec![
            (len_key.clone(), len.to_le_bytes().to_vec()),
            (next_key.clone(), next.to_le_bytes().to_vec()),
        ];
        engine.delivered(None, meta)?;
    }
}

/// A sink file shorter than this folder wrote it: an empty or missing one
/// was rotated (moved away, deleted, or emptied as logrotate's
/// `copytruncate` does), so it starts over, and says so once; one cut
/// part-way, or an older copy, is refused (writing on would join a torn
/// line to the next effect).
fn start_over<S: Store>(
    engine: &mut Engine<S>,
    path: &Path,
    len: u64,
    committed: u64,
    len_key: &str,
) -> Result<(), SinkError> {
    if len > 0 {
        return Err(SinkError::Shorter {
            path: path.display().to_string(),
            len,
            committed,
        });
    }
    tracing::warn!(path = %path.display(), written = committed, "The file sink starts a new file: the one this data folder wrote was moved away, deleted or emptied.");
    engine.delivered(
        None,
        vec![(len_key.to_string(), 0u64.to_le_bytes().to_vec())],
    )?;
    Ok(())
}

/// Makes sure the sink file is this data folder's: its owner file
/// (`PATH.owner`) names this folder, or is made to. Two folders on one
/// config write the same bytes for the same events, so the content alone
/// cannot tell whose a file is.
fn claim<S: Store>(engine: &mut Engine<S>, path: &Path) -> Result<(), SinkError> {
    let mut owner = path.as_os_str().to_owned();
    owner.push(".owner");
    let owner = std::path::PathBuf::from(owner);
    let io = |source| SinkError::File {
        path: owner.display().to_string(),
        source,
    };
    let me = folder_id(engine)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&owner)
        .and_then(|mut f| {
            f.write_all(format!("{me}\n").as_bytes())?;
            f.sync_all()
        });
    match written {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&owner).map_err(io)?;
            if text.trim() == me {
                Ok(())
            } else {
                Err(SinkError::Owned {
                    path: path.display().to_string(),
                    owner: owner.display().to_string(),
                })
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// This data folder's id, made on first use.
fn folder_id<S: Store>(engine: &mut Engine<S>) -> Result<String, StoreError> {
    use std::hash::BuildHasher;
    let key = crate::store::keys::FOLDER_ID;
    if let Some(id) = engine.store().meta(key)?.filter(|v| !v.is_empty()) {
        return Ok(String::from_utf8_lossy(&id).into_owned());
    }
    // Random keys per process (std's hasher seed), so two folders made
    // at once by two processes still differ.
    let seed = std::collections::hash_map::RandomState::new();
    let id = format!(
        "{:016x}{:016x}",
        seed.hash_one(std::process::id()),
        seed.hash_one(engine.store().meta_u64(crate::store::keys::COMMIT_SEQ)?)
    );
    engine.delivered(None, vec![(key.into(), id.as_bytes().to_vec())])?;
    Ok(id)
}

/// The file's bytes from `from` to `to`, at most what one drain writes
/// and a byte more (enough to tell a foreign file).
/// Bytes `from..to` of the file at `path` (at most [`MAX_TAIL`]): what a
/// write cut short may have left past a recorded length.
pub fn read_tail(path: &Path, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::new();
    f.take((to - from).min(MAX_TAIL)).read_to_end(&mut tail)?;
    Ok(tail)
}

/// The most a torn drain can have left: one read of the outbox, 4096
/// effects of at most a few KiB each.
const MAX_TAIL: u64 = 64 << 20;

/// What this sink would write from outbox entry `next` on, at least `want`
/// bytes of it when the outbox has them.
fn expected_from<S: Store>(
    engine: &Engine<S>,
    mut next: u64,
    want: usize,
) -> Result<Vec<u8>, StoreError> {
    let mut buf = Vec::new();
    while buf.len() < want {
        let Some((last, _)) = file_lines(engine, next, &mut buf)? else {
            break;
        };
        next = last + 1;
    }
    Ok(buf)
}

/// Appends to `buf` the file sink's lines for up to 4,096 outbox entries
/// from `next` on: the last entry's sequence number and how many were
/// read, or `None` at the end of the outbox. A line is the entry's bytes
/// as stored: the engine stores each effect as `write_line` writes it, so
/// they are the same bytes, without decoding every field only to encode it
/// again (a sixth of `nudge ingest`'s time with the example project). Only
/// the status is read, to leave out `deferred` records; an entry that is
/// not an effect is left out, as it was when decoded.
fn file_lines<S: Store>(
    engine: &Engine<S>,
    next: u64,
    buf: &mut Vec<u8>,
) -> Result<Option<(u64, usize)>, StoreError> {
    /// The one field of a stored effect the file sink decides by.
    #[derive(serde::Deserialize)]
    struct Head {
        status: Status,
    }
    let entries = engine.store().outbox(next, 4096)?;
    let Some(&(last, _)) = entries.last() else {
        return Ok(None);
    };
    for (_, bytes) in &entries {
        match serde_json::from_slice::<Head>(bytes) {
            Ok(h) if h.status != Status::Deferred => {
                buf.extend_from_slice(bytes);
                buf.push(b'\n');
            }
            _ => {}
        }
    }
    Ok(Some((last, entries.len())))
}

/// How a sink is named in metrics, logs and dead letters: a webhook's URL
/// without its credentials (`user:secret@`) and query (`?token=...`),
/// which `/metrics` and the logs must never show.
pub fn sink_label(sink: &Sink) -> String {
    match sink {
        Sink::File { path } => format!("file:{}", path.display()),
        Sink::Webhook { url } => {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let path = path.split(['?', '#']).next().unwrap_or("");
            format!("webhook:{scheme}://{host}{path}")
        }
        Sink::Plugin { plugin } => format!("plugin:{plugin}"),
        Sink::Stream => "stream:nudge.effects".to_string(),
    }
}

/// Removes the outbox entries every sink of the config has delivered (with
/// no sink, those past `storage.outbox_retention`). A sink taken out of the
/// config holds back what it has not delivered, for
/// `storage.outbox_retention` of event time after it was left out, should
/// it come back.
pub fn trim_delivered<S: Store>(engine: &mut Engine<S>) -> Result<(), SinkError> {
    let mut upto = if engine.schema.sinks.is_empty() {
        retention_floor(engine)?
    } else {
        let mut upto = u64::MAX;
        for s in &engine.schema.sinks {
            let cursor = engine
                .store()
                .meta_u64(&crate::store::keys::sink_cursor(s))?;
            upto = upto.min(cursor);
        }
        upto
    };
    let newest = engine.newest_day();
    let retention = engine.schema.outbox_retention_days;
    for o in left_out(engine)? {
        if !o.expired(newest, retention) {
            upto = upto.min(o.cursor);
        }
    }
    if upto == 0 || upto == u64::MAX {
        return Ok(());
    }
    engine.delivered(Some(upto), Vec::new())?;
    Ok(())
}

/// A sink whose cursor is in the store but which the config leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftOut {
    /// What logs may show of it (no credentials).
    pub label: String,
    cursor_key: String,
    cursor: u64,
    /// Effects after its cursor still in the outbox.
    pub pending: u64,
    /// Effects after its cursor, including those already gone.
    pub missed: u64,
    /// The newest event's day when it was first found left out.
    pub since: Option<i32>,
}

impl LeftOut {
    /// Left out for longer than the retention (in event time): what it
    /// has not delivered goes.
    fn expired(&self, newest: Option<i32>, retention: i32) -> bool {
        matches!((self.since, newest), (Some(since), Some(n)) if n - since > retention)
    }

    /// The last day its effects are kept, when it is known.
    pub fn kept_until(&self, retention: i32) -> Option<String> {
        self.since
            .map(|d| crate::base::time::day_string(d + retention))
    }
}

/// Gives each configured sink its cursor in the store (so that, left out
/// of the config later, its pending effects are known and kept), marks
/// since when each sink the config leaves out is left out, forgets those
/// left out for longer than `storage.outbox_retention`, and returns the
/// ones left out that still have effects pending.
pub fn register_sinks<S: Store>(engine: &mut Engine<S>) -> Result<LeftOutSinks, SinkError> {
    let mut meta = Vec::new();
    let mut removed = Vec::new();
    // A new sink starts at the oldest effect still kept (what starting
    // at 0 meant), so that counts of what it has pending are true.
    let first = first_kept(engine)?;
    for s in &engine.schema.sinks {
        let key = crate::store::keys::sink_cursor(s);
        if engine.store().meta(&key)?.is_none() {
            meta.push((key.clone(), first.to_le_bytes().to_vec()));
        }
        // Back in the config: a later removal starts its own wait.
        if engine
            .store()
            .meta(&crate::store::keys::sink_left(&key))?
            .is_some()
        {
            removed.push(crate::store::keys::sink_left(&key));
        }
    }
    let newest = engine.newest_day();
    let retention = engine.schema.outbox_retention_days;
    let mut sinks = LeftOutSinks::default();
    let next = engine.store().meta_u64(crate::store::keys::OUTBOX_NEXT)?;
    for mut o in left_out(engine)? {
        o.pending = next.saturating_sub(o.cursor.max(first));
        if o.expired(newest, retention) {
            removed.push(crate::store::keys::sink_left(&o.cursor_key));
            removed.push(o.cursor_key.clone());
            sinks.forgotten.push(o);
            continue;
        }
        if o.since.is_none()
            && let Some(day) = newest
        {
            meta.push((
                crate::store::keys::sink_left(&o.cursor_key),
                day.to_le_bytes().to_vec(),
            ));
            o.since = Some(day);
        }
        if o.pending > 0 {
            sinks.kept.push(o);
        }
    }
    if !meta.is_empty() {
        engine.delivered(None, meta)?;
    }
    if !removed.is_empty() {
        engine.remove_meta(removed)?;
    }
    Ok(sinks)
}

/// What [`register_sinks`] found of the sinks the config leaves out.
#[derive(Debug, Default)]
pub struct LeftOutSinks {
    /// Left out, with effects kept for them.
    pub kept: Vec<LeftOut>,
    /// Left out for longer than the retention: forgotten now, and the
    /// effects they had not delivered (`missed`) went.
    pub forgotten: Vec<LeftOut>,
}

/// The sequence number of the oldest outbox entry still kept (the next
/// one when the outbox is empty).
fn first_kept<S: Store>(engine: &Engine<S>) -> Result<u64, SinkError> {
    let next = engine.store().meta_u64(crate::store::keys::OUTBOX_NEXT)?;
    Ok(engine
        .store()
        .outbox(0, 1)?
        .first()
        .map_or(next, |(seq, _)| *seq))
}

/// Every sink cursor in the store (key and next entry), the config's sinks
/// and those it left out alike.
pub fn sink_cursors<S: Store>(store: &S) -> Result<Vec<(String, u64)>, StoreError> {
    Ok(store
        .meta_prefix(crate::store::keys::SINK_PREFIX, 4096)?
        .into_iter()
        .filter(|(key, _)| crate::store::keys::sink_of_cursor(key).is_some())
        .map(|(key, v)| {
            let cursor = v.as_slice().try_into().map_or(0, u64::from_le_bytes);
            (key, cursor)
        })
        .collect())
}

/// The stored sink cursors the config has no sink for.
fn left_out<S: Store>(engine: &Engine<S>) -> Result<Vec<LeftOut>, SinkError> {
    let configured: Vec<String> = engine
        .schema
        .sinks
        .iter()
        .map(crate::store::keys::sink_cursor)
        .collect();
    let next = engine.store().meta_u64(crate::store::keys::OUTBOX_NEXT)?;
    let mut out = Vec::new();
    for (key, cursor) in sink_cursors(engine.store())? {
        if configured.contains(&key) {
            continue;
        }
        let label = match crate::store::keys::sink_of_cursor(&key) {
            Some(("file", path)) => sink_label(&Sink::File { path: path.into() }),
            Some(("webhook", url)) => sink_label(&Sink::Webhook { url: url.into() }),
            Some((kind, name)) => format!("{kind}:{name}"),
            None => key.clone(),
        };
        out.push(LeftOut {
            label,
            since: engine
                .store()
                .meta_day(&crate::store::keys::sink_left(&key))?,
            cursor_key: key,
            cursor,
            // Set by `register_sinks`, which reads where the outbox starts
            // (this runs after every commit, and that read costs).
            pending: 0,
            missed: next.saturating_sub(cursor),
        });
    }
    Ok(out)
}

/// The first outbox entry within `storage.outbox_retention` days of event
/// time before the newest event seen. Entries are in commit order, which
/// follows event time closely enough to stop at the first one still kept.
fn retention_floor<S: Store>(engine: &Engine<S>) -> Result<u64, SinkError> {
    let Some(newest) = engine.newest_day() else {
        return Ok(0);
    };
    let cutoff = newest - engine.schema.outbox_retention_days;
    let mut below = 0;
    // This runs after every commit and mostly finds the oldest entry still
    // kept: look at that one first (decoding a page of effects per commit
    // halved the daemon's HTTP ingest).
    let mut page = 1;
    'scan: loop {
        let entries = engine.outbox(below, page)?;
        page = 1024;
        if entries.is_empty() {
            break;
        }
        for (seq, e) in entries {
            let day =
                e.at.parse::<jiff::Timestamp>()
                    .map_or(i32::MAX, crate::base::time::utc_day);
            if day >= cutoff {
                break 'scan;
            }
            below = seq + 1;
        }
    }
    Ok(below)
}

/// One effect as a JSON line.
pub fn write_line(buf: &mut Vec<u8>, e: &Effect) {
    if serde_json::to_writer(&mut *buf, e).is_ok() {
        buf.push(b'\n');
    }
}

/// Drains the outbox to each of the config's file sinks, handing each
/// sink's result to `on_sink` (one failing file does not hold back the
/// others), then drops what every sink has (webhook and plugin sinks are
/// delivered by the daemon).
pub fn drain_file_sinks<S: Store>(
    engine: &mut Engine<S>,
    on_sink: &mut dyn FnMut(&Sink, Result<usize, SinkError>),
) -> Result<(), SinkError> {
    let schema = engine.schema.clone();
    for sink in &schema.sinks {
        if let Sink::File { path } = sink {
            on_sink(sink, drain_to_file(engine, path));
        }
    }
    trim_delivered(engine)
}

/// [`drain_file_sinks`], failing with the first sink's error: how many
/// effects were written.
pub fn deliver_to_files<S: Store>(engine: &mut Engine<S>) -> Result<usize, SinkError> {
    let (mut n, mut first) = (0, None);
    drain_file_sinks(engine, &mut |_, r| match r {
        Ok(k) => n += k,
        Err(e) => {
            first.get_or_insert(e);
        }
    })?;
    first.map_or(Ok(n), Err)
}
