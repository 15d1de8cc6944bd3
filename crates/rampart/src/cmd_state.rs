//! `rampart state rebuild`: the control-plane journal replayed on a stopped
//! server's data directory and compared with its store, record by record;
//! with `--write`, the store made to hold what the journal says; with
//! `--until-seq`/`--until`, the state as it was at a past point, and what
//! changed since. Records are named by table and key, never shown.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use rampart_server::{RebuildOptions, RebuildOutcome, WriteOutcome};
use rampart_store::{DiffKind, Until};

use crate::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct StateArgs {
    #[command(subcommand)]
    cmd: StateCmd,
}

#[derive(Debug, clap::Subcommand)]
enum StateCmd {
    /// Replay the control-plane journal, check its hash chain and compare
    /// the result with the store (server stopped). Exits 0 when the store
    /// holds exactly what the journal says, 1 otherwise, naming every
    /// record that differs.
    Rebuild(RebuildArgs),
}

#[derive(Debug, clap::Args)]
struct RebuildArgs {
    #[arg(long, env = "RAMPART_DATA_DIR", default_value = "rampart-data")]
    data_dir: PathBuf,
    /// The server's configuration file (TOML), for its master key settings
    /// (`master_key_path`, the provider); RAMPART_* variables apply too.
    #[arg(long, env = "RAMPART_CONFIG")]
    config: Option<PathBuf>,
    /// Use the development master key, `<data_dir>/master.key`.
    #[arg(long)]
    dev: bool,
    /// After the comparison, replace the store's control-plane records with
    /// the rebuilt ones, in one transaction. Refused if the chain is broken.
    #[arg(long, conflicts_with_all = ["until_seq", "until"])]
    write: bool,
    /// Replay only up to this journal entry: the state as it was then, and
    /// what changed since (never written).
    #[arg(long)]
    until_seq: Option<u64>,
    /// Replay only up to this instant: milliseconds since the Unix epoch,
    /// or an audit record's timestamp (`2026-01-15T10:30:45.123Z`).
    #[arg(long, value_parser = parse_instant)]
    until: Option<u64>,
}

fn parse_instant(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .or_else(|| rampart_audit::parse_rfc3339_ms(s))
        .ok_or_else(|| {
            "expected milliseconds since the Unix epoch or YYYY-MM-DDTHH:MM:SS[.mmm]Z".into()
        })
}

pub(crate) async fn run(a: StateArgs) -> Result<ExitCode, Failure> {
    let StateCmd::Rebuild(a) = a.cmd;
    let env = |k: &str| std::env::var(k).ok();
    let mut config = rampart_server::Config::load(a.config.as_deref(), &env)?;
    config.data_dir = a.data_dir;
    let mut until = Until::everything();
    until.seq = a.until_seq;
    until.at_ms = a.until;
    let outcome =
        rampart_server::state_rebuild(&config, a.dev, RebuildOptions::new(until, a.write)).await?;
    print!("{}", render(&outcome));
    let ok = if until.is_everything() {
        outcome.matches()
    } else {
        outcome.report.replay.broken.is_none()
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report as the operator reads it.
fn render(o: &RebuildOutcome) -> String {
    let r = &o.report;
    let replay = &r.replay;
    let mut out = String::new();
    if o.snapshotted > 0 {
        let _ = writeln!(
            out,
            "the store predates the journal: started it with a snapshot of {} record(s)",
            o.snapshotted
        );
    }
    let _ = writeln!(
        out,
        "journal: {} entr{} read, chain {}",
        replay.entries,
        if replay.entries == 1 { "y" } else { "ies" },
        if replay.broken.is_some() {
            "BROKEN"
        } else {
            "intact"
        }
    );
    let _ = write!(out, "events replayed: {}", replay.applied);
    if replay.erased > 0 {
        let _ = write!(
            out,
            "; {} of erased tenants skipped (their keys are destroyed)",
            replay.erased
        );
    }
    if replay.after_bound > 0 {
        let _ = write!(out, "; {} after the bound not replayed", replay.after_bound);
    }
    out.push('\n');
    if let Some((seq, at)) = replay.last_applied {
        let _ = writeln!(
            out,
            "state as of entry {seq} ({})",
            rampart_audit::rfc3339_ms(at)
        );
    }
    if let Some(b) = &replay.broken {
        let _ = writeln!(
            out,
            "CHAIN BROKEN at entry {} (key {}): {}; nothing from there on was replayed",
            b.seq, b.key, b.reason
        );
    }
    let _ = writeln!(out, "{:<14}{:>9}{:>9}", "records", "journal", "store");
    let journal = r.journal_counts();
    for (t, n) in &journal {
        let live = r.live_counts.get(t).copied().unwrap_or(0);
        let _ = writeln!(out, "  {:<12}{n:>9}{live:>9}", t.name());
    }
    let bounded = !r.until.is_everything();
    for d in &r.differences {
        let what = match (&d.kind, bounded) {
            (DiffKind::Missing, false) => "in the journal, missing from the store".to_string(),
            (DiffKind::Missing, true) => "deleted since".to_string(),
            (DiffKind::Unexpected, false) => "in the store, not in the journal".to_string(),
            (DiffKind::Unexpected, true) => "created since".to_string(),
            (DiffKind::Differs, false) => "differs from the journal".to_string(),
            (DiffKind::Differs, true) => "changed since".to_string(),
            (DiffKind::Unreadable(why), _) => format!("unreadable in the store: {why}"),
            (_, _) => "differs".to_string(),
        };
        let _ = writeln!(out, "  {}/{}: {what}", d.table.name(), d.key);
    }
    if bounded {
        let _ = writeln!(
            out,
            "{} record(s) changed since then (not written)",
            r.differences.len()
        );
    } else if r.matches() {
        out.push_str("state matches the store\n");
    } else if replay.broken.is_none() {
        let _ = writeln!(
            out,
            "{} record(s) differ from the journal",
            r.differences.len()
        );
    }
    match &o.write {
        None => {}
        Some(WriteOutcome::Refused(why)) => {
            let _ = writeln!(out, "not written: {why}");
        }
        Some(WriteOutcome::Repaired {
            records,
            matches_now,
        }) => {
            let _ = writeln!(
                out,
                "written: {records} record(s) replaced or deleted; the store {} the journal now",
                if *matches_now {
                    "matches"
                } else {
                    "STILL DOES NOT MATCH"
                }
            );
        }
        Some(_) => {}
    }
    out
}
