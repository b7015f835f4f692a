//! Behavioural features: what the client address, the user, the envelope
//! sender, the recipient (and its domain) and the whole server have been
//! doing up to this event.
//!
//! One log line rarely looks wrong on its own: a password brute force is
//! hundreds of ordinary "authentication failed" lines. [`Behaviour`] keeps
//! sliding windows per entity, in event time, and describes every record
//! by its entities' recent history, so the 57th failure from one address
//! carries `auth_failures_10m_by_ip = 57`.
//!
//! Entities a line does not name are taken from its message: Postfix logs
//! the client and SASL user once (`smtpd.client`) and the sender once
//! (`qmgr.queued`, `pickup.queued`), and every later line of that queue id
//! (deliveries, bounces, removal) is attributed to them.
//!
//! Memory is bounded: entities unseen for longer than their longest window
//! are swept every ten minutes of event time, and each table holds at most
//! its cap (oldest evicted first); see [`Limits`]. The same input in the
//! same order always gives the same features, and the state can be saved
//! and restored so a restart does not blind the detector.

use crate::window::{hash, Distinct, Window, DAY, HOUR, TEN_MINUTES};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The behavioural measures, in catalogue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    AuthFailures10mByIp,
    AuthFailures1hByIp,
    UsersTried1hByIp,
    UsersTried1dByIp,
    Rejects1hByIp,
    RejectRatio1hByIp,
    UnknownRecipients1hByIp,
    RelayDenied1hByIp,
    Messages1hByIp,
    AuthFailures1hByUser,
    Ips1dByUser,
    NewIpForUser,
    NewNetworkForUser,
    Messages1hByUser,
    Recipients1hByUser,
    Messages1hAboveUsualByUser,
    Messages1hBySender,
    BounceRatio1hBySender,
    DeferralRatio1hBySender,
    NullSenderMails1hToRecipient,
    NullSenderMails1hToDomain,
    Pickups10m,
    NewClientConnections10m,
    NewDestinations10m,
    KindRarity,
    TemplateRarity,
    LevelRarity,
}

impl Measure {
    pub const ALL: [Measure; 27] = [
        Measure::AuthFailures10mByIp,
        Measure::AuthFailures1hByIp,
        Measure::UsersTried1hByIp,
        Measure::UsersTried1dByIp,
        Measure::Rejects1hByIp,
        Measure::RejectRatio1hByIp,
        Measure::UnknownRecipients1hByIp,
        Measure::RelayDenied1hByIp,
        Measure::Messages1hByIp,
        Measure::AuthFailures1hByUser,
        Measure::Ips1dByUser,
        Measure::NewIpForUser,
        Measure::NewNetworkForUser,
        Measure::Messages1hByUser,
        Measure::Recipients1hByUser,
        Measure::Messages1hAboveUsualByUser,
        Measure::Messages1hBySender,
        Measure::BounceRatio1hBySender,
        Measure::DeferralRatio1hBySender,
        Measure::NullSenderMails1hToRecipient,
        Measure::NullSenderMails1hToDomain,
        Measure::Pickups10m,
        Measure::NewClientConnections10m,
        Measure::NewDestinations10m,
        Measure::KindRarity,
        Measure::TemplateRarity,
        Measure::LevelRarity,
    ];

    pub fn name(self) -> &'static str {
        self.describe().0
    }

    pub fn description(self) -> &'static str {
        self.describe().1
    }

    fn describe(self) -> (&'static str, &'static str) {
        match self {
            Measure::AuthFailures10mByIp => ("auth_failures_10m_by_ip", "failed logins (SMTP AUTH, IMAP/POP3, webmail) from the client address in the last 10 minutes"),
            Measure::AuthFailures1hByIp => ("auth_failures_1h_by_ip", "failed logins from the client address in the last hour"),
            Measure::UsersTried1hByIp => ("users_tried_1h_by_ip", "distinct user names the client address logged in or tried to, last hour"),
            Measure::UsersTried1dByIp => ("users_tried_1d_by_ip", "distinct user names the client address logged in or tried to, last 24 hours"),
            Measure::Rejects1hByIp => ("rejects_1h_by_ip", "requests of the client address refused or flagged as abuse or probing, last hour"),
            Measure::RejectRatio1hByIp => ("reject_ratio_1h_by_ip", "share of the client address's lines in the last hour that were refusals (0-1)"),
            Measure::UnknownRecipients1hByIp => ("unknown_recipients_1h_by_ip", "recipients rejected as unknown users for the client address, last hour (directory harvesting)"),
            Measure::RelayDenied1hByIp => ("relay_denied_1h_by_ip", "\"Relay access denied\" for the client address, last hour (open-relay probing)"),
            Measure::Messages1hByIp => ("messages_1h_by_ip", "messages the client address handed over, last hour"),
            Measure::AuthFailures1hByUser => ("auth_failures_1h_by_user", "failed logins for the user name from anywhere, last hour (not shown on the user's lines from an address or network it has logged in from before the last 24 hours, other than failures)"),
            Measure::Ips1dByUser => ("ips_1d_by_user", "distinct client addresses that logged in or tried to as the user, last 24 hours"),
            Measure::NewIpForUser => ("new_ip_for_user", "1 if the user has not logged in successfully from this address before the last 24 hours, else 0"),
            Measure::NewNetworkForUser => ("new_network_for_user", "1 if the user has not logged in successfully from this network (/24, IPv6 /48) before the last 24 hours, else 0"),
            Measure::Messages1hByUser => ("messages_1h_by_user", "messages the authenticated user sent (SMTP AUTH or webmail), last hour"),
            Measure::Recipients1hByUser => ("recipients_1h_by_user", "distinct recipients of the user's messages, last hour"),
            Measure::Messages1hAboveUsualByUser => ("messages_1h_above_usual_by_user", "messages the user sent in the last hour beyond their busiest hour of the previous 7 days"),
            Measure::Messages1hBySender => ("messages_1h_by_sender", "messages queued with this envelope sender, last hour"),
            Measure::BounceRatio1hBySender => ("bounce_ratio_1h_by_sender", "share of the sender's delivery attempts in the last hour that bounced (0-1)"),
            Measure::DeferralRatio1hBySender => ("deferral_ratio_1h_by_sender", "share of the sender's delivery attempts in the last hour that were deferred (0-1)"),
            Measure::NullSenderMails1hToRecipient => ("null_sender_mails_1h_to_recipient", "on lines of a bounce (from=<>): bounces to the same recipient in the last hour, else 0"),
            Measure::NullSenderMails1hToDomain => ("null_sender_mails_1h_to_domain", "on lines of a bounce (from=<>): bounces to the recipient's domain in the last hour (backscatter), else 0"),
            Measure::Pickups10m => ("pickups_10m", "on lines of a locally submitted message: local submissions (sendmail/pickup) on the server in the last 10 minutes, else 0"),
            Measure::NewClientConnections10m => ("new_client_connections_10m", "on lines of a client address first seen within the hour: connections from such new addresses in the last 10 minutes to the listener it connected to (port 25, submission, smtps: a wave of new senders, backscatter, a botnet's logins), else 0"),
            Measure::NewDestinations10m => ("new_destinations_10m", "on outbound lines to a mail server first contacted within the hour: deliveries to such new servers in the last 10 minutes (a spam run to harvested addresses), else 0"),
            Measure::KindRarity => ("kind_rarity", "how rare this kind of event has been: bits of surprise beyond one in 1,024 events (-log2 of its share so far, minus 10, at least 0); common kinds are 0"),
            Measure::LevelRarity => ("level_rarity", "on warnings and worse: the same for the program and the level together, so a fatal error from a daemon that never logged one stands out on a server whose other programs do; 0 on informational lines"),
            Measure::TemplateRarity => ("template_rarity", "the same for the message's wording with addresses, names and numbers masked: a message never logged before stands out even when its kind is common"),
        }
    }

    pub fn from_name(name: &str) -> Option<Measure> {
        Measure::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Every measure for one record, indexed like [`Measure::ALL`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    values: [f64; Measure::ALL.len()],
}

impl Observed {
    pub fn get(&self, m: Measure) -> f64 {
        self.values[m as usize]
    }

    fn set(&mut self, m: Measure, v: impl Into<f64>) {
        self.values[m as usize] = v.into();
    }
}

/// The parts of a record the measures are computed from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Event<'a> {
    /// Event time in Unix seconds; `None` uses the latest time seen.
    pub time: Option<i64>,
    pub kind: &'a str,
    /// The message text after the syslog header, for its template.
    pub message: Option<&'a str>,
    pub failure: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    /// `sasl_username` or `user`.
    pub user: Option<&'a str>,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub queue_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub reject_dsn: Option<&'a str>,
    pub reject_reason: Option<&'a str>,
    /// Ties Dovecot's delivery line to Postfix's `cleanup` line.
    pub message_id: Option<&'a str>,
    /// The remote mail server of an outbound line.
    pub relay_ip: Option<&'a str>,
    /// The bounce a `bounce.notification` line created for the message.
    pub notification_queue_id: Option<&'a str>,
    /// Dovecot's session id: its login line names the client address, the
    /// session's later lines (`imap(user)<pid><session>: Disconnected`) do not.
    pub session: Option<&'a str>,
    /// The program (`postfix/smtpd`) and the line's level (0 informational,
    /// 1 warning, 2 error, 3 fatal, 4 panic).
    pub program: Option<&'a str>,
    /// The Postfix instance or listener before the daemon in the tag
    /// (`postfix/submission`), `None` for plain `postfix`.
    pub instance: Option<&'a str>,
    pub level: i64,
    /// The process that logged the line (host and pid): an `smtpd`
    /// process serves one client session at a time, so its end-of-session
    /// lines belong to the session's last message.
    pub process: Option<u64>,
}

/// How many entities each table may hold; past its cap the least recently
/// seen are evicted. With every table full and every distinct set at its
/// cap the state stays below roughly 250 MB; a busy real server uses a few
/// megabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub ips: usize,
    pub users: usize,
    pub senders: usize,
    pub recipients: usize,
    pub domains: usize,
    pub queues: usize,
    pub known_logins: usize,
}

pub const LIMITS: Limits = Limits {
    ips: 50_000,
    users: 20_000,
    senders: 50_000,
    recipients: 50_000,
    domains: 10_000,
    queues: 100_000,
    known_logins: 100_000,
};

/// Version of the saved state's layout.
const STATE_FORMAT: u32 = 1;
const SWEEP_EVERY: i64 = 600;
/// How long a message's queue id is remembered (Postfix's default
/// maximal_queue_lifetime).
const QUEUE_RETENTION: i64 = 5 * 86_400;
const KNOWN_LOGIN_RETENTION: i64 = 90 * 86_400;
const USER_RETENTION: i64 = 8 * 86_400;
/// A login address or network stays "new" this long after its first success.
const NEW_FOR: i64 = 86_400;
/// Most kinds and message templates remembered; beyond, a new one is
/// scored as never seen and not stored.
const MAX_KINDS: usize = 1_000;
const MAX_TEMPLATES: usize = 20_000;
/// Bits of rarity every kind is allowed: a kind seen once in 1,024 events
/// or more often is ordinary. Keeping common kinds at exactly 0 keeps the
/// feature sparse, which is what lets an isolation forest single out the
/// truly rare ones (a fatal error among warnings and logins).
const RARITY_FLOOR: f64 = 10.0;
/// Kind counts are halved past this total, so rarity follows change.
const KIND_HALF_LIFE: u64 = 1 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IpState {
    first: i64,
    last: i64,
    auth_failures_10m: Window,
    auth_failures_1h: Window,
    users_tried: Distinct,
    lines_1h: Window,
    rejects_1h: Window,
    unknown_recipients_1h: Window,
    relay_denied_1h: Window,
    messages_1h: Window,
    /// The listener of its latest connection ([`listener_key`]), 0 if none.
    #[serde(default)]
    listener: u64,
}

impl IpState {
    /// A login attempt from the address: failed or not, as `user` if named.
    fn record_login(&mut self, now: i64, failed: bool, user: Option<u64>) {
        if failed {
            self.auth_failures_10m.add(TEN_MINUTES, now, 1);
            self.auth_failures_1h.add(HOUR, now, 1);
        }
        if let Some(u) = user {
            self.users_tried.add(u, now, DAY.seconds());
        }
    }

    fn write_logins(&self, now: i64, out: &mut Observed) {
        out.set(
            Measure::AuthFailures10mByIp,
            self.auth_failures_10m.count(TEN_MINUTES, now),
        );
        out.set(
            Measure::AuthFailures1hByIp,
            self.auth_failures_1h.count(HOUR, now),
        );
        out.set(
            Measure::UsersTried1hByIp,
            self.users_tried.count(now, HOUR.seconds()),
        );
        out.set(
            Measure::UsersTried1dByIp,
            self.users_tried.count(now, DAY.seconds()),
        );
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UserState {
    last: i64,
    auth_failures_1h: Window,
    ips: Distinct,
    messages_1h: Window,
    recipients: Distinct,
    /// (day, busiest hour's messages) for up to the last 8 days.
    peaks: Vec<(i64, u32)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SenderState {
    last: i64,
    messages_1h: Window,
    attempts_1h: Window,
    bounced_1h: Window,
    deferred_1h: Window,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RecipientState {
    last: i64,
    null_sender_1h: Window,
}

/// What is known about a message from its earlier lines.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct QueueEntry {
    last: i64,
    ip: Option<u64>,
    ip_text: Option<String>,
    user: Option<String>,
    sender: Option<String>,
    /// Submitted locally (sendmail/pickup).
    local: bool,
    /// The smtpd process whose session queued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<u64>,
}

/// A successful login's first and last time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Known {
    first: i64,
    last: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Global {
    pickups_10m: Window,
    /// New clients' connections to any listener: shown on the lines of a
    /// client that has not been seen connecting (a Dovecot login).
    new_client_connections_10m: Window,
    /// The same per listener. Port 25 takes every scanner and bulk sender,
    /// so a wave of new clients on submission (a botnet's one or two login
    /// tries per address) is lost in the server-wide count.
    #[serde(default)]
    new_client_connections_10m_by_listener: HashMap<u64, Window>,
    new_destination_deliveries_10m: Window,
}

/// Most listeners told apart; an instance beyond them (a forged tag)
/// is counted server-wide only.
const MAX_LISTENERS: usize = 64;

/// The listener a connection was made to: the tag's instance
/// (`postfix/submission/smtpd` and `postfix/smtps/smtpd` are listeners of
/// their own; plain `postfix/smtpd` and the `postfix/postscreen` in front of
/// it are port 25).
fn listener_key(instance: Option<&str>) -> u64 {
    hash(&[instance.unwrap_or("postfix"), "listener"])
}

/// An smtpd process's current session: the last message it queued, and
/// what was known of it if the message left the queue before the session
/// ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Session {
    last: i64,
    queue: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    removed: Option<QueueEntry>,
}

/// The key of the process that logged a line: its host and pid.
pub fn process_key(host: &str, pid: i64) -> u64 {
    (hash(&[host]) ^ pid as u64).wrapping_mul(0x0100_0000_01b3)
}

/// A Dovecot login's session: where it came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct LoginSession {
    last: i64,
    ip: String,
}

/// The lines an smtpd session ends with: they name the client at most, and
/// belong to the session's message.
fn ends_session(kind: &str) -> bool {
    matches!(
        kind,
        "smtpd.disconnect"
            | "smtpd.disconnect_auth_failed"
            | "smtpd.lost_connection"
            | "smtpd.timeout"
            | "smtpd.too_many_errors"
    )
}

/// A Message-ID's queue (from `cleanup`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct MessageRef {
    queue: u64,
    last: i64,
}

/// How long a client address counts as new after it was first seen.
const NEW_CLIENT_FOR: i64 = 3_600;

/// Loopback clients are the server's own (webmail logging in to IMAP,
/// local submission), not a remote party; they are not an entity.
fn is_local(ip: &str) -> bool {
    ip.starts_with("127.") || ip == "::1"
}

trait LastSeen {
    fn last(&self) -> i64;
}

macro_rules! last_seen {
    ($($t:ty),*) => {$(impl LastSeen for $t { fn last(&self) -> i64 { self.last } })*};
}
last_seen!(
    IpState,
    UserState,
    SenderState,
    RecipientState,
    QueueEntry,
    Known,
    MessageRef,
    Session,
    LoginSession
);

/// The detector's memory of recent behaviour.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Behaviour {
    format: u32,
    /// The latest event time seen (Unix seconds).
    clock: i64,
    next_sweep: i64,
    ips: HashMap<u64, IpState>,
    users: HashMap<u64, UserState>,
    senders: HashMap<u64, SenderState>,
    recipients: HashMap<u64, RecipientState>,
    domains: HashMap<u64, RecipientState>,
    queues: HashMap<u64, QueueEntry>,
    message_ids: HashMap<u64, MessageRef>,
    #[serde(default)]
    sessions: HashMap<u64, Session>,
    #[serde(default)]
    dovecot_sessions: HashMap<u64, LoginSession>,
    destinations: HashMap<u64, Known>,
    known_ips: HashMap<u64, Known>,
    known_networks: HashMap<u64, Known>,
    kinds: Rarity,
    templates: Rarity,
    #[serde(default)]
    levels: Rarity,
    global: Global,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            format: STATE_FORMAT,
            clock: i64::MIN,
            next_sweep: i64::MIN,
            ips: HashMap::new(),
            users: HashMap::new(),
            senders: HashMap::new(),
            recipients: HashMap::new(),
            domains: HashMap::new(),
            queues: HashMap::new(),
            message_ids: HashMap::new(),
            sessions: HashMap::new(),
            dovecot_sessions: HashMap::new(),
            destinations: HashMap::new(),
            known_ips: HashMap::new(),
            known_networks: HashMap::new(),
            kinds: Rarity::default(),
            templates: Rarity::default(),
            levels: Rarity::default(),
            global: Global::default(),
        }
    }
}

fn entry<T: Default + LastSeen>(map: &mut HashMap<u64, T>, key: u64, cap: usize) -> &mut T {
    if map.len() >= cap + cap / 10 && !map.contains_key(&key) {
        evict_oldest(map, cap - cap / 10);
    }
    map.entry(key).or_default()
}

/// Keeps the `keep` most recently seen entries.
fn evict_oldest<T: LastSeen>(map: &mut HashMap<u64, T>, keep: usize) {
    if map.len() <= keep {
        return;
    }
    let mut times: Vec<(i64, u64)> = map.iter().map(|(k, v)| (v.last(), *k)).collect();
    times.sort_unstable();
    for &(_, key) in &times[..times.len() - keep] {
        map.remove(&key);
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (f64::from(part) / f64::from(whole) * 1000.0).round() / 1000.0
    }
}

/// The network of an address: /24 for IPv4, /48 for IPv6.
fn network(ip: &str) -> &str {
    if ip.contains(':') {
        let mut colons = 0;
        for (i, c) in ip.char_indices() {
            if c == ':' {
                colons += 1;
                if colons == 3 {
                    return &ip[..i];
                }
            }
        }
        ip
    } else {
        ip.rfind('.').map_or(ip, |i| &ip[..i])
    }
}

fn domain_of(address: &str) -> Option<&str> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| !d.is_empty())
}

/// How often each kind (or template) has been seen, for its rarity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Rarity {
    counts: HashMap<u64, u64>,
    total: u64,
}

impl Rarity {
    /// Bits of surprise of `key` beyond [`RARITY_FLOOR`], from the counts
    /// before this event (one pseudo-event each way, so a first sighting is
    /// finite); then counts it.
    fn observe(&mut self, key: u64) -> f64 {
        let seen = self.counts.get(&key).copied().unwrap_or(0);
        let share = (seen as f64 + 1.0) / (self.total as f64 + 2.0);
        let rarity = ((-share.log2() - RARITY_FLOOR).max(0.0) * 100.0).round() / 100.0;
        let cap = if self.counts.len() < MAX_KINDS {
            MAX_KINDS
        } else {
            MAX_TEMPLATES
        };
        if self.counts.len() < cap || self.counts.contains_key(&key) {
            *self.counts.entry(key).or_insert(0) += 1;
        }
        self.total += 1;
        if self.total >= KIND_HALF_LIFE {
            self.counts.retain(|_, n| {
                *n /= 2;
                *n > 0
            });
            self.total /= 2;
        }
        rarity
    }
}

/// A message's wording with what varies between instances masked: tokens
/// holding digits, addresses, bracketed or quoted values, `key=value`
/// values and long tokens. `warning: hostname mail.example does not resolve
/// to address 192.0.2.1` and the same for another host and address share
/// one template. Only the first 16 tokens count.
pub fn template(message: &str) -> u64 {
    let mut parts: Vec<&str> = Vec::with_capacity(16);
    for token in message.split_ascii_whitespace().take(16) {
        let masked = match token.split_once('=') {
            Some((key, _)) if !key.is_empty() && key.len() < 24 => key,
            _ if token.len() > 24
                || token.trim_end_matches(['.', ',', ':', ';']).contains('.')
                || token
                    .bytes()
                    .any(|b| b.is_ascii_digit() || b"@<[(\"'/".contains(&b)) =>
            {
                "*"
            }
            _ => token,
        };
        parts.push(masked);
    }
    hash(&parts)
}

impl Behaviour {
    pub fn new() -> Behaviour {
        Behaviour::default()
    }

    /// Restores state written by [`Behaviour::save`].
    pub fn load(path: &Path) -> Result<Behaviour> {
        let text = std::fs::read(path)
            .with_context(|| format!("cannot read feature state {}", path.display()))?;
        let state: Behaviour = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is not a pf-features state file (remove it to start with empty state)",
                path.display()
            )
        })?;
        if state.format != STATE_FORMAT {
            bail!(
                "{} has state format {}, this build reads {STATE_FORMAT}; remove it to start \
                 with empty state",
                path.display(),
                state.format
            );
        }
        Ok(state)
    }

    /// Whether the state was written in this build's format.
    pub fn is_current_format(&self) -> bool {
        self.format == STATE_FORMAT
    }

    /// Writes the state atomically (temp file + rename), mode 0640.
    pub fn save(&self, path: &Path) -> Result<()> {
        // Streamed to the file: a copy in memory would be as large as the
        // state itself, and would stay in the process's footprint.
        // It holds user names and addresses: not for everyone to read.
        pf_record::atomic::write_private_atomically_with(path, 0o640, |w| {
            serde_json::to_writer(w, self).map_err(std::io::Error::from)
        })
        .with_context(|| format!("cannot write feature state {}", path.display()))
    }

    /// Entities remembered, per table, for progress and tests.
    pub fn sizes(&self) -> [(&'static str, usize); 12] {
        [
            ("ips", self.ips.len()),
            ("users", self.users.len()),
            ("senders", self.senders.len()),
            ("recipients", self.recipients.len()),
            ("domains", self.domains.len()),
            ("queues", self.queues.len()),
            ("message_ids", self.message_ids.len()),
            ("sessions", self.sessions.len()),
            ("dovecot_sessions", self.dovecot_sessions.len()),
            ("destinations", self.destinations.len()),
            ("known_ips", self.known_ips.len()),
            ("known_networks", self.known_networks.len()),
        ]
    }

    /// Updates the state with one event and describes it.
    pub fn observe(&mut self, ev: &Event<'_>) -> Observed {
        let now = match ev.time {
            Some(t) => t,
            None if self.clock == i64::MIN => 0,
            None => self.clock,
        };
        self.clock = self.clock.max(now);
        if self.clock >= self.next_sweep {
            self.sweep();
            self.next_sweep = self.clock + SWEEP_EVERY;
        }
        let mut out = Observed::default();
        out.set(Measure::KindRarity, self.kinds.observe(hash(&[ev.kind])));
        if let Some(message) = ev.message {
            out.set(
                Measure::TemplateRarity,
                self.templates.observe(template(message)),
            );
        }
        // Every line counts towards the shares, so a level is rare among
        // all of its program's lines and the server's.
        let level = self.levels.observe(hash(&[
            ev.program.unwrap_or(""),
            ["0", "1", "2", "3", "4"][ev.level.clamp(0, 4) as usize],
        ]));
        if ev.level > 0 {
            out.set(Measure::LevelRarity, level);
        }

        let kind = ev.kind;
        let auth_failure = ev.failure == Some("auth");
        let smtpd_client = kind == "smtpd.client";
        let auth_success = kind == "dovecot.login"
            || kind == "roundcube.login"
            || (smtpd_client && ev.user.is_some());
        let user_message = (smtpd_client && ev.user.is_some()) || kind == "roundcube.sent";
        let refusal = matches!(ev.failure, Some("reject" | "abuse" | "probe"));
        let reason = ev.reject_reason.unwrap_or("");
        let unknown_recipient = kind == "smtpd.reject"
            && (ev.reject_dsn == Some("5.1.1")
                || reason.contains("User unknown")
                || reason.contains("user unknown"));
        let relay_denied = reason.contains("Relay access denied");

        // Dovecot's delivery names the mailbox it delivered to and the
        // Message-ID, which leads back to Postfix's queue id.
        let dovecot_delivery = kind == "dovecot.delivery";
        let (user_field, to_field) = if dovecot_delivery {
            (None, ev.to.or(ev.user))
        } else {
            (ev.user, ev.to)
        };
        let message_key = ev.message_id.map(|m| hash(&[m]));
        let queue_key = ev.queue_id.map(|q| hash(&[q])).or_else(|| {
            message_key
                .filter(|_| dovecot_delivery)
                .and_then(|m| self.message_ids.get(&m))
                .map(|r| r.queue)
        });
        if let (Some(m), Some(q), true) = (message_key, queue_key, kind == "cleanup.message_id") {
            let r = entry(&mut self.message_ids, m, LIMITS.queues);
            r.queue = q;
            r.last = now;
        }
        if let Some(key) = queue_key {
            let starts = smtpd_client || kind == "pickup.queued" || kind == "qmgr.queued";
            if starts || self.queues.contains_key(&key) {
                let q = entry(&mut self.queues, key, LIMITS.queues);
                q.last = now;
                if let Some(ip) = ev.client_ip.filter(|_| smtpd_client) {
                    q.ip = Some(hash(&[ip]));
                    q.ip_text = Some(ip.to_string());
                }
                if let Some(user) = user_field.filter(|_| smtpd_client) {
                    q.user = Some(user.to_lowercase());
                }
                if let Some(from) = ev.from.filter(|_| !smtpd_client) {
                    q.sender = Some(from.to_lowercase());
                }
                if kind == "pickup.queued" {
                    q.local = true;
                }
            }
        }
        // The session's end belongs to its last message (a content
        // filter's re-injection, a spam run's connection): its sender and
        // account, as the message's other lines are.
        let session = match ev.process {
            Some(p) if kind == "smtpd.connect" => {
                self.sessions.remove(&p);
                None
            }
            Some(p) if smtpd_client => {
                if let Some(q) = queue_key {
                    let s = entry(&mut self.sessions, p, LIMITS.queues);
                    s.last = now;
                    s.queue = q;
                    s.removed = None;
                    if let Some(entry) = self.queues.get_mut(&q) {
                        entry.session = Some(p);
                    }
                }
                None
            }
            Some(p) if ev.queue_id.is_none() && ends_session(kind) => {
                if kind.starts_with("smtpd.disconnect") {
                    self.sessions.remove(&p)
                } else {
                    self.sessions.get(&p).cloned()
                }
            }
            _ => None,
        };
        let queued = queue_key
            .and_then(|k| self.queues.get(&k))
            .cloned()
            .or_else(|| {
                let s = session?;
                self.queues.get(&s.queue).cloned().or(s.removed)
            });
        // A bounce belongs to whoever sent the message that bounced.
        if let (Some(original), Some(dsn)) = (&queued, ev.notification_queue_id) {
            let q = entry(&mut self.queues, hash(&[dsn]), LIMITS.queues);
            q.last = now;
            q.ip = original.ip;
            q.ip_text = original.ip_text.clone();
            q.user = original.user.clone();
            q.local = original.local;
            q.sender = Some(String::new());
        }
        let login_session = ev.session.map(|s| hash(&[s]));
        if let (Some(key), Some(ip), "dovecot.login") = (login_session, ev.client_ip, kind) {
            let s = entry(&mut self.dovecot_sessions, key, LIMITS.queues);
            s.last = now;
            s.ip = ip.to_string();
        }
        let session_ip = match login_session {
            Some(key) if ev.client_ip.is_none() => {
                let ip = self.dovecot_sessions.get(&key).map(|s| s.ip.clone());
                if kind == "dovecot.disconnect" {
                    self.dovecot_sessions.remove(&key);
                }
                ip
            }
            _ => None,
        };
        let ip_text = ev
            .client_ip
            .or(session_ip.as_deref())
            .or(queued.as_ref().and_then(|q| q.ip_text.as_deref()))
            .filter(|ip| !is_local(ip));
        let local_message = kind == "pickup.queued" || queued.as_ref().is_some_and(|q| q.local);
        let user_lower = user_field.map(str::to_lowercase);
        let user = user_lower
            .as_deref()
            .or(queued.as_ref().and_then(|q| q.user.as_deref()));
        let from_lower = ev.from.map(str::to_lowercase);
        let sender = from_lower
            .as_deref()
            .or(queued.as_ref().and_then(|q| q.sender.as_deref()));
        let null_sender = sender == Some("");
        let is_delivery = (kind == "smtp.delivery" && ev.status.is_some()) || dovecot_delivery;

        // Server-wide rates, shown only on the lines they are about, so a
        // storm does not make every concurrent line look odd.
        let g = &mut self.global;
        if kind == "pickup.queued" {
            g.pickups_10m.add(TEN_MINUTES, now, 1);
        }
        if local_message {
            out.set(Measure::Pickups10m, g.pickups_10m.count(TEN_MINUTES, now));
        }
        if let Some(relay) = ev.relay_ip.filter(|ip| !is_local(ip)) {
            let key = hash(&[relay]);
            let fresh = !self.destinations.contains_key(&key);
            let d = entry(&mut self.destinations, key, LIMITS.ips);
            if fresh {
                d.first = now;
            }
            d.last = d.last.max(now);
            if now - d.first < NEW_CLIENT_FOR {
                if is_delivery {
                    g.new_destination_deliveries_10m.add(TEN_MINUTES, now, 1);
                }
                out.set(
                    Measure::NewDestinations10m,
                    g.new_destination_deliveries_10m.count(TEN_MINUTES, now),
                );
            }
        }

        // The client address.
        let ip_key = ip_text.map(|ip| hash(&[ip]));
        let user_key = user.map(|u| hash(&[u]));
        if let Some(key) = ip_key {
            let fresh = !self.ips.contains_key(&key);
            let s = entry(&mut self.ips, key, LIMITS.ips);
            if fresh {
                s.first = now;
            }
            s.last = s.last.max(now);
            let new_client = now - s.first < NEW_CLIENT_FOR;
            let connect = kind == "smtpd.connect" || kind == "postscreen.connect";
            if connect {
                s.listener = listener_key(ev.instance);
            }
            if new_client {
                let g = &mut self.global;
                let by_listener = &mut g.new_client_connections_10m_by_listener;
                if by_listener.len() < MAX_LISTENERS && s.listener != 0 {
                    by_listener.entry(s.listener).or_default();
                }
                let listener = by_listener.get_mut(&s.listener);
                if connect {
                    g.new_client_connections_10m.add(TEN_MINUTES, now, 1);
                }
                let count = match listener {
                    Some(window) => {
                        if connect {
                            window.add(TEN_MINUTES, now, 1);
                        }
                        window.count(TEN_MINUTES, now)
                    }
                    None => g.new_client_connections_10m.count(TEN_MINUTES, now),
                };
                out.set(Measure::NewClientConnections10m, count);
            }
            if ev.client_ip.is_some() {
                s.lines_1h.add(HOUR, now, 1);
            }
            s.record_login(
                now,
                auth_failure,
                user_key.filter(|_| auth_failure || auth_success),
            );
            if refusal {
                s.rejects_1h.add(HOUR, now, 1);
            }
            if unknown_recipient {
                s.unknown_recipients_1h.add(HOUR, now, 1);
            }
            if relay_denied {
                s.relay_denied_1h.add(HOUR, now, 1);
            }
            if smtpd_client {
                s.messages_1h.add(HOUR, now, 1);
            }
            let rejects = s.rejects_1h.count(HOUR, now);
            s.write_logins(now, &mut out);
            out.set(Measure::Rejects1hByIp, rejects);
            out.set(
                Measure::RejectRatio1hByIp,
                ratio(rejects, s.lines_1h.count(HOUR, now)),
            );
            out.set(
                Measure::UnknownRecipients1hByIp,
                s.unknown_recipients_1h.count(HOUR, now),
            );
            out.set(
                Measure::RelayDenied1hByIp,
                s.relay_denied_1h.count(HOUR, now),
            );
            out.set(Measure::Messages1hByIp, s.messages_1h.count(HOUR, now));
        }

        // The server's own clients (webmail logging in to IMAP from
        // loopback): their failures count, but show only on failure lines,
        // so a stuffing run through webmail does not mark every webmail
        // user's login.
        let local_ip = ev.client_ip.filter(|ip| is_local(ip));
        if let (Some(ip), true) = (local_ip, auth_failure) {
            let s = entry(&mut self.ips, hash(&[ip]), LIMITS.ips);
            s.last = s.last.max(now);
            s.record_login(now, true, user_key);
            s.write_logins(now, &mut out);
        }

        // The user.
        if let (Some(key), Some(name)) = (user_key, user) {
            let s = entry(&mut self.users, key, LIMITS.users);
            s.last = s.last.max(now);
            if auth_failure {
                s.auth_failures_1h.add(HOUR, now, 1);
            }
            if let Some(ip) = ip_key.filter(|_| auth_failure || auth_success) {
                s.ips.add(ip, now, DAY.seconds());
            }
            if user_message {
                s.messages_1h.add(HOUR, now, 1);
            }
            if is_delivery {
                if let Some(to) = ev.to {
                    s.recipients
                        .add(hash(&[&to.to_lowercase()]), now, HOUR.seconds());
                }
            }
            let sent = s.messages_1h.count(HOUR, now);
            let today = now.div_euclid(86_400);
            let usual = s
                .peaks
                .iter()
                .filter(|(day, _)| *day < today && *day >= today - 7)
                .map(|(_, peak)| *peak)
                .max()
                .unwrap_or(0);
            if user_message {
                match s.peaks.iter_mut().find(|(day, _)| *day == today) {
                    Some(p) => p.1 = p.1.max(sent),
                    None => {
                        s.peaks.retain(|(day, _)| *day >= today - 7);
                        s.peaks.push((today, sent));
                    }
                }
            }
            // The user's logins from this address and its network: whether
            // each is new, and the keys to note a success under.
            let origin = ip_text.map(|ip| {
                let pair = hash(&[name, ip]);
                let net = hash(&[name, network(ip)]);
                let is_new = |known: Option<&Known>| known.is_none_or(|k| now - k.first < NEW_FOR);
                let new_ip = is_new(self.known_ips.get(&pair));
                let new_net = is_new(self.known_networks.get(&net));
                (pair, net, new_ip, new_net)
            });
            // Others' failures for the name do not make the user's own
            // login suspect: from an address or network it has logged in
            // from for a day, they are not shown.
            let usual_origin = origin.is_some_and(|(_, _, new_ip, new_net)| !new_ip || !new_net);
            if auth_failure || !usual_origin {
                out.set(
                    Measure::AuthFailures1hByUser,
                    s.auth_failures_1h.count(HOUR, now),
                );
            }
            out.set(Measure::Ips1dByUser, s.ips.count(now, DAY.seconds()));
            out.set(Measure::Messages1hByUser, sent);
            out.set(
                Measure::Recipients1hByUser,
                s.recipients.count(now, HOUR.seconds()),
            );
            out.set(
                Measure::Messages1hAboveUsualByUser,
                sent.saturating_sub(usual),
            );

            if let Some((pair, net, new_ip, new_net)) = origin {
                out.set(Measure::NewIpForUser, u8::from(new_ip));
                out.set(Measure::NewNetworkForUser, u8::from(new_net));
                if auth_success {
                    for (map, key) in [(&mut self.known_ips, pair), (&mut self.known_networks, net)]
                    {
                        let fresh = !map.contains_key(&key);
                        let k = entry(map, key, LIMITS.known_logins);
                        if fresh {
                            k.first = now;
                        }
                        k.last = k.last.max(now);
                    }
                }
            }
        }

        // The envelope sender.
        if let Some(from) = sender {
            let s = entry(&mut self.senders, hash(&[from]), LIMITS.senders);
            s.last = s.last.max(now);
            // pickup names the local sender unqualified (`www-data`), qmgr
            // qualified: each line counts under the name it shows.
            if kind == "qmgr.queued" || kind == "pickup.queued" {
                s.messages_1h.add(HOUR, now, 1);
            }
            if is_delivery {
                s.attempts_1h.add(HOUR, now, 1);
                match ev.status {
                    Some("bounced") => s.bounced_1h.add(HOUR, now, 1),
                    Some("deferred") => s.deferred_1h.add(HOUR, now, 1),
                    _ => {}
                }
            }
            let attempts = s.attempts_1h.count(HOUR, now);
            out.set(Measure::Messages1hBySender, s.messages_1h.count(HOUR, now));
            out.set(
                Measure::BounceRatio1hBySender,
                ratio(s.bounced_1h.count(HOUR, now), attempts),
            );
            out.set(
                Measure::DeferralRatio1hBySender,
                ratio(s.deferred_1h.count(HOUR, now), attempts),
            );
        }

        // The recipient and its domain.
        if let Some(to) = to_field.map(str::to_lowercase) {
            let bounce_to_here =
                null_sender && (is_delivery || (kind == "smtpd.reject" && ev.from == Some("")));
            let r = entry(&mut self.recipients, hash(&[&to]), LIMITS.recipients);
            r.last = r.last.max(now);
            if bounce_to_here {
                r.null_sender_1h.add(HOUR, now, 1);
            }
            if null_sender {
                out.set(
                    Measure::NullSenderMails1hToRecipient,
                    r.null_sender_1h.count(HOUR, now),
                );
            }
            if let Some(domain) = domain_of(&to) {
                let d = entry(&mut self.domains, hash(&[domain]), LIMITS.domains);
                d.last = d.last.max(now);
                if bounce_to_here {
                    d.null_sender_1h.add(HOUR, now, 1);
                }
                if null_sender {
                    out.set(
                        Measure::NullSenderMails1hToDomain,
                        d.null_sender_1h.count(HOUR, now),
                    );
                }
            }
        }

        if kind == "qmgr.removed" {
            if let Some(key) = queue_key {
                if let Some(q) = self.queues.remove(&key) {
                    if let Some(s) = q.session.and_then(|p| self.sessions.get_mut(&p)) {
                        if s.queue == key {
                            s.removed = Some(q);
                        }
                    }
                }
            }
        }
        out
    }

    /// Forgets entities that have been quiet for longer than anything
    /// remembers them.
    fn sweep(&mut self) {
        let now = self.clock;
        let day = DAY.seconds() + HOUR.seconds();
        self.ips.retain(|_, s| now - s.last < day);
        self.users.retain(|_, s| now - s.last < USER_RETENTION);
        self.senders.retain(|_, s| now - s.last < day);
        self.recipients.retain(|_, s| now - s.last < day);
        self.domains.retain(|_, s| now - s.last < day);
        self.queues.retain(|_, s| now - s.last < QUEUE_RETENTION);
        self.message_ids
            .retain(|_, s| now - s.last < QUEUE_RETENTION);
        self.sessions.retain(|_, s| now - s.last < DAY.seconds());
        self.dovecot_sessions
            .retain(|_, s| now - s.last < DAY.seconds());
        self.destinations.retain(|_, s| now - s.last < day);
        self.known_ips
            .retain(|_, s| now - s.last < KNOWN_LOGIN_RETENTION);
        self.known_networks
            .retain(|_, s| now - s.last < KNOWN_LOGIN_RETENTION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_failure(t: i64, ip: &'static str) -> Event<'static> {
        Event {
            time: Some(t),
            kind: "smtpd.sasl_auth_failed",
            failure: Some("auth"),
            client_ip: Some(ip),
            ..Event::default()
        }
    }

    #[test]
    fn a_brute_force_builds_up_per_address_and_slides_out() {
        let mut b = Behaviour::new();
        let mut last = Observed::default();
        for i in 0..57 {
            last = b.observe(&auth_failure(1_000 + i * 5, "203.0.113.9"));
        }
        assert_eq!(last.get(Measure::AuthFailures10mByIp), 57.0);
        assert_eq!(last.get(Measure::AuthFailures1hByIp), 57.0);
        let other = b.observe(&auth_failure(1_300, "198.51.100.1"));
        assert_eq!(other.get(Measure::AuthFailures10mByIp), 1.0);
        // Any line of the attacker's address carries its history.
        let connect = b.observe(&Event {
            time: Some(1_400),
            kind: "smtpd.connect",
            client_ip: Some("203.0.113.9"),
            ..Event::default()
        });
        assert_eq!(connect.get(Measure::AuthFailures10mByIp), 57.0);
        assert_eq!(connect.get(Measure::NewClientConnections10m), 1.0);
        let later = b.observe(&auth_failure(1_000 + 2 * 3_600, "203.0.113.9"));
        assert_eq!(later.get(Measure::AuthFailures1hByIp), 1.0);
    }

    fn login(
        t: i64,
        kind: &'static str,
        user: &'static str,
        ip: &'static str,
        ok: bool,
    ) -> Event<'static> {
        Event {
            time: Some(t),
            kind,
            failure: (!ok).then_some("auth"),
            client_ip: Some(ip),
            user: Some(user),
            ..Event::default()
        }
    }

    #[test]
    fn users_per_address_and_new_addresses_per_user() {
        let mut b = Behaviour::new();
        let day = 86_400;
        b.observe(&login(0, "dovecot.login", "alice", "192.0.2.10", true));
        // A day later the office address is known, a new one is not.
        let known = b.observe(&login(
            2 * day,
            "dovecot.login",
            "alice",
            "192.0.2.10",
            true,
        ));
        assert_eq!(known.get(Measure::NewIpForUser), 0.0);
        let same_net = b.observe(&login(
            2 * day,
            "dovecot.login",
            "alice",
            "192.0.2.77",
            true,
        ));
        assert_eq!(same_net.get(Measure::NewIpForUser), 1.0);
        assert_eq!(same_net.get(Measure::NewNetworkForUser), 0.0);
        let mut spray = Observed::default();
        for (i, user) in ["admin", "info", "sales", "test", "alice"]
            .iter()
            .enumerate()
        {
            spray = b.observe(&login(
                2 * day + 600 * i as i64,
                "dovecot.auth_failed",
                user,
                "45.9.9.9",
                false,
            ));
        }
        assert_eq!(spray.get(Measure::UsersTried1hByIp), 5.0);
        assert_eq!(spray.get(Measure::UsersTried1dByIp), 5.0);
        assert_eq!(spray.get(Measure::NewNetworkForUser), 1.0);
        assert_eq!(
            spray.get(Measure::Ips1dByUser),
            3.0,
            "alice: two office addresses and the sprayer"
        );
    }

    fn line(t: i64, kind: &'static str) -> Event<'static> {
        Event {
            time: Some(t),
            kind,
            queue_id: Some("4BC1F2A0B1"),
            ..Event::default()
        }
    }

    #[test]
    fn later_lines_of_a_message_are_attributed_to_its_user_and_sender() {
        let mut b = Behaviour::new();
        b.observe(&Event {
            client_ip: Some("203.0.113.50"),
            user: Some("Bob@example.org"),
            ..line(100, "smtpd.client")
        });
        b.observe(&Event {
            from: Some("bob@example.org"),
            ..line(101, "qmgr.queued")
        });
        let bounced = b.observe(&Event {
            to: Some("nobody@elsewhere.example"),
            status: Some("bounced"),
            ..line(102, "smtp.delivery")
        });
        assert_eq!(bounced.get(Measure::Messages1hByUser), 1.0);
        assert_eq!(bounced.get(Measure::Recipients1hByUser), 1.0);
        assert_eq!(bounced.get(Measure::Messages1hBySender), 1.0);
        assert_eq!(bounced.get(Measure::BounceRatio1hBySender), 1.0);
        assert_eq!(bounced.get(Measure::Messages1hByIp), 1.0);
        assert_eq!(bounced.get(Measure::NewIpForUser), 1.0);
        b.observe(&Event {
            notification_queue_id: Some("55471CE4C5"),
            ..line(103, "bounce.notification")
        });
        let dsn = b.observe(&Event {
            queue_id: Some("55471CE4C5"),
            message_id: Some("dsn.1@mx1.example.org"),
            ..line(104, "cleanup.message_id")
        });
        assert_eq!(
            dsn.get(Measure::Messages1hByUser),
            1.0,
            "the bounce is bob's too"
        );
        let delivered = b.observe(&Event {
            user: Some("bob@example.org"),
            message_id: Some("dsn.1@mx1.example.org"),
            ..Event {
                time: Some(105),
                kind: "dovecot.delivery",
                ..Event::default()
            }
        });
        assert_eq!(
            delivered.get(Measure::NullSenderMails1hToRecipient),
            1.0,
            "found by Message-ID"
        );
        b.observe(&line(106, "qmgr.removed"));
        b.observe(&Event {
            queue_id: Some("55471CE4C5"),
            ..line(107, "qmgr.removed")
        });
        assert!(b.queues.is_empty(), "a removed message is forgotten");
    }

    /// sendmail's usage errors are routine on this server; smtpd has never
    /// logged a fatal: its first one is rare, the thousandth sendmail one is
    /// not, and informational lines carry nothing.
    #[test]
    fn a_fatal_from_a_program_that_never_logged_one_is_rare() {
        let mut b = Behaviour::new();
        let line = |t: i64, program: &'static str, level: i64| Event {
            time: Some(t),
            kind: "postfix.fatal",
            program: Some(program),
            level,
            ..Event::default()
        };
        for t in 0..3000 {
            b.observe(&line(t, "postfix/smtpd", 0));
            if t % 3 == 0 {
                b.observe(&line(t, "postfix/sendmail", 3));
            }
        }
        let routine = b.observe(&line(3000, "postfix/sendmail", 3));
        assert_eq!(routine.get(Measure::LevelRarity), 0.0);
        let first = b.observe(&line(3001, "postfix/smtpd", 3));
        assert!(first.get(Measure::LevelRarity) > 1.5, "{first:?}");
        let info = b.observe(&line(3002, "postfix/qmgr", 0));
        assert_eq!(info.get(Measure::LevelRarity), 0.0, "a first info line too");
    }

    /// An account under a password attack: the failures show on the
    /// failures and on a login from an address the user never used (the
    /// attacker getting in), not on the user's own login from home.
    #[test]
    fn others_failures_for_a_user_do_not_mark_the_users_usual_login() {
        let mut b = Behaviour::new();
        let login = |t: i64, ip: &'static str| Event {
            time: Some(t),
            kind: "dovecot.login",
            client_ip: Some(ip),
            user: Some("alice"),
            ..Event::default()
        };
        b.observe(&login(0, "192.0.2.10"));
        let day = 86_400 + 60;
        for i in 0..5 {
            b.observe(&Event {
                user: Some("alice"),
                ..auth_failure(day + i, "203.0.113.66")
            });
        }
        let failure = b.observe(&Event {
            user: Some("alice"),
            ..auth_failure(day + 5, "203.0.113.67")
        });
        assert_eq!(failure.get(Measure::AuthFailures1hByUser), 6.0);
        let home = b.observe(&login(day + 6, "192.0.2.10"));
        assert_eq!(home.get(Measure::AuthFailures1hByUser), 0.0);
        let same_network = b.observe(&login(day + 7, "192.0.2.11"));
        assert_eq!(same_network.get(Measure::AuthFailures1hByUser), 0.0);
        let stranger = b.observe(&login(day + 8, "203.0.113.67"));
        assert_eq!(stranger.get(Measure::AuthFailures1hByUser), 6.0);
    }

    /// A Dovecot session's disconnect names the user and the session, not
    /// the address: it is the login's, so an attack on the user's name does
    /// not mark the end of the user's own session from home.
    #[test]
    fn a_dovecot_sessions_lines_come_from_its_logins_address() {
        let mut b = Behaviour::new();
        let login = |t: i64, session: &'static str| Event {
            time: Some(t),
            kind: "dovecot.login",
            client_ip: Some("192.0.2.10"),
            user: Some("alice"),
            session: Some(session),
            ..Event::default()
        };
        let end = |t: i64, session: &'static str| Event {
            time: Some(t),
            kind: "dovecot.disconnect",
            user: Some("alice"),
            session: Some(session),
            ..Event::default()
        };
        b.observe(&login(0, "s0"));
        b.observe(&end(10, "s0"));
        let day = 86_400 + 60;
        b.observe(&login(day, "s1"));
        for i in 0..5 {
            b.observe(&Event {
                user: Some("alice"),
                ..auth_failure(day + 1 + i, "203.0.113.66")
            });
        }
        let own = b.observe(&end(day + 10, "s1"));
        assert_eq!(own.get(Measure::AuthFailures1hByUser), 0.0);
        assert!(b.dovecot_sessions.is_empty(), "the disconnect ends it");
        let unknown = b.observe(&end(day + 11, "s2"));
        assert_eq!(unknown.get(Measure::AuthFailures1hByUser), 5.0);
    }

    /// A content filter's re-injection: `connect`, `client=`, the message's
    /// lines, `disconnect`, all from loopback. The disconnect names no queue
    /// id, but its process's session queued the message, so it carries the
    /// message's sender, even when qmgr removed the message first. Another
    /// process's disconnect, or the same process's next session, does not.
    #[test]
    fn a_sessions_disconnect_belongs_to_the_message_it_queued() {
        let mut b = Behaviour::new();
        let smtpd = |t: i64, kind: &'static str, process: u64| Event {
            time: Some(t),
            kind,
            client_ip: Some("127.0.0.1"),
            process: Some(process),
            ..Event::default()
        };
        let spam = |b: &mut Behaviour, t: i64, queue: &'static str, removed: bool| {
            b.observe(&smtpd(t, "smtpd.connect", 7));
            b.observe(&Event {
                queue_id: Some(queue),
                ..smtpd(t, "smtpd.client", 7)
            });
            b.observe(&Event {
                queue_id: Some(queue),
                from: Some("flood@example.org"),
                ..line(t, "qmgr.queued")
            });
            if removed {
                b.observe(&Event {
                    queue_id: Some(queue),
                    ..line(t, "qmgr.removed")
                });
            }
            b.observe(&smtpd(t, "smtpd.disconnect", 7))
        };
        let first = spam(&mut b, 100, "4BC1F2A0B1", false);
        assert_eq!(first.get(Measure::Messages1hBySender), 1.0);
        let second = spam(&mut b, 101, "4BC1F2A0B2", true);
        assert_eq!(
            second.get(Measure::Messages1hBySender),
            2.0,
            "after removal"
        );
        assert!(b.sessions.is_empty(), "the disconnect ends the session");
        let other = b.observe(&smtpd(102, "smtpd.disconnect", 8));
        assert_eq!(other.get(Measure::Messages1hBySender), 0.0);
        b.observe(&smtpd(103, "smtpd.connect", 7));
        let next = b.observe(&smtpd(104, "smtpd.disconnect", 7));
        assert_eq!(next.get(Measure::Messages1hBySender), 0.0, "a new session");
    }
    #[test]
    fn a_burst_above_the_users_usual_hour() {
        let mut b = Behaviour::new();
        let send = |b: &mut Behaviour, t: i64| {
            b.observe(&Event {
                time: Some(t),
                kind: "roundcube.sent",
                user: Some("carol"),
                ..Event::default()
            })
        };
        for i in 0..5 {
            send(&mut b, 9 * 3_600 + i * 60); // five messages on day 0
        }
        let mut burst = Observed::default();
        for i in 0..40 {
            burst = send(&mut b, 86_400 + 9 * 3_600 + i * 30);
        }
        assert_eq!(burst.get(Measure::Messages1hByUser), 40.0);
        assert_eq!(burst.get(Measure::Messages1hAboveUsualByUser), 35.0);
    }

    #[test]
    fn backscatter_counts_bounces_to_the_domain_and_rarity_falls_with_use() {
        let mut b = Behaviour::new();
        let mut last = Observed::default();
        for i in 0..30 {
            last = b.observe(&Event {
                time: Some(500 + i),
                kind: "smtpd.reject",
                failure: Some("reject"),
                client_ip: Some("198.51.100.7"),
                from: Some(""),
                to: Some(["x@example.org", "y@example.org"][i as usize % 2]),
                reject_dsn: Some("5.1.1"),
                reject_reason: Some(
                    "Recipient address rejected: User unknown in virtual mailbox table",
                ),
                ..Event::default()
            });
        }
        assert_eq!(last.get(Measure::NullSenderMails1hToDomain), 30.0);
        assert_eq!(last.get(Measure::NullSenderMails1hToRecipient), 15.0);
        assert_eq!(last.get(Measure::UnknownRecipients1hByIp), 30.0);
        assert_eq!(last.get(Measure::RejectRatio1hByIp), 1.0);
        // Common kinds are 0; only many events make a rarity measurable.
        assert_eq!(last.get(Measure::KindRarity), 0.0);
        for i in 0..5_000 {
            b.observe(&Event {
                time: Some(600 + i / 100),
                kind: "smtpd.connect",
                message: Some("connect from x[192.0.2.1]"),
                ..Event::default()
            });
        }
        let rare = b.observe(&Event {
            time: Some(700),
            kind: "postfix.panic",
            message: Some("panic: myfree: corrupt or unallocated memory block"),
            ..Event::default()
        });
        assert!(rare.get(Measure::KindRarity) > 2.0, "{rare:?}");
        assert!(rare.get(Measure::TemplateRarity) > 2.0, "{rare:?}");
    }

    #[test]
    fn templates_mask_what_varies() {
        assert_eq!(
            template("warning: hostname a.example does not resolve to address 192.0.2.1"),
            template("warning: hostname b.example does not resolve to address 203.0.113.77")
        );
        assert_eq!(
            template("4BC1F2A0B1: to=<a@x.example>, relay=none, status=bounced"),
            template("9F00AA11BB: to=<b@y.example>, relay=none, status=bounced")
        );
        assert_ne!(
            template("fatal: open database /etc/postfix/x.db: No such file or directory"),
            template("panic: myfree: corrupt or unallocated memory block")
        );
    }

    #[test]
    fn loopback_clients_show_only_their_failures() {
        let mut b = Behaviour::new();
        for i in 0..20 {
            b.observe(&login(i, "dovecot.auth_failed", "x", "127.0.0.1", false));
        }
        let webmail_user = b.observe(&login(30, "dovecot.login", "alice", "127.0.0.1", true));
        assert_eq!(webmail_user.get(Measure::AuthFailures1hByIp), 0.0);
        assert_eq!(webmail_user.get(Measure::NewIpForUser), 0.0);
        let failure = b.observe(&login(40, "dovecot.auth_failed", "bob", "127.0.0.1", false));
        assert_eq!(failure.get(Measure::AuthFailures1hByIp), 21.0);
        assert_eq!(failure.get(Measure::UsersTried1hByIp), 2.0);
    }

    #[test]
    fn memory_is_bounded_by_the_caps() {
        let mut b = Behaviour::new();
        for i in 0..(LIMITS.ips as i64 * 2) {
            let ip = format!("10.{}.{}.{}", i >> 16 & 255, i >> 8 & 255, i & 255);
            b.observe(&Event {
                time: Some(i / 100),
                kind: "smtpd.connect",
                client_ip: Some(&ip),
                ..Event::default()
            });
        }
        assert!(
            b.ips.len() <= LIMITS.ips + LIMITS.ips / 10,
            "{}",
            b.ips.len()
        );
    }

    #[test]
    fn saved_state_continues_exactly() {
        let events: Vec<Event<'static>> = (0..50)
            .map(|i| {
                auth_failure(
                    1_000 + i * 7,
                    ["203.0.113.9", "198.51.100.2"][i as usize % 2],
                )
            })
            .collect();
        let mut whole = Behaviour::new();
        let expected: Vec<Observed> = events.iter().map(|e| whole.observe(e)).collect();
        let dir = std::env::temp_dir().join(format!("pf-behaviour-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let mut first = Behaviour::new();
        let mut got: Vec<Observed> = events[..20].iter().map(|e| first.observe(e)).collect();
        first.save(&path).unwrap();
        let mut second = Behaviour::load(&path).unwrap();
        got.extend(events[20..].iter().map(|e| second.observe(e)));
        assert_eq!(got, expected);
        std::fs::write(&path, "{\"format\":99}").unwrap();
        assert!(Behaviour::load(&path)
            .unwrap_err()
            .to_string()
            .contains("not a pf-features state"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn connect(t: i64, tag: &'static str, ip: String) -> Event<'static> {
        let (instance, daemon) = tag.rsplit_once('/').unwrap_or(("postfix", tag));
        Event {
            time: Some(t),
            kind: if daemon == "postscreen" {
                "postscreen.connect"
            } else {
                "smtpd.connect"
            },
            client_ip: Some(Box::leak(ip.into_boxed_str())),
            program: Some(if daemon == "postscreen" {
                "postfix/postscreen"
            } else {
                "postfix/smtpd"
            }),
            instance: (instance != "postfix").then_some(instance),
            ..Event::default()
        }
    }

    #[test]
    fn new_clients_are_counted_per_listener() {
        let mut b = Behaviour::new();
        // Scanners on port 25, through postscreen and then smtpd.
        for i in 0..30 {
            b.observe(&connect(
                1_000 + i,
                "postfix/postscreen",
                format!("198.51.100.{i}"),
            ));
            b.observe(&connect(
                1_000 + i,
                "postfix/smtpd",
                format!("198.51.100.{i}"),
            ));
        }
        // A new client on submission is the first there.
        let submission = b.observe(&connect(
            1_100,
            "postfix/submission/smtpd",
            "192.0.2.1".into(),
        ));
        assert_eq!(submission.get(Measure::NewClientConnections10m), 1.0);
        let port25 = b.observe(&connect(1_100, "postfix/smtpd", "198.51.100.200".into()));
        assert_eq!(port25.get(Measure::NewClientConnections10m), 61.0);
        // A botnet's logins on submission: one address after another.
        let mut last = Observed::default();
        for i in 2..12 {
            last = b.observe(&connect(
                1_200 + i,
                "postfix/submission/smtpd",
                format!("192.0.2.{i}"),
            ));
        }
        assert_eq!(last.get(Measure::NewClientConnections10m), 11.0);
        // The client's later lines that name no listener show its listener's count.
        let failure = b.observe(&auth_failure(1_300, "192.0.2.11"));
        assert_eq!(failure.get(Measure::NewClientConnections10m), 11.0);
        // A client never seen connecting (a Dovecot login) gets the server-wide count.
        let imap = b.observe(&login(1_300, "dovecot.login", "bob", "203.0.113.5", false));
        assert_eq!(imap.get(Measure::NewClientConnections10m), 72.0);
        // The counts slide out after 10 minutes.
        let later = b.observe(&connect(
            1_900,
            "postfix/submission/smtpd",
            "192.0.2.100".into(),
        ));
        assert_eq!(later.get(Measure::NewClientConnections10m), 1.0);
    }
}
