//! Incident events as Alertmanager webhook notifications (version 4), so
//! anything that accepts Alertmanager's webhook (Slack and Teams bridges,
//! Grafana OnCall, ntfy, a script) accepts pf-sink's.
//!
//! One alert per incident event: `firing` while the incident is open,
//! `resolved` once it closed, with `endsAt` set. The fingerprint is derived
//! from the incident id alone, so an escalation (new `severity` label) is
//! still the same alert to a receiver that deduplicates by fingerprint.

use crate::spool::{Destination, Failure};
use chrono::{DateTime, SecondsFormat, Utc};
use pf_incident::{Change, IncidentEvent};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::time::Duration;

/// What Alertmanager writes for "not ended yet".
const NOT_ENDED: &str = "0001-01-01T00:00:00Z";
const ALERT_NAME: &str = "PostfixAnomaly";

pub struct Webhook {
    url: String,
    headers: Vec<(String, String)>,
    agent: ureq::Agent,
    /// Events per POST: `delivery.webhook.batch_max`, halved by each HTTP 413.
    limit: usize,
    retry_max: Duration,
    receiver: String,
    host: String,
}

impl Webhook {
    /// The destination of `delivery.webhook`, or none when it has no URL.
    pub fn new(config: &pf_config::Webhook, host: &str) -> anyhow::Result<Option<Webhook>> {
        let Some(url) = &config.url else {
            return Ok(None);
        };
        let tls = native_tls::TlsConnector::new().map_err(|e| {
            anyhow::anyhow!("cannot set up TLS for delivery.webhook.url {url}: {e}")
        })?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(config.timeout_seconds))
            .redirects(0)
            .user_agent(concat!("pf-sink/", env!("CARGO_PKG_VERSION")))
            .tls_connector(std::sync::Arc::new(tls))
            .build();
        Ok(Some(Webhook {
            url: url.clone(),
            headers: config
                .headers
                .iter()
                .map(|(k, v)| {
                    let value = pf_config::resolve_value(k, v)
                        .map_err(|e| anyhow::anyhow!("delivery.webhook.headers.{k}: {e:#}"))?;
                    Ok((k.clone(), value))
                })
                .collect::<anyhow::Result<_>>()?,
            agent,
            limit: config.batch_max,
            retry_max: Duration::from_secs_f64(config.retry_max_seconds),
            receiver: config.receiver.clone(),
            host: host.to_string(),
        }))
    }
}

impl Destination for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn batch_len(&self, events: &[IncidentEvent]) -> usize {
        one_event_per_incident(events).min(self.limit)
    }

    fn deliver(&mut self, events: &[IncidentEvent]) -> Result<(), Failure> {
        let body = payload(events, &self.receiver, &self.host).to_string();
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        for (name, value) in &self.headers {
            request = request.set(name, value);
        }
        let (code, response) = match request.send_string(&body) {
            Ok(response) => (response.status(), response),
            Err(ureq::Error::Status(code, response)) => (code, response),
            Err(e) => return Err(Failure::Retry(format!("cannot POST to {}: {e}", self.url))),
        };
        if (200..300).contains(&code) {
            return Ok(());
        }
        let text: String = response
            .into_string()
            .unwrap_or_default()
            .chars()
            .take(200)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let reason = format!("{} answered HTTP {code}: {}", self.url, text.trim());
        match code {
            // Too large: smaller batches, down to one event.
            413 if self.limit > 1 => {
                self.limit = (self.limit / 2).max(1);
                Err(Failure::Retry(format!(
                    "{reason}; sending {} at a time",
                    self.limit
                )))
            }
            // A wrong token or path is the admin's to fix: keep the events.
            401 | 403 | 404 => Err(Failure::Retry(format!(
                "{reason} (check delivery.webhook.url and headers; the events wait)"
            ))),
            408 | 429 | 500..=599 => Err(Failure::Retry(reason)),
            300..=399 => Err(Failure::Reject(format!(
                "{reason} (a redirect: set delivery.webhook.url to where it points)"
            ))),
            _ => Err(Failure::Reject(reason)),
        }
    }

    fn batch_max(&self) -> usize {
        self.limit
    }

    fn retry_max(&self) -> Duration {
        self.retry_max
    }
}

/// How many events from the front can go in one notification: an incident
/// appears at most once in it (opened and closed in one batch go apart,
/// in order).
fn one_event_per_incident(events: &[IncidentEvent]) -> usize {
    let mut seen = HashSet::new();
    events
        .iter()
        .take_while(|e| seen.insert(e.incident.id.as_str()))
        .count()
        .max(1)
}

/// The notification body for these events.
pub fn payload(events: &[IncidentEvent], receiver: &str, host: &str) -> Value {
    let alerts: Vec<Value> = events.iter().map(|e| alert(e, host)).collect();
    let firing = events.iter().any(|e| e.change != Change::Closed);
    let mut common = Map::new();
    common.insert("alertname".into(), ALERT_NAME.into());
    common.insert("instance".into(), host.into());
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname=\"{ALERT_NAME}\"}}"),
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": {"alertname": ALERT_NAME},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "alerts": alerts,
    })
}

fn alert(event: &IncidentEvent, host: &str) -> Value {
    let i = &event.incident;
    let closed = event.change == Change::Closed;
    let why: Vec<String> = i
        .top_features
        .iter()
        .map(|(f, c)| format!("{f} ({c:+.1})"))
        .collect();
    let summary = format!(
        "{} {} {}: {} anomalous of {} lines, {}",
        i.severity,
        i.entity.as_str(),
        i.key,
        i.anomalies,
        i.lines,
        pf_record::rarity::describe(i.rarity)
    );
    let mut description = format!(
        "{} incident {} ({}) from {} to {}. Why: {}.",
        event.change.as_str(),
        i.id,
        if i.kind.is_empty() { "-" } else { &i.kind },
        i.first_seen,
        i.last_seen,
        if why.is_empty() {
            "-".to_string()
        } else {
            why.join(", ")
        }
    );
    if i.recurs > 0 {
        description.push_str(&format!(
            " Back: {} earlier incidents of this {} within a day.",
            i.recurs,
            i.entity.as_str()
        ));
    }
    if let Some(sample) = i.samples.last() {
        description.push_str(" Last line: ");
        description.push_str(sample);
    }
    json!({
        "status": if closed { "resolved" } else { "firing" },
        "labels": {
            "alertname": ALERT_NAME,
            "severity": i.severity,
            "entity": i.entity.as_str(),
            "key": i.key,
            "kind": i.kind,
            "instance": host,
        },
        "annotations": {
            "summary": summary,
            "description": description,
            "event": event.change.as_str(),
            "incident": i.id,
            "rarity": i.rarity.to_string(),
            "anomalies": i.anomalies.to_string(),
            "lines": i.lines.to_string(),
            "recurs": i.recurs.to_string(),
        },
        "startsAt": utc(&i.first_seen),
        "endsAt": if closed { utc(&i.last_seen) } else { NOT_ENDED.to_string() },
        "generatorURL": "",
        "fingerprint": fingerprint(&i.id),
    })
}

/// An event time in UTC (`2026-03-02T07:15:03Z`); one that is not RFC 3339 as now.
fn utc(time: &str) -> String {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| Utc::now())
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// 16 hex digits, as Alertmanager's fingerprints are (FNV-1a of the id).
fn fingerprint(id: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
