//! Subcommands. Each returns `Result<(), CliError>`; `main` prints the error
//! as one line (with its causes) and exits non-zero.

/// `outln!` that never panics: see `out`.
macro_rules! outln {
    () => { $crate::cli::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

mod out;

mod backups;
mod browse;
mod calendar;
mod image;
mod keep;
mod mount;
mod nbd;
mod policy;
mod repair;
mod target;

use backchain::daemon;
use backchain::engine::Requested;
use backchain::repo::Repo;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum TypeArg {
    Auto,
    Full,
    Incremental,
}

#[derive(Subcommand)]
enum Command {
    /// Back up every disk of a VM: full first, then incrementals.
    Backup {
        #[arg(long)]
        vm: String,
        /// A disk source: raw image or block device path, or a QCOW2 image.
        #[arg(long = "disk", required = true)]
        disks: Vec<String>,
        #[arg(long = "type", value_enum, default_value = "auto")]
        kind: TypeArg,
        /// Compress the stored clusters.
        #[arg(long, value_enum)]
        compress: Option<image::CompressArg>,
        #[arg(long)]
        json: bool,
    },
    /// List backups, newest first.
    List {
        #[arg(long)]
        vm: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Drop restore points by retention rules (PBS/borg semantics), merging
    /// their images into the points kept.
    Prune {
        #[arg(long)]
        vm: String,
        #[command(flatten)]
        keep: keep::KeepArgs,
        /// Only print what would be kept or dropped, and why.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Drop one restore point, wherever it is in its chains: its images are
    /// merged into their neighbours, so every other point keeps its bytes.
    Delete {
        backup_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a lost catalog from the repository's images; list (or
    /// remove) files that no catalog row names.
    Repair {
        /// Build a new catalog from the images (the old catalog file is kept
        /// under a dated name).
        #[arg(long)]
        rebuild_catalog: bool,
        /// Remove the files no catalog row names (orphans and leftovers).
        #[arg(long)]
        remove_orphans: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show the chain of each disk of a VM.
    Chain {
        vm: String,
        #[arg(long)]
        json: bool,
    },
    /// Mount a backup, a disk of a backup, an image file, or (without TARGET)
    /// the whole repository as a read-only folder.
    Mount {
        /// [TARGET] MOUNTPOINT
        #[arg(num_args = 1..=2, required = true)]
        args: Vec<String>,
        /// Stay attached (SIGINT/SIGTERM unmount).
        #[arg(long)]
        foreground: bool,
        /// Let other users (file managers) in, with permission checks.
        #[arg(long)]
        allow_other: bool,
        /// Read every file with direct I/O, bypassing the kernel page cache
        /// (by default only files of 64 MiB and more): large reads run
        /// faster, reads of a few KiB at a time slower, nothing is cached.
        #[arg(long, conflicts_with = "page_cache")]
        direct_io: bool,
        /// Read every file through the kernel page cache, large ones too.
        #[arg(long)]
        page_cache: bool,
    },
    /// Unmount a folder mounted by `backchain mount`.
    Umount { mountpoint: PathBuf },
    /// Re-read backups and check structure, chain links and digests.
    Verify {
        backup_id: Option<String>,
        /// Only the backups of this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Skip backups whose every disk passed a verify within DAYS days
        /// (re-verify older passes; corrupt ones are always verified again).
        #[arg(long, value_name = "DAYS")]
        outdated_after: Option<u32>,
        /// Skip backups whose every disk passed a verify, however long ago.
        #[arg(long)]
        skip_verified: bool,
        #[arg(long)]
        json: bool,
    },
    /// Describe an image and its whole backing chain (like qemu-img info).
    Info {
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write a flattened disk image.
    Export {
        /// BACKUP_ID, BACKUP_ID:N, or an image path (QCOW2 or raw).
        target: String,
        #[arg(long, value_enum, default_value = "raw")]
        format: image::ExportFormat,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Compress the clusters of a QCOW2 output.
        #[arg(long, value_enum)]
        compress: Option<image::CompressArg>,
    },
    /// List a folder of the tree of a backup or image.
    Ls {
        /// BACKUP_ID, BACKUP_ID:N, or an image path (QCOW2 or raw).
        target: String,
        path: Option<OsString>,
        #[arg(long)]
        json: bool,
    },
    /// Write a file's bytes to stdout.
    Cat { target: String, path: OsString },
    /// Copy out a file, or a folder as OUT.zip / OUT.tar.gz.
    Get {
        target: String,
        path: OsString,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Serve one disk (or each disk of a backup) read-only over NBD until Ctrl-C.
    NbdExport {
        /// BACKUP_ID, BACKUP_ID:N, or an image path (QCOW2 or raw).
        target: String,
        /// HOST:PORT (loopback) or unix:PATH.
        #[arg(long, default_value = backchain::nbd::server::DEFAULT_LISTEN)]
        listen: String,
        #[arg(long)]
        writable: bool,
    },
    /// The normalized form and next elapses of a calendar event.
    Calendar(calendar::CalendarArgs),
    /// Protection policies: add, set, list, show, rm, run.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// The job history, newest first.
    Jobs {
        #[arg(long)]
        policy: Option<String>,
        #[arg(long)]
        vm: Option<String>,
        /// queued, running, completed, failed, skipped, interrupted or aborted.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// Serve the HTTP API over the repository and run the policies on their
    /// schedules. Flags override the `--config` file, which overrides the
    /// defaults.
    Serve {
        /// Address to listen on (default 127.0.0.1:8082).
        #[arg(long)]
        listen: Option<String>,
        /// A file holding the bearer token that every request must present
        /// (default: REPO/api.token, created with mode 0600 when missing).
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// A folder under which HTTP requests and policies may name local
        /// disk sources (repeatable; none by default: only nbd:// sources then).
        #[arg(long = "source-dir")]
        source_dirs: Vec<PathBuf>,
        /// Also keep a FUSE mount of the whole repository here.
        #[arg(long)]
        mount: Option<PathBuf>,
        /// On an empty repository, back up a bundled sample disk first.
        #[arg(long)]
        demo: bool,
        /// Seconds after which an unused restore session closes (default 3600).
        #[arg(long)]
        session_idle: Option<u64>,
        /// Restore sessions open at once, at most.
        #[arg(long)]
        max_sessions: Option<usize>,
        /// Scheduler jobs running at once, at most (default 2).
        #[arg(long)]
        max_jobs: Option<usize>,
        /// Days the job history is kept (default 90).
        #[arg(long)]
        job_history_days: Option<u32>,
        /// Seconds running jobs get to end after SIGTERM (default 60).
        #[arg(long)]
        shutdown_grace: Option<u64>,
        /// A TOML file with these settings, by the flags' names with `_`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// NBD listener for push targets and exports: HOST:PORT or unix:PATH
        /// (default 127.0.0.1:10809).
        #[arg(long)]
        nbd_listen: Option<String>,
        /// Seconds without a write after which a push job is aborted (default 3600).
        #[arg(long)]
        push_idle: Option<u64>,
        /// PEM x509 certificate for NBD over TLS (STARTTLS), with --nbd-tls-key;
        /// off loopback the NBD listener requires TLS.
        #[arg(long)]
        nbd_tls_cert: Option<PathBuf>,
        /// PEM private key of --nbd-tls-cert.
        #[arg(long)]
        nbd_tls_key: Option<PathBuf>,
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

/// The repository folder: --repo, else $BACKCHAIN_REPO, else ./backchain-repo.
fn repo_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.or_else(|| std::env::var_os("BACKCHAIN_REPO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("backchain-repo"))
}

/// Runs `f` with an existing repository open: commands that read never
/// create one (a mistyped --repo is an error, not an empty repository).
fn with_repo<T>(dir: Option<PathBuf>, f: impl FnOnce(&Repo) -> Result<T, CliError>) -> Result<T, CliError> {
    opened(dir, Repo::open_existing, f)
}

/// [`with_repo`] that creates the repository on first use (backups).
fn with_new_repo<T>(dir: Option<PathBuf>, f: impl FnOnce(&Repo) -> Result<T, CliError>) -> Result<T, CliError> {
    opened(dir, Repo::open, f)
}

fn opened<T>(
    dir: Option<PathBuf>,
    open: fn(&std::path::Path, tokio::runtime::Handle) -> Result<Repo, backchain::repo::RepoError>,
    f: impl FnOnce(&Repo) -> Result<T, CliError>,
) -> Result<T, CliError> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let repo = open(&repo_dir(dir), rt.handle().clone())?;
    let r = f(&repo);
    repo.close();
    r
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    backchain::util::rlimit::raise_open_files();
    let dir = cli.repo;
    let result = match cli.command {
        Command::Info { image, json } => image::info(&image, json),
        Command::Export { target, format, output, compress } => match target::parse(&target) {
            target::Target::Image(p) => image::export(&p, None, format, &output, compress),
            target::Target::Backup { id, disk } => with_repo(dir, |r| {
                let (images, _guard) = target::backup_images(r, &id, disk)?;
                if images.len() != 1 {
                    return Err(CliError::msg(format!(
                        "backup {id} has {} disks: export one of them as {id}:N",
                        images.len()
                    )));
                }
                image::export(&images[0].1, Some(images[0].2), format, &output, compress)
            }),
        },
        Command::Backup { vm, disks, kind, compress, json } => {
            let kind = match kind {
                TypeArg::Auto => Requested::Auto,
                TypeArg::Full => Requested::Full,
                TypeArg::Incremental => Requested::Incremental,
            };
            with_new_repo(dir, |r| {
                backups::backup(r, vm, disks, kind, compress.map(image::CompressArg::compression), json)
            })
        }
        Command::Mount { mut args, foreground, allow_other, direct_io, page_cache } => {
            // OK to unwrap: clap requires one or two values.
            let mountpoint = PathBuf::from(args.pop().unwrap());
            let target = args.pop();
            let direct_io = match (direct_io, page_cache) {
                (true, _) => backchain_fuse::DirectIo::Always,
                (_, true) => backchain_fuse::DirectIo::Never,
                _ => backchain_fuse::MountOptions::default().direct_io,
            };
            mount::mount(repo_dir(dir), mount::MountArgs { target, mountpoint, foreground, allow_other, direct_io })
        }
        Command::Umount { mountpoint } => mount::umount(&mountpoint),
        Command::Calendar(args) => calendar::run(args),
        Command::List { vm, json } => with_repo(dir, |r| backups::list(r, vm.as_deref(), json)),
        Command::Chain { vm, json } => with_repo(dir, |r| backups::chain(r, &vm, json)),
        Command::Repair { rebuild_catalog, remove_orphans, json } => {
            repair::run(dir, repair::RepairArgs { rebuild_catalog, remove_orphans, json })
        }
        Command::Delete { backup_id, json } => with_repo(dir, |r| backups::delete(r, &backup_id, json)),
        Command::Prune { vm, keep, dry_run, json } => {
            let keep = keep.options();
            let req = backchain::engine::prune::PruneRequest { vm, keep, dry_run };
            with_repo(dir, |r| backups::prune(r, &req, json))
        }
        Command::Verify { backup_id, vm, outdated_after, skip_verified, json } => {
            let req = backchain::engine::verify::VerifyRequest {
                id: backup_id,
                vm,
                skip_verified,
                outdated_after_days: outdated_after,
            };
            with_repo(dir, |r| backups::verify(r, &req, json))
        }
        Command::Ls { target, path, json } => {
            browse::with_tree(dir, &target, |t, _| browse::ls(t, path.as_deref(), json))
        }
        Command::Cat { target, path } => browse::with_tree(dir, &target, |t, _| browse::cat(t, &path)),
        Command::Get { target, path, output } => {
            browse::with_tree(dir, &target, |t, inputs| browse::get(t, inputs, &path, &output))
        }
        Command::NbdExport { target, listen, writable } => nbd::nbd_export(dir, &target, &listen, writable),
        Command::Policy(cmd) => with_new_repo(dir, |r| policy::policy(r, cmd)),
        Command::Jobs { policy, vm, state, limit, json } => {
            with_repo(dir, |r| policy::jobs(r, policy.as_deref(), vm.as_deref(), state.as_deref(), limit, json))
        }
        Command::Serve {
            listen,
            token_file,
            source_dirs,
            mount,
            demo,
            session_idle,
            max_sessions,
            nbd_listen,
            nbd_tls_cert,
            nbd_tls_key,
            push_idle,
            max_jobs,
            job_history_days,
            shutdown_grace,
            config,
        } => (|| {
            let flags = daemon::config::Settings {
                listen,
                token_file,
                source_dir: source_dirs,
                mount,
                demo: demo.then_some(true),
                session_idle,
                max_sessions,
                max_jobs,
                job_history_days,
                shutdown_grace_secs: shutdown_grace,
                nbd_tls_cert,
                nbd_tls_key,
                nbd_listen,
                push_idle_secs: push_idle,
            };
            let file = config.as_deref().map(daemon::config::Settings::read).transpose()?.unwrap_or_default();
            let config = daemon::Config::from_settings(repo_dir(dir), flags.over(file));
            daemon::serve(config).map_err(CliError::from)
        })(),
    };
    match result {
        Ok(()) => match out::failure() {
            None => ExitCode::SUCCESS,
            Some(kind) => {
                eprintln!("backchain: writing the output: {}", std::io::Error::from(kind));
                ExitCode::FAILURE
            }
        },
        // A reader that closed the pipe early: quiet, like other tools.
        Err(CliError(e)) if out::is_broken_pipe(&*e) => ExitCode::SUCCESS,
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
