//! `backchain policy add|list|show|rm|run` and `backchain jobs`.

use super::CliError;
use backchain::catalog::{JobFilter, JobRow, RunState};
use backchain::repo::Repo;
use backchain::schedule::policy::{DiskSpec, NotifyOn, PolicySpec, Retention, VmSpec, Webhook};
use backchain::schedule::{runner, store};
use backchain::util::time::UtcTime;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Adds a policy, from flags or from a JSON document (`--file`, as
    /// `POST /policies` takes it).
    Add(Box<AddArgs>),
    /// Replaces a policy by a JSON document (as `PUT /policies/NAME`).
    Set {
        name: String,
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    #[command(alias = "remove")]
    Rm { name: String },
    /// Backs up every VM of the policy now, in this process (and prunes);
    /// with `--queue`, only queues the jobs for the running daemon.
    Run {
        name: String,
        #[arg(long)]
        queue: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct AddArgs {
    /// The policy's name (or take it from `--file`).
    name: Option<String>,
    #[arg(long, conflicts_with_all = ["vms", "schedule"])]
    file: Option<PathBuf>,
    /// A VM and its disk sources: `NAME=SRC[,SRC...]` (repeat for more VMs).
    #[arg(long = "vm")]
    vms: Vec<String>,
    #[arg(long)]
    schedule: Option<String>,
    #[command(flatten)]
    keep: super::keep::KeepArgs,
    #[arg(long)]
    verify_schedule: Option<String>,
    #[arg(long)]
    disabled: bool,
    #[arg(long)]
    retries: Option<u32>,
    #[arg(long)]
    retry_delay: Option<u64>,
    #[arg(long)]
    repeat_missed: bool,
    #[arg(long)]
    full_every: Option<u32>,
    #[arg(long)]
    webhook: Option<String>,
    /// When the webhook is called: failure (default) or always.
    #[arg(long, requires = "webhook")]
    notify: Option<String>,
    #[arg(long)]
    json: bool,
}

fn vm_arg(s: &str) -> Result<VmSpec, CliError> {
    let (name, disks) =
        s.split_once('=').ok_or_else(|| CliError::msg(format!("--vm {s:?}: expected NAME=SRC[,SRC...]")))?;
    Ok(VmSpec {
        vm_name: name.to_string(),
        disks: disks.split(',').filter(|d| !d.is_empty()).map(|d| DiskSpec { source: d.to_string() }).collect(),
    })
}

fn spec_from_flags(a: AddArgs) -> Result<PolicySpec, CliError> {
    let name = a.name.ok_or_else(|| CliError::msg("policy add: give a NAME (or --file)"))?;
    let schedule = a.schedule.ok_or_else(|| CliError::msg("policy add: --schedule EXPR is required"))?;
    let on = match a.notify.as_deref() {
        None | Some("failure") => NotifyOn::Failure,
        Some("always") => NotifyOn::Always,
        Some(o) => return Err(CliError::msg(format!("--notify {o:?}: use failure or always"))),
    };
    let defaults = PolicySpec::from_json(br#"{"name":"x","vms":[],"schedule":"daily"}"#)?;
    Ok(PolicySpec {
        name,
        vms: a.vms.iter().map(|v| vm_arg(v)).collect::<Result<_, _>>()?,
        schedule,
        retention: Retention::from(a.keep.options()),
        verify_schedule: a.verify_schedule,
        enabled: !a.disabled,
        retries: a.retries.unwrap_or(defaults.retries),
        retry_delay_secs: a.retry_delay.unwrap_or(defaults.retry_delay_secs),
        repeat_missed: a.repeat_missed,
        full_every: a.full_every,
        webhook: a.webhook.map(|url| Webhook { url, on }),
    })
}

fn read_spec(file: &std::path::Path) -> Result<PolicySpec, CliError> {
    let text = std::fs::read(file).map_err(|e| CliError::msg(format!("{}: {e}", file.display())))?;
    Ok(PolicySpec::from_json(&text)?)
}

fn print_view(v: &store::PolicyView, json: bool) -> Result<(), CliError> {
    if json {
        outln!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    let s = &v.spec;
    outln!("policy {} ({})", s.name, if s.enabled { "enabled" } else { "disabled" });
    outln!("  schedule:  {} ({})", s.schedule, v.schedule_normalized);
    outln!("  next run:  {}", v.next_run.as_deref().unwrap_or("-"));
    outln!("  retention: {}", serde_json::to_string(&s.retention)?);
    if let Some(vs) = &s.verify_schedule {
        outln!("  verify:    {vs}");
    }
    outln!("  retries:   {} every {} s; repeat missed: {}", s.retries, s.retry_delay_secs, s.repeat_missed);
    for vm in &s.vms {
        let disks: Vec<&str> = vm.disks.iter().map(|d| d.source.as_str()).collect();
        outln!("  vm {}: {}", vm.vm_name, disks.join(", "));
    }
    Ok(())
}

pub fn policy(repo: &Repo, cmd: PolicyCmd) -> Result<(), CliError> {
    let cat = &repo.catalog;
    match cmd {
        PolicyCmd::Add(a) => {
            let json = a.json;
            let spec = match &a.file {
                Some(f) => {
                    let mut spec = read_spec(f)?;
                    if let Some(n) = &a.name {
                        spec.name.clone_from(n);
                    }
                    spec
                }
                None => spec_from_flags(*a)?,
            };
            let p = spec.check(None)?;
            let v = repo.block_on(store::add(cat, &p, UtcTime::now()))?;
            print_view(&v, json)
        }
        PolicyCmd::Set { name, file, json } => {
            let p = read_spec(&file)?.check(None)?;
            print_view(&repo.block_on(store::replace(cat, &name, &p, UtcTime::now()))?, json)
        }
        PolicyCmd::List { json } => {
            let all = repo.block_on(store::list(cat))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&serde_json::json!({"policies": all}))?);
                return Ok(());
            }
            outln!("{:<20} {:<8} {:<5} {:<26} {}", "NAME", "ENABLED", "VMS", "NEXT RUN", "SCHEDULE");
            for v in all {
                let next = v.next_run.as_deref().unwrap_or("-");
                outln!(
                    "{:<20} {:<8} {:<5} {:<26} {}",
                    v.spec.name,
                    v.spec.enabled,
                    v.spec.vms.len(),
                    next,
                    v.spec.schedule
                );
            }
            Ok(())
        }
        PolicyCmd::Show { name, json } => print_view(&repo.block_on(store::show(cat, &name))?, json),
        PolicyCmd::Rm { name } => {
            repo.block_on(store::remove(cat, &name))?;
            outln!("policy {name} removed (its job history stays)");
            Ok(())
        }
        PolicyCmd::Run { name, queue, json } => {
            let jobs = repo.block_on(store::run_now(cat, &name, UtcTime::now()))?;
            let ended = if queue {
                jobs
            } else {
                let p = store::parse_row(&repo.block_on(cat.policy(&name))?)?;
                runner::run_in_foreground(repo, &jobs, &p)?
            };
            print_jobs(&ended, json)?;
            if ended.iter().any(|j| matches!(j.state, RunState::Failed | RunState::Interrupted | RunState::Aborted)) {
                return Err(CliError::msg(format!("policy {name}: some jobs failed")));
            }
            Ok(())
        }
    }
}

fn print_jobs(jobs: &[JobRow], json: bool) -> Result<(), CliError> {
    if json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({"jobs": jobs}))?);
        return Ok(());
    }
    outln!(
        "{:<6} {:<16} {:<16} {:<7} {:<11} {:<25} {:<31} {}",
        "ID",
        "POLICY",
        "VM",
        "KIND",
        "STATE",
        "STARTED",
        "BACKUP",
        "ERROR"
    );
    for j in jobs {
        let started = j.started_at.map(|t| t.to_string()).unwrap_or_else(|| "-".into());
        outln!(
            "{:<6} {:<16} {:<16} {:<7} {:<11} {:<25} {:<31} {}",
            j.id,
            j.policy.as_deref().unwrap_or("-"),
            j.vm_name,
            j.kind,
            j.state,
            started,
            j.backup_id.as_deref().unwrap_or("-"),
            j.error.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// `backchain jobs`: the history, newest first.
pub fn jobs(
    repo: &Repo,
    policy: Option<&str>,
    vm: Option<&str>,
    state: Option<&str>,
    limit: Option<i64>,
    json: bool,
) -> Result<(), CliError> {
    let state = state
        .map(|s| RunState::parse(s).ok_or_else(|| CliError::msg(format!("--state {s:?}: unknown state"))))
        .transpose()?;
    let rows = repo.block_on(repo.catalog.jobs(&JobFilter { policy, vm, state, limit }))?;
    print_jobs(&rows, json)
}
