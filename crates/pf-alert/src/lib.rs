//! Incident events for other tools.
//!
//! [`summary`] is one incident event as `key=value` words, the form the
//! fail2ban filter in `contrib/fail2ban` reads: `incidents.log` has it
//! behind a syslog-style prefix, and [`SyslogSender`] sends it to the local
//! syslog socket. The words a ban can act on come first and come only from
//! what pf-sink itself checked (the event, the severity, a client address
//! parsed as one, the parser's kind name); anything a client can write
//! (user names, senders) comes after them with spaces and `=` replaced, so
//! a hostile user name cannot put a second `client=` where a filter looks.

pub mod mail;
pub mod spool;
pub mod webhook;

use chrono::{DateTime, Local};
use pf_incident::{Entity, IncidentEvent};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// `opened high client=203.0.113.7 kind=smtpd.sasl_auth_failed id=… anomalies=38 lines=40 first=… last=… rarity=… why=…`
pub fn summary(event: &IncidentEvent) -> String {
    let i = &event.incident;
    let mut words = vec![event.change.as_str().to_string(), word(&i.severity)];
    if i.entity != Entity::Kind {
        words.push(format!("{}={}", i.entity.as_str(), word(&i.key)));
    }
    let kind = if i.kind.is_empty() && i.entity == Entity::Kind {
        &i.key
    } else {
        &i.kind
    };
    words.push(format!("kind={}", word(kind)));
    words.push(format!("id={}", word(&i.id)));
    words.push(format!("anomalies={}", i.anomalies));
    words.push(format!("lines={}", i.lines));
    words.push(format!("first={}", word(&i.first_seen)));
    words.push(format!("last={}", word(&i.last_seen)));
    words.push(format!("rarity={}", i.rarity));
    let why: Vec<String> = i.top_features.iter().map(|(f, _)| word(f)).collect();
    words.push(format!(
        "why={}",
        if why.is_empty() {
            "-".into()
        } else {
            why.join(",")
        }
    ));
    words.join(" ")
}

/// A value as one word: whitespace, control characters and `=` become `_`.
fn word(text: &str) -> String {
    if text.is_empty() {
        return "-".into();
    }
    text.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || c == '=' {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The `incidents.log` line: `2026-03-03T22:13:00+01:00 mx1 postfix-anomaly[4242]: <summary>`,
/// stamped when pf-sink wrote it (fail2ban counts its window from that).
pub fn log_line(event: &IncidentEvent, now: DateTime<Local>, host: &str, tag: &str) -> String {
    format!(
        "{} {host} {tag}[{}]: {}",
        now.format("%Y-%m-%dT%H:%M:%S%:z"),
        std::process::id(),
        summary(event)
    )
}

/// This host's name as one word, for the log line.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| word(h.trim()))
        .filter(|h| h != "-")
        .unwrap_or_else(|| "localhost".into())
}

/// Starts a spool for each configured destination (webhook, mail) in `dir`.
pub fn start_spools(
    config: &pf_config::Delivery,
    dir: &Path,
    host: &str,
) -> anyhow::Result<Vec<spool::Spool>> {
    use anyhow::Context;
    let mut spools = Vec::new();
    let cannot = |name: &str| format!("cannot open the {name} spool in {}", dir.display());
    if let Some(webhook) = webhook::Webhook::new(&config.webhook, host)? {
        let filter = spool::Filter {
            min_severity: pf_incident::severity_rank(&config.webhook.min_severity),
            closed: true,
        };
        spools.push(spool::Spool::start(dir, filter, webhook).with_context(|| cannot("webhook"))?);
    }
    if let Some(mail) = mail::Mail::new(&config.mail, host) {
        let filter = spool::Filter {
            min_severity: pf_incident::severity_rank(&config.mail.min_severity),
            closed: false,
        };
        spools.push(spool::Spool::start(dir, filter, mail).with_context(|| cannot("mail"))?);
    }
    Ok(spools)
}

/// Sends each event as one datagram to the local syslog socket
/// (`<PRI>Mmm dd hh:mm:ss tag[pid]: summary`, as syslog(3) does).
/// A datagram the socket refuses is reported and counted, not queued:
/// `incidents.log` and `incidents.jsonl` keep every event.
pub struct SyslogSender {
    path: PathBuf,
    socket: Option<UnixDatagram>,
    facility: u8,
    tag: String,
    min_severity: u8,
    /// Shared with the metrics endpoint (`rejected` stays 0: nothing is queued).
    pub counters: std::sync::Arc<spool::Counters>,
}

impl SyslogSender {
    pub fn new(config: &pf_config::Syslog) -> Option<SyslogSender> {
        let path = config.socket.clone()?;
        Some(SyslogSender {
            path,
            socket: None,
            facility: pf_config::syslog_facility(&config.facility).unwrap_or(4),
            tag: config.tag.clone(),
            min_severity: pf_incident::severity_rank(&config.min_severity),
            counters: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends the event if its incident is at least `min_severity`.
    pub fn send(&mut self, event: &IncidentEvent) -> io::Result<()> {
        if pf_incident::severity_rank(&event.incident.severity) < self.min_severity {
            return Ok(());
        }
        let message = self.datagram(event, Local::now());
        // One reconnection: syslogd may have been restarted since.
        let mut result = Err(io::Error::other("not connected"));
        for _ in 0..2 {
            if self.socket.is_none() {
                match UnixDatagram::unbound().and_then(|socket| {
                    socket.connect(&self.path)?;
                    Ok(socket)
                }) {
                    Ok(socket) => self.socket = Some(socket),
                    Err(e) => {
                        result = Err(e);
                        continue;
                    }
                }
            }
            if let Some(socket) = &self.socket {
                result = socket.send(message.as_bytes()).map(|_| ());
                if result.is_ok() {
                    break;
                }
                self.socket = None;
            }
        }
        use std::sync::atomic::Ordering::Relaxed;
        match &result {
            Ok(()) => self.counters.sent.fetch_add(1, Relaxed),
            Err(_) => self.counters.failed.fetch_add(1, Relaxed),
        };
        result
    }

    fn datagram(&self, event: &IncidentEvent, now: DateTime<Local>) -> String {
        let severity = match (event.change, event.incident.severity.as_str()) {
            (pf_incident::Change::Closed, _) => 6,
            (_, "high") => 3,
            (_, "medium") => 4,
            _ => 5,
        };
        format!(
            "<{}>{} {}[{}]: {}",
            u16::from(self.facility) * 8 + severity,
            now.format("%b %e %H:%M:%S"),
            self.tag,
            std::process::id(),
            summary(event)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn event(line: &str) -> IncidentEvent {
        IncidentEvent::from_json(line).unwrap()
    }

    const BRUTE: &str = r#"{"event":"opened","id":"00ff","entity":"client","key":"203.0.113.7","first_seen":"2026-03-03T22:00:00+00:00","last_seen":"2026-03-03T22:01:00+00:00","anomalies":38,"lines":40,"severity":"high","rarity":250000.0,"kind":"smtpd.sasl_auth_failed","kinds":{},"top_features":[["auth_failures_1h_by_ip",-9.5]],"samples":[],"records":{}}"#;

    #[test]
    fn the_summary_leads_with_the_checked_words() {
        assert_eq!(
            summary(&event(BRUTE)),
            "opened high client=203.0.113.7 kind=smtpd.sasl_auth_failed id=00ff anomalies=38 lines=40 \
             first=2026-03-03T22:00:00+00:00 last=2026-03-03T22:01:00+00:00 rarity=250000 why=auth_failures_1h_by_ip"
        );
    }

    #[test]
    fn a_hostile_user_name_cannot_forge_a_client_word() {
        let hostile = BRUTE.replace(
            r#""entity":"client","key":"203.0.113.7""#,
            r#""entity":"user","key":"x client=198.51.100.9 kind=smtpd.sasl_auth_failed\n""#,
        );
        let s = summary(&event(&hostile));
        assert!(
            s.starts_with(
                "opened high user=x_client_198.51.100.9_kind_smtpd.sasl_auth_failed_ kind="
            ),
            "{s}"
        );
        assert_eq!(s.matches("client=").count(), 0, "{s}");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn server_wide_incidents_name_their_kind_once() {
        let fatal = BRUTE
            .replace(
                r#""entity":"client","key":"203.0.113.7""#,
                r#""entity":"kind","key":"cleanup.fatal""#,
            )
            .replace(
                r#""kind":"smtpd.sasl_auth_failed""#,
                r#""kind":"cleanup.fatal""#,
            );
        assert!(summary(&event(&fatal)).starts_with("opened high kind=cleanup.fatal id="));
    }

    #[test]
    fn events_reach_the_syslog_socket_with_facility_and_severity() {
        let dir = std::env::temp_dir().join(format!("pf-alert-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let config = pf_config::Syslog {
            socket: Some(path.clone()),
            min_severity: "medium".into(),
            ..Default::default()
        };
        let mut sender = SyslogSender::new(&config).unwrap();
        sender.send(&event(BRUTE)).unwrap();
        sender
            .send(&event(
                &BRUTE.replace(r#""severity":"high""#, r#""severity":"low""#),
            ))
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = server.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        // auth (4) * 8 + err (3)
        assert!(got.starts_with("<35>"), "{got}");
        assert!(got.contains(" postfix-anomaly["), "{got}");
        assert!(got.ends_with(&summary(&event(BRUTE))), "{got}");
        assert_eq!(
            sender.counters.sent.load(Relaxed),
            1,
            "the low incident is below min_severity"
        );
        server.set_nonblocking(true).unwrap();
        assert!(server.recv(&mut buf).is_err());
        // A socket that is gone is an error, counted.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        assert!(sender.send(&event(BRUTE)).is_err());
        assert_eq!(sender.counters.failed.load(Relaxed), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
