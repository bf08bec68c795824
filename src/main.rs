//! The `nudge` command line: argument parsing, and rendering diagnostics
//! (miette for people, JSON for tools). All the work is in the library.

// The command line is the one place that prints (the library returns data).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cli;

use cli::{commands, render};

use clap::{Args, Parser, Subcommand, ValueEnum};
use nudge::project::load::{LoadOptions, load};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nudge",
    version,
    about = "A rules engine for member (loyalty) marketing."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct Common {
    /// The config file [default: nudge.yaml; without one, the built-in
    /// defaults].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// The rules folder (or one rule file); overrides the config's `paths.rules`.
    #[arg(long, global = true)]
    pub rules: Option<PathBuf>,
    /// The plugins folder; overrides the config's `paths.plugins`.
    #[arg(long, global = true)]
    pub plugins: Option<PathBuf>,
    /// The data folder (member state); overrides the config's `paths.data`.
    #[arg(long, global = true)]
    pub data: Option<PathBuf>,
    /// Colours in diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum ExportFormat {
    Ndjson,
    Csv,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Watch {
    Notify,
    Poll,
}

/// What is logged without `RUST_LOG`: the daemon's info lines, only
/// warnings from the other commands (errors from `nudge test`). notify logs at info when a watched
/// file is replaced (`sed -i`): its inotify bookkeeping, not the
/// operator's business.
fn default_log_level(command: &Command) -> &'static str {
    match command {
        Command::Run { .. } => "info,notify=warn",
        // A case's plugin failures are in its report, not again in the log.
        Command::Test { .. } => "error",
        _ => "warn",
    }
}

impl From<Watch> for nudge::daemon::watcher::WatchMode {
    fn from(w: Watch) -> Self {
        match w {
            Watch::Notify => Self::Notify,
            Watch::Poll => Self::Poll,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Format {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Load the config, rules and plugins and print every diagnostic.
    Check {
        /// A rules folder or one rule file (default: the config's rules folder).
        path: Option<PathBuf>,
        /// `json` prints the diagnostics as data, for editors and CI.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Run the daemon: HTTP API, rule watcher, daily schedule, delivery.
    Run {
        /// Address to listen on (default: the config's `http.listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Log lines as text (default) or JSON.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Notice edits by the kernel's notifications, or by polling every
        /// 0.5 s (network file systems).
        #[arg(long, value_enum, default_value_t = Watch::Notify)]
        watch: Watch,
        #[command(flatten)]
        cluster: commands::ClusterArgs,
    },
    /// Process an NDJSON event file (or `-` for stdin) through the engine.
    Ingest {
        /// The event file, or `-`.
        file: PathBuf,
        /// Stop at the first malformed line instead of skipping it.
        #[arg(long)]
        stop_on_error: bool,
    },
    /// Convert a purchase export (CSV or whitespace columns) into NDJSON events.
    Import {
        /// The export file, or `-` for stdin.
        input: PathBuf,
        /// The mapping file: which column is what (see docs/backtest.md).
        #[arg(long)]
        mapping: PathBuf,
        /// Where the events go (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replay a history with a simulated clock and report what the rules did.
    Replay {
        /// The history: an NDJSON event file.
        #[arg(long)]
        events: PathBuf,
        /// Another rules folder: replay it too and report what changes.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// With --compare: exit 1 when the compared rules' coupon cost is
        /// more than this much higher (e.g. `10%`).
        #[arg(long, requires = "compare")]
        fail_if_cost_increase: Option<String>,
        /// Run the daily ticks through this day (YYYY-MM-DD).
        #[arg(long)]
        until: Option<String>,
        /// Write the effects here as NDJSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write a self-contained HTML report with charts here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Check the repurchase model on history it did not see: fit it on
        /// purchases before this day (YYYY-MM-DD), compare its weekly
        /// predictions after it with the actual purchases (printed, and
        /// charted in the report).
        #[arg(long)]
        holdout_from: Option<String>,
    },
    /// Run rule test cases (rules, events, expected effects).
    Test { path: Option<PathBuf> },
    /// Write a starting project (nudge.yaml, rules/, tests/cases/, plugins/)
    Init {
        /// The project folder (default: here); nothing in it is overwritten
        dir: Option<PathBuf>,
    },
    /// Rewrite `.rules` files in the canonical layout (comments kept)
    Fmt {
        /// Files or folders (default: the rules folder)
        paths: Vec<PathBuf>,
        /// Change nothing; list the files that are not formatted (exit 1 if any)
        #[arg(long)]
        check: bool,
    },
    /// Serve editors over stdin/stdout: the language server for rule files
    /// (diagnostics as `nudge check` gives them, completion, hover, go to
    /// definition, formatting, quick fixes)
    Lsp,
    /// Write the whole data folder to one backup file (stop the daemon first)
    Export {
        /// The backup file, or `-` for stdout
        #[arg(default_value = "-")]
        file: PathBuf,
    },
    /// Restore a backup made by `nudge export` into an empty data folder
    ImportState {
        /// The backup file
        file: PathBuf,
    },
    /// Print a member's state as JSON.
    Member { id: String },
    /// Fit the repurchase models (BG/NBD, Gamma-Gamma) on the data
    /// folder's members, histories counted to today (or `--at`), and keep
    /// the fit: rules read `p_alive`, `expected_purchases(90d)`, ...
    Fit {
        /// Count histories to this day (YYYY-MM-DD) instead of today.
        #[arg(long)]
        at: Option<String>,
    },
    /// Show the fit kept in the data folder, as JSON.
    Model,
    /// Count or export the members a condition or a named segment holds
    /// for (on today, or `--at`): `nudge segment 'tier >= gold' --count`.
    Segment {
        /// A condition of the rule language, or the name of a segment.
        query: String,
        /// Print `{"count": N, "members": TOTAL}` instead of the members.
        #[arg(long, conflicts_with_all = ["export", "fields"])]
        count: bool,
        /// Write the members to this file (else to standard output).
        #[arg(long)]
        export: Option<PathBuf>,
        /// The export's format.
        #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
        format: ExportFormat,
        /// The export's fields, comma-separated: `member`, `tags`, and any
        /// member field or attribute [default: member,tier,points].
        #[arg(long, value_delimiter = ',')]
        fields: Vec<String>,
        /// Evaluate on this day (YYYY-MM-DD) instead of today.
        #[arg(long)]
        at: Option<String>,
    },
    /// Explain why rules did or did not fire for a member: each condition
    /// now, with its values, and the member's recent decisions per rule.
    Explain {
        /// A member id, a merged member's id, or an identifier (`phone:138...`).
        id: String,
        /// Only this rule.
        #[arg(long)]
        rule: Option<String>,
        /// Evaluate as of this day (default: the store's last daily tick, else today).
        #[arg(long)]
        at: Option<String>,
        /// `json` prints the explanation as data.
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
}

static NOTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Common {
    /// What to load: the config, and `--rules` / `--plugins` over its paths.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            builtin_config: self.builtin_config(),
            config_only: false,
            config: self.config_path(),
            rules: self.rules.clone(),
            plugins: self.plugins.clone(),
            ..LoadOptions::default()
        }
    }

    /// `--config`, else `nudge.yaml` here.
    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| PathBuf::from("nudge.yaml"))
    }

    /// No `--config` and no `nudge.yaml` here: the built-in defaults, said
    /// once on stderr.
    pub fn builtin_config(&self) -> bool {
        let builtin = self.config.is_none() && !std::path::Path::new("nudge.yaml").exists();
        if builtin && !NOTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            eprintln!(
                "note: no nudge.yaml here, so the built-in defaults: tiers bronze, silver, gold, diamond; `purchase` events with `amount` (and `category`); `nudge init` writes a project to start from"
            );
        }
        builtin
    }

    pub fn color_on(&self) -> bool {
        match self.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::IsTerminal::is_terminal(&std::io::stdout())
                    && std::env::var_os("NO_COLOR").is_none()
            }
        }
    }
}

/// A reader that stops early (`nudge member m1 | head`) ends a command
/// quietly, as it ends `cat`: SIGPIPE back to its default, which Rust's
/// runtime sets to ignored (a print to the closed pipe then panicked).
/// Not for the daemon and the language server: they report write errors.
fn quiet_on_closed_stdout(command: &Command) {
    if !matches!(command, Command::Run { .. } | Command::Lsp) {
        // SAFETY: setting a signal's disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

fn init_logs(command: &Command) {
    let level = default_log_level(command);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: the daemon says what it does (info), the other
    // commands only warn (plugin failures). RUST_LOG overrides.
    init_logs(&cli.command);
    quiet_on_closed_stdout(&cli.command);
    let common = cli.common;
    match cli.command {
        Command::Check { path, format } => check(&common, path, format),
        Command::Run {
            listen,
            watch,
            cluster,
            ..
        } => commands::run(&common, listen, watch.into(), cluster.options()),
        Command::Ingest {
            file,
            stop_on_error,
        } => cli::ingest::ingest(&common, &file, stop_on_error),
        Command::Replay {
            events,
            compare,
            fail_if_cost_increase,
            until,
            out,
            report,
            holdout_from,
        } => commands::replay(
            &common,
            &commands::ReplayOptions {
                events: &events,
                until: until.as_deref(),
                out: out.as_deref(),
                compare: compare.as_deref(),
                fail_if_cost_increase: fail_if_cost_increase.as_deref(),
                report: report.as_deref(),
                holdout_from: holdout_from.as_deref(),
            },
        ),
        Command::Import {
            input,
            mapping,
            out,
        } => commands::import(&common, &input, &mapping, out.as_deref()),
        Command::Test { path } => commands::test(&common, path),
        Command::Init { dir } => commands::init(dir),
        Command::Fmt { paths, check } => commands::fmt(&common, paths, check),
        // The protocol's exit codes: 0 after `shutdown`, 1 for an `exit` without it.
        Command::Lsp => match nudge::lsp::serve_stdio() {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Export { file } => cli::backup::export(&common, &file),
        Command::ImportState { file } => cli::backup::import_state(&common, &file),
        Command::Member { id } => commands::member(&common, &id),
        Command::Fit { at } => cli::predict::fit(&common, at.as_deref()),
        Command::Model => cli::predict::model(&common),
        Command::Segment {
            query,
            count,
            export,
            format,
            fields,
            at,
        } => cli::segment::segment(
            &common,
            &query,
            cli::segment::Output {
                count,
                export,
                csv: format == ExportFormat::Csv,
                fields: fields.iter().map(|f| f.trim().to_string()).collect(),
                at,
            },
        ),
        Command::Explain {
            id,
            rule,
            at,
            format,
        } => commands::explain(
            &common,
            &id,
            rule.as_deref(),
            at.as_deref(),
            format == Format::Json,
        ),
    }
}

fn check(common: &Common, path: Option<PathBuf>, format: Format) -> ExitCode {
    let opts = LoadOptions {
        rules: path.or_else(|| common.rules.clone()),
        ..common.load_options()
    };
    let loaded = load(&opts);
    match format {
        Format::Json => println!("{}", render::json(&loaded)),
        Format::Human => print!("{}", render::human(&loaded, common.color_on())),
    }
    if loaded.io_failure {
        ExitCode::from(2)
    } else if loaded.errors() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
