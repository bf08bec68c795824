//! Every key and meta name the data folder holds, in one place. Keys are
//! a one-byte prefix and a name; meta values are little-endian numbers or
//! JSON. Renaming any of these strands existing data folders: they are the
//! on-disk format (see `FORMAT_VERSION`).

use crate::config::Sink;
use std::path::Path;

/// Key prefixes, one per kind of entry.
pub const MEMBER: u8 = b'm';
/// Seen event ids (the event's body hash), for dedup: under the UTC day
/// of the event's time, then the id (see `seen`), so the days that fall
/// out of the dedup window go a key range at a time.
pub const SEEN: u8 = b's';
/// Outbox batches by first sequence number (big-endian, so key order is
/// sequence order).
pub const OUTBOX: u8 = b'o';
/// One ID: identifier or alias -> member.
pub const IDENTITY: u8 = b'i';
/// Named values below.
pub const META: u8 = b'x';

/// The data folder's format number (named before formats were called
/// formats).
pub const FORMAT: &str = "schema_version";
/// The number of the last commit (checked against `nudge.commit`).
pub const COMMIT_SEQ: &str = "commit_seq";
/// The next outbox sequence number.
pub const OUTBOX_NEXT: &str = "outbox_next";
/// The last day the daily tick ran.
pub const LAST_TICK: &str = "last_tick";
/// The number of members in the store.
pub const MEMBERS: &str = "members";
/// The config's tier list the members' tiers refer to (by position).
pub const TIERS: &str = "tiers";
/// The number of One ID merges so far.
pub const MERGES: &str = "merges";
/// Aliases written (a merged member's id, or a named member that turned
/// out to be another): while there are none, no event needs a lookup.
pub const ALIASES: &str = "aliases";
/// Deferred effects: `defer:` + due time + outbox sequence, so key order is
/// due order.
pub const DEFERRED_PREFIX: &str = "defer:";

/// The tick's due index as it was at a clean stop (see
/// `engine::due`): the version of the rules it was built under and every
/// member's due day. Empty once an engine has taken it up, so a crash
/// after that never brings back a stale one.
pub const DUE_SNAPSHOT: &str = "due_snapshot";

/// A day as a u32 whose big-endian bytes sort in day order.
fn flip(day: i32) -> u32 {
    (day as u32) ^ 0x8000_0000
}

/// The first day (UTC) whose seen markers are all kept: the dedup window
/// never starts before it.
pub const SEEN_FLOOR: &str = "seen_floor";

/// The last UTC day whose event ids a folder of store format 3 may hold as
/// markers of their own (its newest event day when this nudge first wrote
/// it): their redeliveries are looked up there.
pub const SEEN_MARKERS_UNTIL: &str = "seen_markers_until";

/// The repurchase models' fit (`nudge fit`): JSON of `predict::Fit`.
pub const MODEL: &str = "model";

/// This data folder's id (made at its first file sink drain): file sinks
/// name their owner with it (`PATH.owner`). A backup restored keeps it.
pub const FOLDER_ID: &str = "folder_id";

/// Which partition of its data folder a store is, as `K/N` (only in a
/// folder of more than one; see `store::folder`).
pub const PARTITION: &str = "partition";

/// Set while a partition's contents are being replaced by a snapshot
/// (cluster mode): a store opened with it is cleared, since a crash cut
/// the replacement short.
pub const REPLACING: &str = "replacing";

/// Cluster mode: the last sequence of the events stream the partition
/// applied, written in the commit that applied it.
pub const STREAM_SEQ: &str = "stream_seq";
/// Cluster mode, One ID: the sequence in partition 0's stream of the last
/// entry partition 0 routed to this partition that it applied (a new
/// holder of partition 0 routes its stream again from its snapshot).
pub const ROUTED_THROUGH: &str = "routed_through";
/// The newest event day seen (UTC): the dedup window ends there.
pub const NEWEST_EVENT_DAY: &str = "newest_event_day";

/// A seen marker's key after its prefix: the day (sign-flipped, big-endian,
/// so key order is day order) and the event id.
pub fn seen(day: i32, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + id.len());
    k.push(SEEN);
    k.extend_from_slice(&flip(day).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The start of every budget's meta key.
pub const BUDGET_PREFIX: &str = "budget:";
/// The start of every reward stock's meta key.
pub const STOCK_PREFIX: &str = "stock:";

/// The identity entry, in a member's home partition, that says which
/// partition holds the member now (One ID merges move members between
/// partitions: `engine::moves`).
pub fn moved(member: &str) -> String {
    format!("moved:{member}")
}

/// The start of the meta key of a member moved in, kept until the
/// partition it came from has let it go.
pub const MOVING_PREFIX: &str = "moving:";

/// The start of every stored relay's meta key.
pub const RELAY_OUT_PREFIX: &str = "relay_out:";

/// A relay for a member of another partition, stored by the sender's
/// partition until the recipient's has applied it (`engine::relay`).
pub fn relay_out(effect_key: &str) -> String {
    format!("{RELAY_OUT_PREFIX}{effect_key}")
}

/// What a rule's budget has spent in one period.
pub fn budget(rule: &str, period: &str) -> String {
    format!("{BUDGET_PREFIX}{rule}:{period}")
}

/// How many of a points-mall reward have gone, of its stock.
pub fn stock(reward: &str) -> String {
    format!("{STOCK_PREFIX}{reward}")
}

/// The next outbox entry a sink has not delivered.
pub fn sink_cursor(sink: &Sink) -> String {
    match sink {
        Sink::File { path } => file_cursor(path),
        Sink::Webhook { url } => format!("sink:webhook:{url}:next"),
        Sink::Plugin { plugin } => format!("sink:plugin:{plugin}:next"),
        Sink::Stream => "sink:stream:nudge.effects:next".to_string(),
    }
}

/// The cursor of a file sink (also used by `nudge ingest --effects`).
pub fn file_cursor(path: &Path) -> String {
    format!("sink:file:{}:next", path.display())
}

/// The bytes a file sink's file held at its last commit (a torn write
/// past it is cut off on the next start).
pub fn file_len(path: &Path) -> String {
    format!("sink:file:{}:len", path.display())
}

/// Where every sink's cursor and file length start.
pub const SINK_PREFIX: &str = "sink:";

/// The sink a cursor key names, as `kind` and what follows it (`file`
/// and the path, `webhook` and the URL, `plugin` and its name), when the
/// key is a cursor.
pub fn sink_of_cursor(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(SINK_PREFIX)?
        .strip_suffix(":next")?
        .split_once(':')
}

/// Since when (the newest event's day) a sink has been left out of the
/// config, under its cursor key.
pub fn sink_left(cursor: &str) -> String {
    format!("{}:left", cursor.trim_end_matches(":next"))
}

/// Dead letters: outbox entries sinks gave up on.
pub const DEAD_PREFIX: &str = "dead:";

/// An outbox entry a sink gave up on, under the sink's cursor name.
pub fn dead_letter(cursor: &str, seq: u64) -> String {
    format!("{DEAD_PREFIX}{cursor}:{seq:020}")
}
