//! The subcommands that have no module of their own: `run`, `ingest`,
//! `replay`, `import`, `test`, `init`, `fmt`, `member`, `explain` (`check`
//! is `main`'s; `export` and `import-state` are in `backup`). Each loads the rules (printing diagnostics if they do not load), does
//! its work through the library, and prints a summary.

use crate::Common;
use crate::cli::render;
use nudge::config::Schema;
use nudge::daemon::watcher::WatchMode;
use nudge::engine::Engine;
use nudge::lang::RuleSet;
use nudge::model::Effect;
use nudge::project::load::load;
use nudge::store::{SledStore, Store};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Loads config, rules and plugins; on errors prints them and gives the exit code.
type Loaded = (
    Arc<Schema>,
    Arc<RuleSet>,
    Option<Arc<nudge::plugins::Plugins>>,
);

pub(super) fn load_rules(common: &Common) -> Result<Loaded, ExitCode> {
    let loaded = load(&common.load_options());
    if loaded.errors() > 0 || loaded.io_failure {
        eprint!("{}", render::human(&loaded, common.color_on()));
        return Err(ExitCode::from(if loaded.io_failure { 2 } else { 1 }));
    }
    match (loaded.schema, loaded.rules) {
        (Some(s), Some(r)) => Ok((Arc::new(s), Arc::new(r), loaded.plugins)),
        _ => Err(ExitCode::from(1)),
    }
}

/// The data folder's path; it must exist unless the command may `make` it.
pub(super) fn data_folder(
    common: &Common,
    schema: &Schema,
    make: bool,
) -> Result<PathBuf, ExitCode> {
    let path = common
        .data
        .clone()
        .unwrap_or_else(|| schema.paths.data.clone());
    if !make && !path.exists() {
        return Err(fail(format!(
            "no data folder at {} (`nudge ingest` or `nudge run` makes one; check `--data` or the config's `paths.data`)",
            path.display()
        )));
    }
    Ok(path)
}

/// The data folder as one store for reading every member, whatever its
/// partitions (`store::folder::Folder`).
pub(super) fn open_folder(
    common: &Common,
    schema: &Schema,
) -> Result<nudge::store::folder::Folder, ExitCode> {
    let path = data_folder(common, schema, false)?;
    nudge::store::folder::refuse_to_make(&path, schema.partitions).map_err(fail)?;
    let parts = nudge::store::folder::open_partitions(&path, schema.partitions, schema.cache_bytes)
        .map_err(|e| {
            let locked = matches!(e, nudge::store::StoreError::Locked { .. });
            let code = fail(e);
            if locked {
                // These commands only read: the daemon holding the folder
                // answers the same questions.
                eprintln!(
                    "hint: a running `nudge run` answers over HTTP: GET /v1/members/ID and /v1/members/ID/explain, POST /v1/segments/count and /v1/segments/export (docs/operations.md)"
                );
            }
            code
        })?;
    Ok(nudge::store::folder::Folder { parts })
}

/// What a write does to a folder of an older store format, said before it.
pub(super) fn older_format_note(path: &std::path::Path, older: u32) -> String {
    format!(
        "note: the data folder {} is of store format {older}; this command's first write makes it format {}, which the nudge that wrote it cannot open (to keep a way back, take `nudge export` with that nudge first: this one restores it too)",
        path.display(),
        nudge::store::FORMAT_VERSION
    )
}

fn progress(total: Option<u64>, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let style = indicatif::ProgressStyle::with_template(&format!(
        "{{spinner}} {what} {{pos}}/{{len}} [{{elapsed}}] {{per_sec}}"
    ))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Prints an I/O or storage error; exit code 2.
pub(super) fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

/// The day a command-line option names (`--at 2026-02-14`), or what is
/// wrong with it.
pub(super) fn day_arg(option: &str, text: &str) -> Result<i32, String> {
    nudge::base::time::parse_date(text).ok_or_else(|| {
        format!("{option} takes a calendar day, YYYY-MM-DD (like 2026-02-14), not `{text}`")
    })
}

/// The exit code either way: commands stop early with `?`.
pub(super) fn code(r: Result<ExitCode, ExitCode>) -> ExitCode {
    r.unwrap_or_else(|c| c)
}

/// What `nudge replay` is asked to do besides replaying.
pub struct ReplayOptions<'a> {
    pub events: &'a Path,
    pub until: Option<&'a str>,
    pub out: Option<&'a Path>,
    /// Another rules folder to replay and compare with.
    pub compare: Option<&'a Path>,
    /// Fail (exit 1) when B's coupon cost exceeds A's by more than this percentage.
    pub fail_if_cost_increase: Option<&'a str>,
    pub report: Option<&'a Path>,
    /// Check the repurchase model on the history after this day.
    pub holdout_from: Option<&'a str>,
}

pub fn replay(common: &Common, o: &ReplayOptions<'_>) -> ExitCode {
    code(replay_inner(common, o))
}

// Long because the command's steps in the order it runs them (load, replay, compare, report), each a few lines.
fn replay_inner(common: &Common, o: &ReplayOptions<'_>) -> Result<ExitCode, ExitCode> {
    let (schema, rules, plugins) = load_rules(common)?;
    let until = match o.until {
        Some(u) => Some(day_arg("--until", u).map_err(fail)?),
        None => None,
    };
    let holdout_from = match o.holdout_from {
        Some(d) => Some(day_arg("--holdout-from", d).map_err(fail)?),
        None => None,
    };
    let limit = match o.fail_if_cost_increase {
        Some(p) => Some(
            rust_decimal::Decimal::from_str_exact(p.trim().trim_end_matches('%'))
                .map_err(|_| fail("--fail-if-cost-increase takes a percentage, like 10%"))?,
        ),
        None => None,
    };
    let file = std::fs::File::open(o.events)
        .map_err(|e| fail(format!("cannot read {}: {e}", o.events.display())))?;
    let (evs, invalid) = nudge::io::ingest::read_all(&schema, std::io::BufReader::new(file));
    for e in invalid.iter().take(20) {
        eprintln!("error: {e} (skipped)");
    }
    let purchases = nudge::sim::backtest::purchases(&schema, &evs);
    let other = match o.compare {
        Some(dir) => Some(load_rules(&Common {
            rules: Some(dir.to_path_buf()),
            ..common.clone()
        })?),
        None => None,
    };
    let events_b = other.as_ref().map(|_| evs.clone());
    let start = std::time::Instant::now();
    let r = run_replay(
        &schema,
        rules.clone(),
        plugins,
        evs,
        until,
        common.data.as_deref(),
    )?;
    let elapsed = start.elapsed();
    if let Some(out) = o.out {
        write_effects(out, &r.effects)
            .map_err(|e| fail(format!("cannot write {}: {e}", out.display())))?;
    }
    println!(
        "events: {} applied, {} duplicates, {} invalid, {} rejected; {} daily ticks",
        r.applied,
        r.duplicates,
        invalid.len(),
        r.rejected.len(),
        r.ticks
    );
    let summary = nudge::model::summary::summarize(&r.effects);
    print!("{}", render::summary(&summary));
    let uplift = nudge::sim::backtest::uplift(
        &r.effects,
        &purchases,
        schema.attribution_days,
        &nudge::sim::backtest::arm_order(&rules),
    );
    print!("{}", render::uplift(&uplift, schema.attribution_days));
    let speed = format!(
        "replayed in {:.2} s ({:.0} events/s, {:.0} member-days/s)",
        elapsed.as_secs_f64(),
        r.applied as f64 / elapsed.as_secs_f64().max(1e-9),
        r.member_days as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    let mut status = if invalid.is_empty() && r.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    let mut comparison = None;
    if let (Some((_, rules_b, plugins_b)), Some(evs)) = (other, events_b) {
        let rb = run_replay(&schema, rules_b, plugins_b, evs, until, None)?;
        let c = nudge::sim::backtest::compare(&r.effects, &rb.effects);
        print!("{}", render::comparison(&c));
        if let (Some(limit), Some(change)) = (limit, c.cost_change_percent())
            && change > limit
        {
            eprintln!(
                "error: coupon cost rose by {}% (limit {}%)",
                change.round_dp(1),
                limit
            );
            status = ExitCode::from(1);
        }
        comparison = Some(c);
    }
    let holdout =
        super::holdout::holdout(holdout_from, &schema, &purchases, until).map_err(fail)?;
    if let Some(path) = o.report {
        let html = nudge::report::html::report(&nudge::report::html::ReportInput {
            holdout: holdout.as_ref(),
            schema: &schema,
            effects: &r.effects,
            purchases: &purchases,
            summary: &summary,
            uplift: &uplift,
            comparison: comparison.as_ref(),
            title: &format!("nudge replay of {}", o.events.display()),
        });
        std::fs::write(path, html)
            .map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        eprintln!("report: {}", path.display());
    }
    eprintln!("{speed}");
    Ok(status)
}

/// Replays `events` in a fresh temporary store (or in the empty data
/// folder `keep`, for `nudge explain` and `nudge member` afterwards), with
/// a progress bar.
fn run_replay(
    schema: &Arc<Schema>,
    rules: Arc<RuleSet>,
    plugins: Option<Arc<nudge::plugins::Plugins>>,
    events: Vec<nudge::model::Event>,
    until: Option<i32>,
    keep: Option<&Path>,
) -> Result<nudge::sim::replay::Replayed, ExitCode> {
    let store = match keep {
        Some(dir) => {
            let s = SledStore::open(dir).map_err(fail)?;
            if !s.member_ids().map_err(fail)?.is_empty() {
                return Err(fail(format!(
                    "{} already holds members: replay needs an empty data folder (or none)",
                    dir.display()
                )));
            }
            s
        }
        None => SledStore::temporary().map_err(fail)?,
    };
    let mut engine = Engine::new(schema.clone(), rules, store)
        .map_err(fail)?
        .with_plugins(plugins)
        .cache_members();
    let bar = progress(Some(events.len() as u64), "events");
    let result = nudge::sim::replay::replay(&mut engine, events, until, &mut |n| {
        bar.set_position(n as u64)
    });
    bar.finish_and_clear();
    result.map_err(fail)
}

fn write_effects(path: &Path, effects: &[Effect]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for e in effects {
        nudge::outbox::write_line(&mut buf, e);
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(&buf)?;
    f.sync_all()
}

pub fn import(common: &Common, input: &Path, mapping: &Path, out: Option<&Path>) -> ExitCode {
    code(import_inner(common, input, mapping, out))
}

fn import_inner(
    common: &Common,
    input: &Path,
    mapping: &Path,
    out: Option<&Path>,
) -> Result<ExitCode, ExitCode> {
    let (schema, _, _) = load_rules(common)?;
    let text = std::fs::read_to_string(mapping)
        .map_err(|e| fail(format!("cannot read {}: {e}", mapping.display())))?;
    let mapping =
        match nudge::io::import::parse_mapping(&mapping.display().to_string(), &text, &schema) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                return Err(ExitCode::from(1));
            }
        };
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(input)
            .map_err(|e| fail(format!("cannot read {}: {e}", input.display())))?;
        Box::new(std::io::BufReader::new(f))
    };
    let writer: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .map_err(|e| fail(format!("cannot write {}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let r = nudge::io::import::import(&schema, &mapping, reader, writer).map_err(fail)?;
    for e in r.invalid.iter().take(20) {
        eprintln!("error: {e} (left out)");
    }
    if r.invalid.len() > 20 {
        eprintln!("... and {} more bad rows", r.invalid.len() - 20);
    }
    eprintln!(
        "import: {} rows, {} events, {} left out",
        r.rows,
        r.written,
        r.invalid.len()
    );
    Ok(if r.invalid.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn test(common: &Common, path: Option<PathBuf>) -> ExitCode {
    let path = path.unwrap_or_else(|| PathBuf::from("tests/cases"));
    let files = match nudge::sim::testcase::find(&path) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => return fail(format!("no test cases (*.yaml) in {}", path.display())),
        Err(e) => return fail(format!("cannot read {}: {e}", path.display())),
    };
    let (mut passed, mut failed) = (0, 0);
    for f in files {
        let r = nudge::sim::testcase::run(&f, &common.config_path(), common.plugins.as_deref());
        let (path, name) = (r.path.display(), &r.name);
        match &r.outcome {
            nudge::sim::testcase::CaseOutcome::Pass { effects } => {
                passed += 1;
                println!("ok   {path} ({name}): {effects} effects");
            }
            nudge::sim::testcase::CaseOutcome::Fail { diff } => {
                failed += 1;
                println!("FAIL {path} ({name})");
                println!("     expected effects (-) and actual effects (+):");
                for (mark, line) in diff {
                    println!("     {mark} {line}");
                }
            }
            nudge::sim::testcase::CaseOutcome::Error(e) => {
                failed += 1;
                println!("FAIL {path} ({name})\n     {}", e.replace('\n', "\n     "));
            }
        }
        if let Some(last) = &r.last_plugin_failure {
            let n = r.plugin_failures;
            let calls = if n == 1 { "call" } else { "calls" };
            println!("     {n} plugin {calls} failed; the last: {last}");
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub fn init(dir: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from("."));
    match nudge::project::init::init(&dir) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
            let cd = if dir == Path::new(".") {
                String::new()
            } else {
                format!("cd {} && ", dir.display())
            };
            println!("next: {cd}nudge check && nudge test");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

pub fn member(common: &Common, id: &str) -> ExitCode {
    code(member_inner(common, id))
}

fn member_inner(common: &Common, id: &str) -> Result<ExitCode, ExitCode> {
    // A member's state needs the config, not the rules: a missing or
    // broken rules folder must not hide it. The rules, when they load,
    // name the member's rule states (as `GET /v1/members/ID` does).
    let full = load(&common.load_options());
    let loaded = if full.errors() == 0 && !full.io_failure && full.rules.is_some() {
        full
    } else {
        eprintln!(
            "note: the rules do not load (`nudge check` says why): rule states are shown by their ids, not their names"
        );
        load(&nudge::project::load::LoadOptions {
            config_only: true,
            ..common.load_options()
        })
    };
    if loaded.errors() > 0 || loaded.io_failure {
        eprint!("{}", render::human(&loaded, common.color_on()));
        return Err(ExitCode::from(2));
    }
    let (Some(schema), Some(rules)) = (loaded.schema, loaded.rules) else {
        return Err(ExitCode::from(2));
    };
    let (schema, rules) = (Arc::new(schema), Arc::new(rules));
    // Every partition: an identifier or a merged member's id is found in
    // the partition of the member it leads to.
    let store = open_folder(common, &schema)?;
    // Tier names come from the config by position: refuse to show them
    // through a list that would re-map them (as the engine refuses).
    if let Some(why) = nudge::engine::tier_change(&store, &schema.tiers).map_err(fail)? {
        return Err(fail(why));
    }
    match nudge::engine::identity::find_member(&store, id).map_err(fail)? {
        Some((id, rec)) => {
            println!(
                "{}",
                nudge::report::member::member_json(
                    &id,
                    &rec,
                    &schema,
                    &rules,
                    nudge::engine::predict::load(&store).map_err(fail)?.as_ref(),
                    nudge::engine::predict::as_of(
                        &store,
                        nudge::engine::clock::local_day(
                            &schema,
                            nudge::engine::clock::Clock::now(&nudge::engine::clock::SystemClock),
                        ),
                    ),
                )
            );
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("error: no member `{id}`");
            Ok(ExitCode::from(1))
        }
    }
}

pub fn explain(
    common: &Common,
    id: &str,
    rule: Option<&str>,
    at: Option<&str>,
    json: bool,
) -> ExitCode {
    code(explain_inner(common, id, rule, at, json))
}

fn explain_inner(
    common: &Common,
    id: &str,
    rule: Option<&str>,
    at: Option<&str>,
    json: bool,
) -> Result<ExitCode, ExitCode> {
    let (schema, rules, plugins) = load_rules(common)?;
    let folder = open_folder(common, &schema)?;
    let Some((id, rec)) = nudge::engine::identity::find_member(&folder, id).map_err(fail)? else {
        eprintln!("error: no member `{id}`");
        return Ok(ExitCode::from(1));
    };
    let store = folder.of(&id).clone();
    if let Some(d) = at {
        // Records hold the present: an earlier day would be answered wrong.
        nudge::engine::segment::check_day(&store, day_arg("--at", d).map_err(fail)?)
            .map_err(fail)?;
    }
    let fit = nudge::engine::predict::load(&store).map_err(fail)?;
    let last_tick = Engine::new(schema.clone(), rules.clone(), store)
        .map_err(fail)?
        .last_tick()
        .map_err(fail)?;
    let (day, as_of) = match at {
        Some(d) => (day_arg("--at", d).map_err(fail)?, "as asked"),
        None => match last_tick {
            Some(d) => (d, "the last daily tick"),
            None => (
                nudge::engine::clock::local_day(
                    &schema,
                    nudge::engine::clock::Clock::now(&nudge::engine::clock::SystemClock),
                ),
                "today",
            ),
        },
    };
    match nudge::sim::explain::explain(
        &schema,
        &rules,
        plugins.as_deref(),
        &id,
        &rec,
        day,
        rule,
        fit.as_ref(),
    ) {
        Ok(x) if json => {
            println!("{}", serde_json::json!(x));
            Ok(ExitCode::SUCCESS)
        }
        Ok(x) => {
            print!("{}", render::explanation(&x, as_of));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `nudge run`'s cluster options.
#[derive(clap::Args, Debug)]
pub struct ClusterArgs {
    /// Join a cluster: the NATS JetStream server URLs, comma-separated
    /// (docs/cluster.md). Without it the node runs alone.
    #[arg(long, value_name = "URL")]
    cluster: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long, requires = "cluster")]
    node: Option<String>,
    /// How long a partition's lease lasts without renewal, in seconds
    /// (1 to 600).
    #[arg(long, default_value_t = 10.0, requires = "cluster", value_parser = lease_seconds)]
    lease: f64,
    /// Replicas of nudge's streams and buckets on the NATS cluster.
    #[arg(long, default_value_t = 1, requires = "cluster")]
    replicas: usize,
    /// Events a partition's holder applies between two snapshots of it to
    /// the cluster's object store (0: none).
    #[arg(
        long,
        default_value_t = 100_000,
        requires = "cluster",
        value_name = "EVENTS"
    )]
    snapshot_every: u64,
    /// Minutes after which a partition with events since its last
    /// snapshot gets one, however few.
    #[arg(
        long,
        default_value_t = 60,
        requires = "cluster",
        value_name = "MINUTES"
    )]
    snapshot_minutes: u64,
}

/// `--lease`: seconds, 1 to 600 (refused outside, not bent into it).
fn lease_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (1.0..=600.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds from 1 to 600")),
    }
}

impl ClusterArgs {
    pub fn options(self) -> Option<nudge::cluster::ClusterOptions> {
        let urls = self.cluster?;
        Some(nudge::cluster::ClusterOptions {
            urls,
            node: self.node.unwrap_or_else(host_name),
            lease: std::time::Duration::from_secs_f64(self.lease.clamp(1.0, 600.0)),
            replicas: self.replicas,
            snapshot_every: self.snapshot_every,
            snapshot_at_most: std::time::Duration::from_secs(self.snapshot_minutes.max(1) * 60),
        })
    }
}

/// This machine's name, for a cluster node not given `--node`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| {
            h.trim()
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_")
        })
        .unwrap_or_else(|_| "node".into())
}

pub fn run(
    common: &Common,
    listen: Option<String>,
    watch: WatchMode,
    cluster: Option<nudge::cluster::ClusterOptions>,
) -> ExitCode {
    let opts = nudge::daemon::DaemonOptions {
        cluster,
        load: common.load_options(),
        data: common.data.clone(),
        listen,
        tick_every: std::time::Duration::from_secs(30),
        watch,
        // Tests and scripts read this line to find the port.
        on_listen: |addr| println!("nudge listening on http://{addr}"),
    };
    match nudge::daemon::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(nudge::daemon::DaemonError::Rules(loaded)) => {
            eprint!("{}", render::human(&loaded, common.color_on()));
            ExitCode::from(if loaded.io_failure { 2 } else { 1 })
        }
        Err(e) => fail(e),
    }
}

/// The config's paths, or the load that says why the config is bad. The
/// rules need not load: a backup or a format must work while they are
/// broken.
pub(super) fn config_paths(
    common: &Common,
) -> Result<nudge::config::Paths, Box<nudge::project::load::Load>> {
    let loaded = load(&common.load_options());
    match loaded.schema {
        Some(s) => Ok(s.paths),
        None => Err(Box::new(loaded)),
    }
}

/// The data folder: `--data`, or the config's `paths.data`.
pub fn fmt(common: &Common, paths: Vec<PathBuf>, check: bool) -> ExitCode {
    code(fmt_inner(common, paths, check))
}

fn fmt_inner(common: &Common, paths: Vec<PathBuf>, check: bool) -> Result<ExitCode, ExitCode> {
    let paths = if paths.is_empty() {
        vec![rules_path(common)]
    } else {
        paths
    };
    let mut files = Vec::new();
    for p in &paths {
        rule_files(p, &mut files).map_err(|e| fail(format!("cannot read {}: {e}", p.display())))?;
    }
    let (mut changed, mut broken) = (0, 0);
    for file in files {
        // As the loader reads: regular files only, capped (a FIFO once hung
        // `nudge fmt`), line terminators and a BOM normalised; the file is
        // rewritten when it differs from the canonical text as saved.
        let raw = nudge::project::load::read_capped(&file).map_err(|d| fail(d.message))?;
        let raw = String::from_utf8(raw)
            .map_err(|_| fail(format!("{} is not UTF-8 text", file.display())))?;
        let text = nudge::project::load::normalize(raw.clone());
        let mut sources = nudge::base::diag::SourceMap::default();
        let id = sources.add(&file, text.clone());
        let stem = file
            .file_stem()
            .map_or(String::new(), |s| s.to_string_lossy().into_owned());
        let formatted = match nudge::lang::print::format_file(id, &text, &stem) {
            Ok(f) => f,
            Err(diagnostics) => {
                let shown = nudge::project::load::Load {
                    sources,
                    diagnostics,
                    schema: None,
                    rules: None,
                    plugins: None,
                    io_failure: false,
                };
                eprint!("{}", render::human(&shown, common.color_on()));
                broken += 1;
                continue;
            }
        };
        if formatted == raw {
            continue;
        }
        // Never write a file whose rules would read differently.
        let (before, _) = nudge::lang::parse::parse_file(id, &text, &stem);
        let (after, diags) = nudge::lang::parse::parse_file(id, &formatted, &stem);
        if !diags.is_empty() || !nudge::lang::print::same_rules(&before.rules, &after.rules) {
            return Err(fail(format!(
                "formatting {} would change its rules; it is left as it is (please report this)",
                file.display()
            )));
        }
        changed += 1;
        if check {
            println!("not formatted: {}", file.display());
        } else {
            write_replacing(&file, &formatted)
                .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
            println!("formatted: {}", file.display());
        }
    }
    Ok(if broken > 0 || (check && changed > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `--rules`, or the config's `paths.rules`, or `rules`.
fn rules_path(common: &Common) -> PathBuf {
    if let Some(r) = &common.rules {
        return r.clone();
    }
    config_paths(common).map_or_else(|_| PathBuf::from("rules"), |p| p.rules)
}

/// `.rules` files under `p` (or `p` itself), sorted; YAML rules are left alone.
fn rule_files(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !p.is_dir() {
        // YAML rule files are left as written, also when named.
        if !p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p.to_path_buf());
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for e in entries {
        if e.is_dir() {
            rule_files(&e, out)?;
        } else if e.extension().is_some_and(|x| x == "rules") {
            out.push(e);
        }
    }
    Ok(())
}

/// Writes through a temporary file in the same folder and a rename, so a
/// watching daemon never reads half a file.
fn write_replacing(file: &Path, text: &str) -> std::io::Result<()> {
    let name = file
        .file_name()
        .map_or_else(Default::default, |n| n.to_string_lossy().into_owned());
    let tmp = file.with_file_name(format!(".{name}.fmt.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, file)
}
