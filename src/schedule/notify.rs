//! Webhooks: a JSON POST per finished job, on failure or always (the
//! policy's `webhook.on`). Each is sent by a task of its own with a timeout
//! and a bounded number of attempts, so a slow or dead receiver never holds
//! up the queue.

use super::policy::{NotifyOn, Policy};
use crate::catalog::{JobRow, RunState};
use serde::Serialize;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Each attempt (connect, send, read the status line) ends within this.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts in all; the waits between them double from [`FIRST_BACKOFF`].
pub const ATTEMPTS: u32 = 3;
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Most bytes of the receiver's answer read (its status line is enough).
const MAX_ANSWER: usize = 4096;

/// What the receiver gets.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub policy: Option<String>,
    pub vm_name: String,
    pub job_id: i64,
    pub kind: String,
    pub state: RunState,
    pub attempt: i64,
    /// True when no retry follows (the job's outcome is final).
    pub last_attempt: bool,
    pub error: Option<String>,
    pub backup_id: Option<String>,
    pub bytes_read: i64,
    pub bytes_written: i64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
}

/// The event to send for ended job `job`, if the policy wants one. A failed
/// attempt that will be retried is only sent with `on: always`.
pub fn event_for(job: &JobRow, policy: Option<&Policy>, retried: bool) -> Option<(String, Event)> {
    let hook = policy?.spec.webhook.as_ref()?;
    let failure = matches!(job.state, RunState::Failed | RunState::Interrupted | RunState::Aborted);
    let wanted = match hook.on {
        NotifyOn::Always => true,
        NotifyOn::Failure => failure && !retried,
    };
    wanted.then(|| {
        let e = Event {
            policy: job.policy.clone(),
            vm_name: job.vm_name.clone(),
            job_id: job.id,
            kind: job.kind.to_string(),
            state: job.state,
            attempt: job.attempt,
            last_attempt: !retried,
            error: job.error.clone(),
            backup_id: job.backup_id.clone(),
            bytes_read: job.bytes_read,
            bytes_written: job.bytes_written,
            started_at: job.started_at.map(|t| t.to_string()),
            ended_at: job.ended_at.map(|t| t.to_string()),
        };
        (hook.url.clone(), e)
    })
}

/// Sends `event` to `url` in the background.
pub fn spawn(url: String, event: Event) {
    tokio::spawn(async move {
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(TIMEOUT, post(&url, &body)).await {
                Ok(Ok(())) => {
                    tracing::info!(url = %url, job = event.job_id, "webhook delivered");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(url = %url, job = event.job_id, attempt, error = %e, "webhook failed"),
                Err(_) => tracing::warn!(url = %url, job = event.job_id, attempt, "webhook timed out"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
    });
}

/// One HTTP/1.1 POST over a fresh connection; Ok on a 2xx answer.
async fn post(url: &str, body: &[u8]) -> std::io::Result<()> {
    let bad = |m: String| std::io::Error::other(m);
    let rest = url.strip_prefix("http://").ok_or_else(|| bad("not an http:// URL".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         User-Agent: backchain/{}\r\nConnection: close\r\n\r\n",
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body).await?;
    conn.flush().await?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.contains(&b'\n') && answer.len() < MAX_ANSWER {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else {
        Err(bad(format!("answered {:?}", line.lines().next().unwrap_or(""))))
    }
}
