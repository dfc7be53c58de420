//! Subcommands. Each returns `Result<(), CliError>`; `main` prints the error
//! as one line (with its causes) and exits non-zero.

mod image;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "backchain", version, about = "Backup hub for virtual-machine disks")]
struct Cli {
    /// The repository folder (default: $BACKCHAIN_REPO, else ./backchain-repo).
    #[arg(long, global = true)]
    repo: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe an image and its whole backing chain (like qemu-img info).
    Info {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a flattened disk image.
    Export {
        /// An image path (QCOW2 or raw).
        target: String,
        #[arg(long, value_enum, default_value = "raw")]
        format: image::ExportFormat,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Compress the clusters of a QCOW2 output.
        #[arg(long, value_enum)]
        compress: Option<image::CompressArg>,
    },
}

/// An error for the user: one line, with its causes.
pub struct CliError(Box<dyn std::error::Error + Send + Sync>);

impl<E: std::error::Error + Send + Sync + 'static> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(Box::new(e))
    }
}

impl CliError {
    pub fn msg(m: impl Into<String>) -> Self {
        CliError(m.into().into())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { image, json } => image::info(&image, json),
        Command::Export { target, format, output, compress } => image::export(&target, format, &output, compress),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(e)) => {
            let mut line = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                let t = s.to_string();
                if !line.contains(&t) {
                    line.push_str(": ");
                    line.push_str(&t);
                }
                src = s.source();
            }
            eprintln!("backchain: {line}");
            ExitCode::FAILURE
        }
    }
}
