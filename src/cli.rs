//! The command line.

use std::path::PathBuf;
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run against Kafka with a config file.
    Run {
        /// Path of the TOML config file.
        #[arg(short, long)]
        config: PathBuf,
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
}

impl Cli {
    pub fn run(self) -> ExitCode {
        // The demo prints its own story; logs only for errors unless asked.
        init_tracing(if matches!(self.command, Command::Demo(_)) {
            "error"
        } else {
            "info,rdkafka=warn"
        });
        let result = match self.command {
            Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
            Command::CheckConfig { file, config } => {
                return check_config(file.or(config).unwrap_or_default());
            }
            Command::Demo(options) => {
                crate::demo::prepare_env();
                runtime().and_then(|rt| rt.block_on(crate::demo::run(options)))
            }
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn check_config(path: PathBuf) -> ExitCode {
    match Config::load(&path) {
        Ok(config) => {
            println!(
                "{} is valid. Effective config (secrets are only ever named, never stored):\n",
                path.display()
            );
            match toml::to_string_pretty(&config) {
                Ok(text) => println!("{text}"),
                Err(e) => eprintln!("(cannot print the effective config: {e})"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let engine = pipeline::build_engine(&config)?;
    let revoker = pipeline::build_revoker(&config).await?;
    let metrics = Arc::new(IngestMetrics::default());
    let stats = Arc::new(FlowStats::default());
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
