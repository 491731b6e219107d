//! The `sluice` command: thin argument parsing over the library (see DESIGN.md for the
//! exact contract of each subcommand).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Query-based partial sync engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a subscription and print its normalized form.
    Check {
        /// Folder of CREATE TABLE files.
        #[arg(long)]
        schema: PathBuf,
        /// The subscription, e.g. "SELECT * FROM issues WHERE team_id = 'T1'".
        sql: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Check { schema, sql } => check(&schema, &sql),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn check(schema_dir: &std::path::Path, sql: &str) -> ExitCode {
    let schema = match sluice::Schema::load_dir(schema_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match sluice::query::check(&schema, sql) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
