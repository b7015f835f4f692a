//! Incidents by mail through the local sendmail (every Postfix host has
//! one): `sendmail -i -f <from> -- <to>...` with the message on its input.
//! At most `max_per_hour` mails: what comes in between waits in the spool
//! and goes as one digest.

use crate::spool::{Destination, Failure};
use pf_incident::IncidentEvent;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Incidents in one digest at most; more go in the next.
const DIGEST_MAX: usize = 200;
/// A sendmail that takes longer than this is stopped and tried again later.
const SENDMAIL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Mail {
    sendmail: PathBuf,
    from: String,
    to: Vec<String>,
    subject_prefix: String,
    interval: Duration,
    host: String,
}

impl Mail {
    /// The destination of `delivery.mail`, or none when it has no recipient.
    pub fn new(config: &pf_config::Mail, host: &str) -> Option<Mail> {
        if config.to.is_empty() {
            return None;
        }
        Some(Mail {
            sendmail: config.sendmail.clone(),
            from: config.from.clone(),
            to: config.to.clone(),
            subject_prefix: config.subject_prefix.clone(),
            interval: Duration::from_secs(3600 / u64::from(config.max_per_hour.max(1))),
            host: host.to_string(),
        })
    }

    /// The whole message, headers and body.
    pub fn message(
        &self,
        events: &[IncidentEvent],
        date: chrono::DateTime<chrono::Local>,
    ) -> String {
        let subject = if let [event] = events {
            let i = &event.incident;
            format!(
                "{} {} {} {} {} on {}",
                self.subject_prefix,
                i.severity.to_uppercase(),
                event.change.as_str(),
                i.entity.as_str(),
                i.key,
                self.host
            )
        } else {
            // By incident, at its latest severity (opened and escalated are one).
            let mut latest = std::collections::HashMap::new();
            for event in events {
                latest.insert(event.incident.id.as_str(), event.incident.severity.as_str());
            }
            let high = latest.values().filter(|s| **s == "high").count();
            let medium = latest.values().filter(|s| **s == "medium").count();
            format!(
                "{} {} incidents on {} ({high} high, {medium} medium)",
                self.subject_prefix,
                latest.len(),
                self.host
            )
        };
        let mut text = String::new();
        let mut header = |name: &str, value: &str| {
            text.push_str(name);
            text.push_str(": ");
            text.push_str(&header_safe(value));
            text.push('\n');
        };
        header("From", &self.from);
        header("To", &self.to.join(", "));
        header("Subject", &subject);
        header("Date", &date.to_rfc2822());
        header("Auto-Submitted", "auto-generated");
        header("MIME-Version", "1.0");
        header("Content-Type", "text/plain; charset=utf-8");
        header("Content-Transfer-Encoding", "8bit");
        text.push('\n');
        if events.len() > 1 {
            text.push_str(&format!(
                "{} incident events on {} since the last mail (at most one mail every {}):\n\n",
                events.len(),
                self.host,
                match self.interval.as_secs() {
                    s if s % 60 == 0 => format!("{} minutes", s / 60),
                    s => format!("{s} seconds"),
                }
            ));
        }
        for event in events {
            body_lines(&mut text, event);
        }
        text.push_str(
            "-- \nSent by pf-sink (postfix-anomaly). Every incident is in incidents.jsonl;\n\
             delivery.mail in config.yaml sets who gets these and how often.\n",
        );
        text
    }
}

fn body_lines(text: &mut String, event: &IncidentEvent) {
    let i = &event.incident;
    let why: Vec<String> = i
        .top_features
        .iter()
        .map(|(f, c)| format!("{f} ({c:+.1})"))
        .collect();
    let lines = [
        format!(
            "{} {} {} {}",
            i.severity.to_uppercase(),
            event.change.as_str(),
            i.entity.as_str(),
            i.key
        ),
        format!("  incident   {}", i.id),
        format!(
            "  kind       {}",
            if i.kind.is_empty() { "-" } else { &i.kind }
        ),
        format!("  seen       {} .. {}", i.first_seen, i.last_seen),
        format!(
            "  lines      {} anomalous of {}, {}",
            i.anomalies,
            i.lines,
            pf_record::rarity::describe(i.rarity)
        ),
        format!("  why        {}", why.join(", ")),
    ];
    for line in lines.iter().chain(
        i.samples
            .iter()
            .map(|s| format!("  | {s}"))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        text.push_str(&body_safe(line));
        text.push('\n');
    }
    text.push('\n');
}

/// Header values come partly from log lines (user names): one line of
/// printable ASCII, so no one can add a header.
fn header_safe(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn body_safe(line: &str) -> String {
    line.chars()
        .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
        .collect()
}

impl Destination for Mail {
    fn name(&self) -> &str {
        "mail"
    }

    fn deliver(&mut self, events: &[IncidentEvent]) -> Result<(), Failure> {
        let message = self.message(events, chrono::Local::now());
        let mut child = Command::new(&self.sendmail)
            .arg("-i")
            .arg("-f")
            .arg(&self.from)
            .arg("--")
            .args(&self.to)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Failure::Retry(format!(
                    "cannot run {}: {e} (delivery.mail.sendmail)",
                    self.sendmail.display()
                ))
            })?;
        // Written from a thread, so a sendmail that never reads cannot hold
        // this one past the timeout (killing it ends the write).
        let writer = child
            .stdin
            .take()
            .map(|mut stdin| std::thread::spawn(move || stdin.write_all(message.as_bytes())));
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() < SENDMAIL_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Failure::Retry(format!(
                        "{} did not finish in {} s and was stopped",
                        self.sendmail.display(),
                        SENDMAIL_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(Failure::Retry(format!("cannot wait for sendmail: {e}"))),
            }
        };
        if let Some(Ok(Err(e))) = writer.map(|w| w.join()) {
            return Err(Failure::Retry(format!(
                "{} did not take the whole message: {e}",
                self.sendmail.display()
            )));
        }
        if status.success() {
            return Ok(());
        }
        let mut said = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
        }
        let reason = format!(
            "{} failed ({status}): {}",
            self.sendmail.display(),
            said.trim().chars().take(300).collect::<String>()
        );
        // sysexits.h: usage, data, no such user or host are not worth retrying.
        match status.code() {
            Some(64 | 65 | 67 | 68) => Err(Failure::Reject(reason)),
            _ => Err(Failure::Retry(reason)),
        }
    }

    fn batch_max(&self) -> usize {
        DIGEST_MAX
    }

    fn min_interval(&self) -> Duration {
        self.interval
    }

    fn retry_max(&self) -> Duration {
        Duration::from_secs(600)
    }
}
