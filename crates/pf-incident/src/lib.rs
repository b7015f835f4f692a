//! Incidents: one report per attack, not one per log line.
//!
//! A brute force is hundreds of anomalous lines from one address; fail2ban
//! bans that address once and CrowdSec raises one alert per scenario and
//! source. Here each anomalous record joins the incident of the entity that
//! explains it, read off its strongest features (`auth_failures_1h_by_ip`
//! is about the client, `auth_failures_1h_by_user` about the account,
//! `null_sender_mails_1h_to_domain` about a recipient domain; a daemon's
//! fatal error or a server-wide flood is about its kind). An incident stays
//! open while anomalies keep coming within `gap` of event time and closes
//! after it; it escalates when a line is more severe than any before.

use chrono::DateTime;
use pf_record::view::ScoredView;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// What an incident is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// A client address (IPv6 by its /64: one host's addresses).
    Client,
    /// A login name (SASL, IMAP/POP3, webmail).
    User,
    /// An envelope sender.
    Sender,
    /// A recipient domain.
    Domain,
    /// One message, by its queue id.
    Queue,
    /// A server-wide event: the record's kind.
    Kind,
    /// Many clients or accounts doing one thing (the key says what:
    /// `logins`, `refusals`, `sending`, `bounces`, `new_clients`, or a kind).
    Campaign,
}

impl Entity {
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Client => "client",
            Entity::User => "user",
            Entity::Sender => "sender",
            Entity::Domain => "domain",
            Entity::Queue => "queue",
            Entity::Kind => "kind",
            Entity::Campaign => "campaign",
        }
    }

    /// The entity a feature describes, by the convention of its name.
    pub fn of_feature(name: &str) -> Option<Entity> {
        if name.ends_with("_by_ip") {
            Some(Entity::Client)
        } else if name.ends_with("_by_user") || name.ends_with("_for_user") {
            Some(Entity::User)
        } else if name.ends_with("_by_sender") {
            Some(Entity::Sender)
        } else if name.ends_with("_to_domain") {
            Some(Entity::Domain)
        } else if name.ends_with("_10m") {
            // Server-wide rates (pickups, new clients, new destinations).
            Some(Entity::Kind)
        } else {
            None
        }
    }
}

/// What an anomaly is evidence of, by its feature: an attack spread over
/// many addresses and accounts shows in one of these, whichever line of
/// the session (connect, failure, disconnect) carries it. `None` for the
/// features of the line itself (its kind, wording, level, hour).
pub fn class_of_feature(name: &str) -> Option<&'static str> {
    const CLASSES: [(&str, &[&str]); 5] = [
        (
            "logins",
            &[
                "auth_failures",
                "users_tried",
                "ips_1d_by_user",
                "new_ip_for",
                "new_network_for",
            ],
        ),
        (
            "refusals",
            &["reject", "unknown_recipients", "relay_denied"],
        ),
        ("bounces", &["null_sender"]),
        (
            "sending",
            &[
                "messages_",
                "recipients_",
                "pickups",
                "new_destinations",
                "bounce_ratio",
                "deferral_ratio",
            ],
        ),
        ("new_clients", &["new_client_connections"]),
    ];
    CLASSES
        .iter()
        .find(|(_, prefixes)| prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(class, _)| *class)
}

pub use pf_record::severity::severity_rank;
use pf_record::severity::SEVERITIES;

/// What one scored record says, for grouping.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Event time in µs since the epoch (`ts`), if the line had one.
    pub time: Option<i64>,
    pub ts: Option<String>,
    pub kind: String,
    /// The values of each entity the record names.
    pub entities: BTreeMap<Entity, String>,
    /// Set for an anomalous record.
    pub anomaly: Option<Flagged>,
    pub raw: String,
    /// `topic/partition` or the file, and the offset or line in it.
    pub location: Option<(String, i64)>,
    /// The location is a Kafka offset: a record below the highest offset
    /// already seen there is a redelivery.
    pub from_kafka: bool,
}

/// The detection of an anomalous record.
#[derive(Debug, Clone, Default)]
pub struct Flagged {
    pub severity: u8,
    pub rarity: f64,
    /// `(feature, contribution)`, strongest first, as pf-score wrote them.
    pub top_features: Vec<(String, f64)>,
}

impl Observation {
    /// Reads a record as pf-score wrote it; fields of the wrong type count
    /// as absent.
    pub fn from_view(record: &ScoredView<'_>) -> Observation {
        let fields = record.fields.as_ref();
        let mut entities = BTreeMap::new();
        if let Some(ip) = fields
            .and_then(|f| f.client_ip.as_deref())
            .and_then(client_key)
        {
            entities.insert(Entity::Client, ip);
        }
        let kind = record.kind.as_deref().unwrap_or("unknown").to_string();
        // Dovecot's delivery names the mailbox it delivered to, a recipient
        // (as pf-features counts it), not a login.
        let delivery = kind == "dovecot.delivery";
        let user = fields.and_then(|f| f.sasl_username.as_deref().or(f.user.as_deref()));
        if let Some(user) = user.filter(|_| !delivery) {
            entities.insert(Entity::User, user.to_string());
        }
        if let Some(from) = fields
            .and_then(|f| f.from.as_deref())
            .filter(|f| !f.is_empty())
        {
            entities.insert(Entity::Sender, from.to_string());
        }
        if let Some(domain) = fields
            .and_then(|f| f.to.as_deref())
            .or(user.filter(|_| delivery))
            .and_then(|t| t.rsplit_once('@'))
            .map(|(_, d)| d)
        {
            entities.insert(Entity::Domain, domain.trim_end_matches('>').to_lowercase());
        }
        if let Some(queue) = fields.and_then(|f| f.queue_id.as_deref()) {
            entities.insert(Entity::Queue, queue.to_string());
        }
        entities.insert(Entity::Kind, kind.clone());
        let ts = record.ts.as_deref().map(str::to_string);
        let time = ts
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros());
        let anomaly = record
            .detection
            .as_ref()
            .filter(|d| d.is_anomaly == Some(true))
            .map(|d| Flagged {
                severity: severity_rank(d.severity.as_deref().unwrap_or("low")).max(1),
                rarity: d.rarity.unwrap_or(0.0),
                top_features: d
                    .top_features
                    .iter()
                    .filter_map(|t| Some((t.feature.as_deref()?.to_string(), t.contribution?)))
                    .collect(),
            });
        let kafka = kafka_position(record);
        let from_kafka = kafka.is_some();
        let location = kafka.or_else(|| {
            let source = record.source.as_ref()?;
            Some((
                source.file.as_deref().unwrap_or("stdin").to_string(),
                source.line?,
            ))
        });
        // Only an anomaly's line can become a sample.
        let raw = match anomaly {
            Some(_) => record.raw.as_deref().unwrap_or_default().to_string(),
            None => String::new(),
        };
        Observation {
            time,
            ts,
            kind,
            entities,
            anomaly,
            raw,
            location,
            from_kafka,
        }
    }

    /// [`Observation::from_view`] of a record held as a map.
    pub fn from_record(record: &Map<String, Value>) -> Observation {
        let value = Value::Object(record.clone());
        Observation::from_view(&ScoredView::deserialize(&value).unwrap_or_default())
    }

    /// The entity that explains this anomaly: the first of its strongest
    /// features that names an entity the record has.
    /// A server-wide rate (`pickups_10m`) names the server's campaign of its
    /// class, whatever line of the flood carries it; but a wave of new
    /// clients is written on each new client's lines, and those go by the
    /// client (or what else explains them).
    pub fn named_key(&self) -> Option<(Entity, &str)> {
        self.anomaly
            .iter()
            .flat_map(|a| &a.top_features)
            .find_map(|(f, _)| match Entity::of_feature(f)? {
                Entity::Kind => class_of_feature(f)
                    .filter(|class| *class != "new_clients")
                    .map(|class| (Entity::Campaign, class)),
                e => self.entities.get(&e).map(|v| (e, v.as_str())),
            })
    }

    /// What the anomaly is evidence of: the class of its strongest feature
    /// that has one, else its kind.
    /// The class of the feature that names the entity it goes by comes
    /// first: a client refused for unknown recipients during a wave of
    /// null-sender mail is one of the refused.
    pub fn campaign_class(&self) -> String {
        let naming = self
            .anomaly
            .iter()
            .flat_map(|a| &a.top_features)
            .find(|(f, _)| {
                Entity::of_feature(f)
                    .is_some_and(|e| e != Entity::Kind && self.entities.contains_key(&e))
            })
            .and_then(|(f, _)| class_of_feature(f));
        naming
            .or_else(|| self.class())
            .map_or_else(|| self.kind.clone(), str::to_string)
    }

    /// The class of its strongest feature about an entity, else of its
    /// strongest server-wide rate: a failed login from a new address during
    /// a wave of new clients is evidence of a login attack.
    fn class(&self) -> Option<&'static str> {
        let tops = || self.anomaly.iter().flat_map(|a| &a.top_features);
        let about = |server_wide: bool| {
            tops()
                .filter(|(f, _)| (Entity::of_feature(f) == Some(Entity::Kind)) == server_wide)
                .find_map(|(f, _)| class_of_feature(f))
        };
        about(false).or_else(|| about(true))
    }

    /// The client or account the line names; else the campaign of what it
    /// is evidence of (a delivery line explained by its sender's volume,
    /// which it does not name); else its kind.
    pub fn fallback_key(&self) -> (Entity, &str) {
        [Entity::Client, Entity::User]
            .into_iter()
            .find_map(|e| self.entities.get(&e).map(|v| (e, v.as_str())))
            .or_else(|| self.class().map(|class| (Entity::Campaign, class)))
            .unwrap_or((Entity::Kind, &self.kind))
    }
}

/// `("topic/partition", offset)` of a record read from Kafka.
fn kafka_position(record: &ScoredView<'_>) -> Option<(String, i64)> {
    let (topic, partition, offset) = record.source.as_ref()?.kafka()?;
    Some((format!("{topic}/{partition}"), offset))
}

/// An address as the key of its incident: IPv4 as it is, IPv6 by its /64.
pub fn client_key(ip: &str) -> Option<String> {
    match pf_record::ip::parse_ip(ip)? {
        IpAddr::V4(v4) => Some(v4.to_string()),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

/// How incidents are formed.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// An incident closes once no anomaly joined it for this long (µs of event time).
    pub gap_micros: i64,
    /// Sample lines kept per incident.
    pub samples: usize,
    /// With this many incidents of one kind open for different clients (or
    /// accounts), the next client's anomalies of that kind join one
    /// incident of the kind instead: an attack from many addresses is a
    /// campaign, not one incident per address. 0: never.
    pub campaign_after: usize,
    /// A client's (or account's) new incident below `high` is held this
    /// long (µs of event time) before it is reported opened, so that the
    /// first addresses of a campaign join it instead of each opening an
    /// incident of its own (Alertmanager's `group_wait`). 0: never held.
    pub hold_micros: i64,
    /// An incident whose key had an incident that ended within
    /// [`RECALL_MICROS`] waits twice that one's gap before it closes, up to
    /// this (µs); at most `gap_micros`: never longer. A slow attack that
    /// pauses between bursts is then one incident, not one per burst.
    pub max_gap_micros: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            gap_micros: 30 * 60 * 1_000_000,
            samples: 3,
            campaign_after: 3,
            hold_micros: 120 * 1_000_000,
            max_gap_micros: 240 * 60 * 1_000_000,
        }
    }
}

/// One incident, as saved and as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub entity: Entity,
    pub key: String,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    last_micros: Option<i64>,
    /// Set while the incident is held ([`Policy::hold_micros`]): when it
    /// is reported opened if no campaign took it first.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    held_until: Option<i64>,
    /// How long it stays open without a new anomaly (µs), when longer than
    /// the policy's gap because its key keeps coming back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    gap_micros: Option<i64>,
    /// Incidents of its key that ended within a day before it opened (and
    /// followed each other within a day): 0 for a first.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recurs: u64,
    /// Anomalous lines that joined it.
    pub anomalies: u64,
    /// Every line of its entity while it was open, anomalous or not.
    pub lines: u64,
    pub severity: String,
    pub rarity: f64,
    /// The kind most of its anomalous lines are (`smtpd.sasl_auth_failed`).
    #[serde(default)]
    pub kind: String,
    /// What its first anomaly was evidence of ([`class_of_feature`], else
    /// the kind): incidents of one class form a campaign.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub class: String,
    /// A campaign's clients and accounts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub members: u64,
    /// The anomalies its members sent (a campaign also takes lines that
    /// name no client or account).
    #[serde(default, skip_serializing_if = "is_zero")]
    member_anomalies: u64,
    /// Its anomalous lines by kind (at most [`MAX_KINDS`] kinds, the rest as `other`).
    #[serde(default)]
    pub kinds: BTreeMap<String, u64>,
    /// Contributions summed over its lines, most anomalous first.
    pub top_features: Vec<(String, f64)>,
    #[serde(default)]
    feature_sums: BTreeMap<String, f64>,
    pub samples: Vec<String>,
    /// Per `topic/partition` or file: the first and last offset or line.
    pub records: BTreeMap<String, (i64, i64)>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Opened,
    Escalated,
    Closed,
    /// A client (or account) of a campaign sent enough anomalies to act on
    /// (a ban), or more severe ones than reported before: the incident is
    /// the campaign's, seen from that member. For the files fail2ban reads,
    /// not for the admin's inbox.
    Member,
    /// An anomaly came after a pause longer than the policy's gap, into an
    /// incident kept open because its key keeps coming back
    /// ([`Policy::max_gap_micros`]): the attack resumed. For the files
    /// fail2ban reads (a ban that ran out during the pause is renewed),
    /// not for the admin's inbox.
    Resumed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "opened",
            Change::Escalated => "escalated",
            Change::Closed => "closed",
            Change::Member => "member",
            Change::Resumed => "resumed",
        }
    }
}

/// An incident event: the change and the incident as it stands after it.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentEvent {
    pub change: Change,
    pub incident: Incident,
}

impl IncidentEvent {
    /// The event, with the incident's three most anomalous summed features
    /// worked out (once per event, not per line).
    fn new(change: Change, mut incident: Incident) -> IncidentEvent {
        let mut tops: Vec<(String, f64)> = incident
            .feature_sums
            .iter()
            .map(|(f, c)| (f.clone(), *c))
            .collect();
        tops.sort_by(|a, b| a.1.total_cmp(&b.1));
        tops.truncate(3);
        incident.top_features = tops;
        if let Some((kind, _)) = incident
            .kinds
            .iter()
            .filter(|(k, _)| k.as_str() != OTHER_KIND)
            .max_by_key(|(_, n)| **n)
        {
            incident.kind = kind.clone();
        }
        IncidentEvent { change, incident }
    }

    /// The line for a human on a terminal or in the journal:
    /// `HIGH   opened   client 203.0.113.7  1 in 250,000  40 anomalous / 80 lines  08:00:00..08:19:30  auth_failures_1h_by_ip (-320.0), …  | sample`.
    pub fn alert_line(&self, colour: bool) -> String {
        let i = &self.incident;
        let (on, off) = match (colour, i.severity.as_str()) {
            (true, "high") => ("\x1b[1;31m", "\x1b[0m"),
            (true, "medium") => ("\x1b[33m", "\x1b[0m"),
            (true, _) => ("\x1b[36m", "\x1b[0m"),
            (false, _) => ("", ""),
        };
        let why: Vec<String> = i
            .top_features
            .iter()
            .map(|(f, c)| format!("{f} ({c:+.1})"))
            .collect();
        // Keys and samples come from log lines, which attackers write: no
        // terminal control characters.
        let safe = |t: &str| -> String {
            t.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        };
        let again = match i.recurs {
            0 => String::new(),
            n => format!(" (back: {n} earlier within a day)"),
        };
        format!(
            "{on}{:<6}{off} {:<9} {} {}{again}  {}  {} anomalous / {} lines  {} .. {}  {}  | {}",
            i.severity.to_uppercase(),
            self.change.as_str(),
            i.entity.as_str(),
            safe(&i.key),
            pf_record::rarity::describe(i.rarity),
            i.anomalies,
            i.lines,
            i.first_seen,
            i.last_seen,
            why.join(", "),
            safe(i.samples.last().map(String::as_str).unwrap_or(""))
        )
    }

    /// An `incidents.jsonl` line read back (the delivery queues hold them).
    pub fn from_json(line: &str) -> Result<IncidentEvent, serde_json::Error> {
        #[derive(Deserialize)]
        struct Line {
            event: Change,
            #[serde(flatten)]
            incident: Incident,
        }
        let line: Line = serde_json::from_str(line)?;
        Ok(IncidentEvent {
            change: line.event,
            incident: line.incident,
        })
    }

    /// The `incidents.jsonl` line: `{"event":"opened", ...the incident}`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.incident).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("last_micros");
            m.remove("held_until");
            m.remove("gap_micros");
            m.remove("feature_sums");
            m.remove("member_anomalies");
            let mut out = Map::new();
            out.insert("event".into(), Value::from(self.change.as_str()));
            out.extend(std::mem::take(m));
            return Value::Object(out);
        }
        v
    }
}

/// The open incidents and the rules that form them; saved and loaded as
/// JSON so a restart carries on the same incidents.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Tracker {
    open: BTreeMap<String, Incident>,
    #[serde(skip)]
    policy: Policy,
    /// Highest Kafka offset taken per `topic/partition`, and how many lines
    /// at it: what comes again after a restart (Kafka redelivers from the
    /// last commit) is skipped.
    #[serde(default)]
    taken: BTreeMap<String, (i64, u32)>,
    /// Lines at the highest taken offset seen by this run (not saved).
    #[serde(skip)]
    seen_at_taken: BTreeMap<String, u32>,
    /// The incident each message (queue id) of an open incident is in.
    #[serde(default)]
    messages: BTreeMap<String, String>,
    /// Clients (or accounts) whose anomalies joined an open campaign: the
    /// campaign's key and how many.
    #[serde(default)]
    in_campaign: BTreeMap<String, (String, u32)>,
    /// Per member of [`Tracker::in_campaign`]: what its own anomalies were.
    #[serde(default)]
    members: BTreeMap<String, Member>,
    /// Where `topic/partition` is written for a lookup, so a normal record
    /// costs no allocation.
    #[serde(skip)]
    place: String,
    /// The latest event time observed by this run.
    #[serde(skip)]
    latest: Option<i64>,
    /// Per key, how its latest incident ended: what a new incident of the
    /// key within [`RECALL_MICROS`] continues from.
    #[serde(default)]
    ended: BTreeMap<String, Ended>,
}

/// How an incident ended, for the next one of its key.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Ended {
    /// Its last anomaly (µs of event time).
    last: i64,
    /// The gap it was closed after (µs).
    gap: i64,
    /// It and the incidents of the key before it, each within a day of the last.
    incidents: u64,
}

/// How long an ended incident is remembered for the next of its key.
pub const RECALL_MICROS: i64 = 24 * 3_600 * 1_000_000;
/// Keys remembered; past this, those that ended longest ago are forgotten.
const MAX_ENDED: usize = 20_000;

/// Kinds counted per incident; a line of any further kind counts as [`OTHER_KIND`].
pub const MAX_KINDS: usize = 16;
const OTHER_KIND: &str = "other";

/// Messages remembered for [`Tracker::messages`], so a flood cannot grow it without end.
const MAX_MESSAGES: usize = 200_000;
/// A client whose anomalies joined a campaign this many times is reported
/// as a [`Change::Member`] (what a ban acts on)...
const MEMBER_AFTER: u32 = 3;
/// ...and past this many, and [`OUTLIER`] times the other members'
/// anomalies on average, it is an attack of its own (a brute force that
/// began while a campaign was open): that anomaly opens its own incident.
/// A campaign's addresses send a few lines each.
const ON_ITS_OWN_AFTER: u32 = 10;
const OUTLIER: f64 = 5.0;

/// A campaign's member as its own anomalies show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Member {
    /// The highest severity of its anomalies, and the highest reported in a
    /// [`Change::Member`] event.
    highest: u8,
    reported: u8,
    rarity: f64,
    kinds: BTreeMap<String, u64>,
}

/// Where an anomaly goes: its own incident, or a campaign as a member.
enum Joins {
    Own(String, Entity, String),
    Campaign {
        key: String,
        class: String,
        member: (String, Entity, String),
        /// Its anomalies in the campaign, this one included; `None` when
        /// the table of members is full (it joins, uncounted).
        anomalies: Option<u32>,
        /// This is its first anomaly there.
        joined: bool,
        /// Held incidents of the class that the campaign forming now takes in.
        absorbed: Vec<Incident>,
    },
}

fn key_of(entity: Entity, value: &str) -> String {
    format!("{} {value}", entity.as_str())
}

impl Tracker {
    pub fn new(policy: Policy) -> Tracker {
        Tracker {
            policy,
            ..Tracker::default()
        }
    }

    /// A tracker saved by [`Tracker::to_json`], under `policy`.
    pub fn from_json(text: &str, policy: Policy) -> Result<Tracker, serde_json::Error> {
        let mut t: Tracker = serde_json::from_str(text)?;
        t.policy = policy;
        Ok(t)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// The incidents reported open (held ones are not yet).
    pub fn open_count(&self) -> usize {
        self.open
            .values()
            .filter(|i| i.held_until.is_none())
            .count()
    }

    /// [`Tracker::observe`] for a record as pf-score wrote it. Most records
    /// are normal and arrive while nothing is open: for those only the Kafka
    /// position is noted, without reading the rest of the record.
    pub fn observe_record(&mut self, record: &ScoredView<'_>) -> Vec<IncidentEvent> {
        if record.is_anomaly() || !self.open.is_empty() {
            return self.observe(&Observation::from_view(record));
        }
        if let Some((topic, partition, offset)) = record.source.as_ref().and_then(|s| s.kafka()) {
            self.is_kafka_redelivery(topic, partition, offset);
        }
        Vec::new()
    }

    /// Takes one record (anomalous or not) and returns what changed: the
    /// incidents its time closed, then the one it opened or escalated.
    pub fn observe(&mut self, obs: &Observation) -> Vec<IncidentEvent> {
        let mut events = Vec::new();
        if let (true, Some((place, offset))) = (obs.from_kafka, &obs.location) {
            if self.is_redelivery(place, *offset) {
                return events;
            }
        }
        if let Some(t) = obs.time {
            self.latest = Some(self.latest.map_or(t, |l| l.max(t)));
            events.extend(self.close_idle(t));
        }
        // Every line of an open incident's entity (a campaign's: of its
        // members) counts towards its span, once.
        let mut counted: Vec<String> = Vec::new();
        if !self.open.is_empty() {
            for (entity, value) in &obs.entities {
                let key = key_of(*entity, value);
                let campaign = self.in_campaign.get(&key).map(|(c, _)| c.clone());
                for k in [Some(key), campaign].into_iter().flatten() {
                    if counted.contains(&k) {
                        continue;
                    }
                    if let Some(incident) = self.open.get_mut(&k) {
                        incident.lines += 1;
                        counted.push(k);
                    }
                }
            }
        }
        let Some(anomaly) = &obs.anomaly else {
            return events;
        };
        // A message's later lines (qmgr, smtp, bounce) name neither its
        // client nor its account: they join the incident of the message's
        // earlier anomalous line.
        let queue = obs.entities.get(&Entity::Queue);
        let (key, entity, value) = match obs.named_key() {
            Some((entity, value)) => self.same_account(entity, value),
            None => match queue
                .and_then(|q| self.messages.get(q))
                .filter(|k| self.open.contains_key(*k))
            {
                Some(key) => {
                    let incident = &self.open[key];
                    (key.clone(), incident.entity, incident.key.clone())
                }
                None => {
                    let (entity, value) = obs.fallback_key();
                    (key_of(entity, value), entity, value.to_string())
                }
            },
        };
        let class = obs.campaign_class();
        let (key, entity, value, member) = match self.campaign_of(key, entity, value, &class) {
            Joins::Own(key, entity, value) => (key, entity, value, None),
            Joins::Campaign {
                key,
                class,
                member,
                anomalies,
                joined,
                absorbed,
            } => (
                key,
                Entity::Campaign,
                class,
                Some((member, anomalies, joined, absorbed)),
            ),
        };
        if let Some(queue) = queue {
            if self.messages.len() < MAX_MESSAGES {
                self.messages.insert(queue.clone(), key.clone());
            }
        }
        let opened = !self.open.contains_key(&key);
        let incident = self.open.entry(key.clone()).or_insert_with(|| Incident {
            id: incident_id(&key, obs),
            entity,
            key: value,
            first_seen: obs.ts.clone().unwrap_or_default(),
            last_seen: String::new(),
            last_micros: obs.time,
            held_until: None,
            gap_micros: None,
            recurs: 0,
            anomalies: 0,
            lines: 1,
            severity: SEVERITIES[0].into(),
            rarity: 0.0,
            kind: obs.kind.clone(),
            class: class.clone(),
            members: 0,
            member_anomalies: 0,
            kinds: BTreeMap::new(),
            top_features: Vec::new(),
            feature_sums: BTreeMap::new(),
            samples: Vec::new(),
            records: BTreeMap::new(),
        });
        let before = severity_rank(&incident.severity);
        let resumed = !opened
            && matches!((obs.time, incident.last_micros), (Some(t), Some(l)) if t - l > self.policy.gap_micros);
        let holds = matches!(entity, Entity::Client | Entity::User)
            && self.policy.hold_micros > 0
            && self.policy.campaign_after > 0;
        if opened && holds {
            incident.held_until = obs.time.map(|t| t.saturating_add(self.policy.hold_micros));
        }
        if let (true, Some(t), Some(ended)) = (opened, obs.time, self.ended.get(&key)) {
            if t.saturating_sub(ended.last) <= RECALL_MICROS {
                incident.recurs = ended.incidents;
                let gap = ended.gap.saturating_mul(2).min(self.policy.max_gap_micros);
                incident.gap_micros = Some(gap).filter(|g| *g > self.policy.gap_micros);
            }
        }
        incident.anomalies += 1;
        if !opened && !counted.contains(&key) {
            incident.lines += 1;
        }
        if let Some((_, _, joined, absorbed)) = &member {
            incident.member_anomalies += 1;
            incident.members += u64::from(*joined);
            if let (true, Some(first)) = (opened, absorbed.iter().min_by_key(|a| a.held_until)) {
                incident.first_seen = first.first_seen.clone();
            }
            for held in absorbed {
                absorb(incident, held, self.policy.samples);
            }
        }
        // Times as the log wrote them (with its offset); compared as instants.
        if obs.time >= incident.last_micros || incident.last_seen.is_empty() {
            incident.last_micros = obs.time.or(incident.last_micros);
            incident.last_seen = obs.ts.clone().unwrap_or_default();
        }
        if anomaly.severity > severity_rank(&incident.severity) {
            incident.severity = SEVERITIES[usize::from(anomaly.severity.min(3))].into();
        }
        let rises = severity_rank(&incident.severity) > before;
        incident.rarity = incident.rarity.max(anomaly.rarity);
        let kind = if incident.kinds.len() < MAX_KINDS || incident.kinds.contains_key(&obs.kind) {
            obs.kind.as_str()
        } else {
            OTHER_KIND
        };
        match incident.kinds.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                incident.kinds.insert(kind.to_string(), 1);
            }
        }
        for (feature, contribution) in &anomaly.top_features {
            match incident.feature_sums.get_mut(feature) {
                Some(sum) => *sum += contribution,
                None => {
                    incident.feature_sums.insert(feature.clone(), *contribution);
                }
            }
        }
        if incident.samples.len() < self.policy.samples {
            incident.samples.push(obs.raw.clone());
        }
        if let Some((place, at)) = &obs.location {
            let span = incident.records.entry(place.clone()).or_insert((*at, *at));
            span.0 = span.0.min(*at);
            span.1 = span.1.max(*at);
        }
        if incident.held_until.is_some() {
            // A `high` line is not held back.
            if severity_rank(&incident.severity) >= 3 {
                incident.held_until = None;
                events.push(IncidentEvent::new(Change::Opened, incident.clone()));
            }
        } else if opened || rises || resumed {
            let change = if opened {
                Change::Opened
            } else if rises {
                Change::Escalated
            } else {
                Change::Resumed
            };
            events.push(IncidentEvent::new(change, incident.clone()));
        }
        if let Some(((member_key, entity, value), Some(anomalies), _, _)) = member {
            let m = self.members.entry(member_key).or_default();
            m.highest = m.highest.max(anomaly.severity.min(3));
            m.rarity = m.rarity.max(anomaly.rarity);
            if m.kinds.len() < MAX_KINDS || m.kinds.contains_key(&obs.kind) {
                *m.kinds.entry(obs.kind.clone()).or_insert(0) += 1;
            }
            if anomalies >= MEMBER_AFTER && m.highest > m.reported {
                m.reported = m.highest;
                // The campaign's id and span, the member's own evidence:
                // its severity, rarity, kinds (what a ban filter reads) and
                // this line's features.
                let mut seen_from = incident.clone();
                seen_from.entity = entity;
                seen_from.key = value;
                seen_from.severity = SEVERITIES[usize::from(m.highest)].into();
                seen_from.rarity = m.rarity;
                seen_from.kinds = m.kinds.clone();
                seen_from.feature_sums = anomaly.top_features.iter().cloned().collect();
                seen_from.anomalies = u64::from(anomalies);
                seen_from.lines = u64::from(anomalies);
                seen_from.samples = vec![obs.raw.clone()];
                seen_from.first_seen = obs.ts.clone().unwrap_or_default();
                seen_from.last_seen = seen_from.first_seen.clone();
                seen_from.records = obs
                    .location
                    .iter()
                    .map(|(place, at)| (place.clone(), (*at, *at)))
                    .collect();
                events.push(IncidentEvent::new(Change::Member, seen_from));
            }
        }
        events
    }

    /// The incident of `entity`'s `value`; for an envelope sender that is
    /// a login name with an incident open (or the reverse), that one: an
    /// account sending as itself is one account, whichever line named it.
    fn same_account(&self, entity: Entity, value: &str) -> (String, Entity, String) {
        let key = key_of(entity, value);
        let alias = match entity {
            Entity::Sender => Entity::User,
            Entity::User => Entity::Sender,
            _ => return (key, entity, value.to_string()),
        };
        let other = key_of(alias, value);
        if !self.open.contains_key(&key) && self.open.contains_key(&other) {
            return (other, alias, value.to_string());
        }
        (key, entity, value.to_string())
    }

    /// The incident a client's (or account's) anomaly joins: its own, or,
    /// once [`Policy::campaign_after`] clients or accounts have incidents of
    /// its class open, the class's campaign, as a member, until it has
    /// sent [`ON_ITS_OWN_AFTER`] there. An incident already open keeps its
    /// lines.
    fn campaign_of(&mut self, key: String, entity: Entity, value: String, class: &str) -> Joins {
        let spread = matches!(entity, Entity::Client | Entity::User);
        if !spread || self.policy.campaign_after == 0 || self.open.contains_key(&key) {
            return Joins::Own(key, entity, value);
        }
        let campaign = format!("campaign {class}");
        // Joined at once only once formed by many: a server-wide incident
        // of the class (a local flood's `campaign sending`) is not yet one.
        let formed = self.open.get(&campaign).is_some_and(|c| c.members > 0);
        let mut absorbed = Vec::new();
        if !formed {
            let others = self
                .open
                .values()
                .filter(|i| matches!(i.entity, Entity::Client | Entity::User) && i.class == class)
                .count();
            if others < self.policy.campaign_after {
                return Joins::Own(key, entity, value);
            }
            absorbed = self.take_held(class, &campaign);
        }
        let full = self.in_campaign.len() >= MAX_MESSAGES;
        let (anomalies, joined) = match self.in_campaign.get_mut(&key) {
            Some((c, n)) if *c == campaign => {
                *n += 1;
                (Some(*n), false)
            }
            _ if full => (None, false),
            _ => {
                self.in_campaign.insert(key.clone(), (campaign.clone(), 1));
                self.members.remove(&key);
                (Some(1), true)
            }
        };
        if let Some(n) = anomalies {
            // The other members' anomalies, each on average.
            let per_member = self.open.get(&campaign).map_or(f64::INFINITY, |c| {
                let others = c.member_anomalies.saturating_sub(u64::from(n) - 1);
                others as f64 / c.members.saturating_sub(1).max(1) as f64
            });
            if n > ON_ITS_OWN_AFTER && f64::from(n) > OUTLIER * per_member {
                self.in_campaign.remove(&key);
                self.members.remove(&key);
                return Joins::Own(key, entity, value);
            }
        }
        Joins::Campaign {
            key: campaign,
            class: class.to_string(),
            member: (key, entity, value),
            anomalies,
            joined,
            absorbed,
        }
    }

    /// Takes the held incidents of `class` out of the open ones for the
    /// campaign forming now: their clients and accounts become its members,
    /// and none of them is ever reported opened.
    fn take_held(&mut self, class: &str, campaign: &str) -> Vec<Incident> {
        let keys: Vec<String> = self
            .open
            .iter()
            .filter(|(_, i)| {
                i.held_until.is_some()
                    && matches!(i.entity, Entity::Client | Entity::User)
                    && i.class == class
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut taken = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(incident) = self.open.remove(&key) else {
                continue;
            };
            if self.in_campaign.len() < MAX_MESSAGES {
                let anomalies = u32::try_from(incident.anomalies).unwrap_or(u32::MAX);
                self.in_campaign
                    .insert(key.clone(), (campaign.to_string(), anomalies));
                self.members.insert(
                    key.clone(),
                    Member {
                        highest: severity_rank(&incident.severity),
                        reported: 0,
                        rarity: incident.rarity,
                        kinds: incident.kinds.clone(),
                    },
                );
            }
            for target in self.messages.values_mut() {
                if *target == key {
                    *target = campaign.to_string();
                }
            }
            taken.push(incident);
        }
        taken
    }

    /// While input has been idle for `idle_micros`: the held incidents
    /// whose hold ended by then, the latest event time counted on by the
    /// idle time (a quiet server still hears of an attack's first lines;
    /// a replay that pauses releases nothing early).
    pub fn release_when_idle(&mut self, idle_micros: i64) -> Vec<IncidentEvent> {
        match self.latest {
            Some(latest) => self.release_held(latest.saturating_add(idle_micros)),
            None => Vec::new(),
        }
    }

    /// Reports opened the held incidents whose hold ended by `now` (µs of
    /// event time).
    fn release_held(&mut self, now: i64) -> Vec<IncidentEvent> {
        self.open
            .values_mut()
            .filter(|i| i.held_until.is_some_and(|until| until <= now))
            .map(|incident| {
                incident.held_until = None;
                IncidentEvent::new(Change::Opened, incident.clone())
            })
            .collect()
    }

    /// Whether the line at `offset` of `place` was taken before. The lines
    /// of one multi-line message share its offset, so the state counts the
    /// lines taken at the highest offset, and this run counts them again.
    fn is_kafka_redelivery(&mut self, topic: &str, partition: i64, offset: i64) -> bool {
        use std::fmt::Write as _;
        let mut place = std::mem::take(&mut self.place);
        place.clear();
        let _ = write!(place, "{topic}/{partition}");
        let seen = self.is_redelivery(&place, offset);
        self.place = place;
        seen
    }

    fn is_redelivery(&mut self, place: &str, offset: i64) -> bool {
        if !self.seen_at_taken.contains_key(place) {
            self.seen_at_taken.insert(place.to_string(), 0);
        }
        let seen = self.seen_at_taken.get_mut(place).expect("inserted above");
        match self.taken.get_mut(place) {
            Some((taken, _)) if offset < *taken => true,
            Some((taken, lines)) if offset == *taken => {
                *seen += 1;
                if *seen <= *lines {
                    return true;
                }
                *lines += 1;
                false
            }
            _ => {
                self.taken.insert(place.to_string(), (offset, 1));
                *seen = 1;
                false
            }
        }
    }

    /// Closes the incidents no anomaly joined within the gap before `now`.
    fn close_idle(&mut self, now: i64) -> Vec<IncidentEvent> {
        let mut events = self.release_held(now);
        let gap = self.policy.gap_micros;
        let idle: Vec<String> = self
            .open
            .iter()
            .filter(|(_, i)| {
                i.last_micros
                    .is_some_and(|l| now - l > i.gap_micros.unwrap_or(gap))
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !idle.is_empty() {
            self.messages.retain(|_, k| !idle.contains(k));
            self.in_campaign.retain(|_, (k, _)| !idle.contains(k));
            let in_campaign = &self.in_campaign;
            self.members.retain(|k, _| in_campaign.contains_key(k));
        }
        for key in idle {
            if let Some(incident) = self.open.remove(&key) {
                self.remember_end(key, &incident);
                events.push(IncidentEvent::new(Change::Closed, incident));
            }
        }
        events
    }

    /// Notes how `incident` ended, for the next incident of its key.
    fn remember_end(&mut self, key: String, incident: &Incident) {
        let Some(last) = incident.last_micros else {
            return;
        };
        if self.ended.len() >= MAX_ENDED && !self.ended.contains_key(&key) {
            self.ended
                .retain(|_, e| last.saturating_sub(e.last) <= RECALL_MICROS);
            if self.ended.len() >= MAX_ENDED {
                let mut ends: Vec<i64> = self.ended.values().map(|e| e.last).collect();
                ends.sort_unstable();
                let cut = ends[ends.len() / 2];
                self.ended.retain(|_, e| e.last > cut);
            }
        }
        self.ended.insert(
            key,
            Ended {
                last,
                gap: incident.gap_micros.unwrap_or(self.policy.gap_micros),
                incidents: incident.recurs + 1,
            },
        );
    }

    /// Closes every open incident: the end of a replay, where nothing
    /// more will come.
    pub fn close_all(&mut self) -> Vec<IncidentEvent> {
        let mut events = self.release_held(i64::MAX);
        self.messages.clear();
        self.in_campaign.clear();
        self.members.clear();
        for (key, incident) in std::mem::take(&mut self.open) {
            self.remember_end(key, &incident);
            events.push(IncidentEvent::new(Change::Closed, incident));
        }
        events
    }
}

/// Adds a held incident's lines and evidence to the campaign that took it in.
fn absorb(campaign: &mut Incident, held: &Incident, samples: usize) {
    campaign.anomalies += held.anomalies;
    campaign.lines += held.lines;
    campaign.member_anomalies += held.anomalies;
    campaign.members += 1;
    campaign.rarity = campaign.rarity.max(held.rarity);
    if severity_rank(&held.severity) > severity_rank(&campaign.severity) {
        campaign.severity = held.severity.clone();
    }
    for (kind, n) in &held.kinds {
        let kind = match campaign.kinds.len() < MAX_KINDS || campaign.kinds.contains_key(kind) {
            true => kind.as_str(),
            false => OTHER_KIND,
        };
        *campaign.kinds.entry(kind.to_string()).or_insert(0) += n;
    }
    for (feature, sum) in &held.feature_sums {
        *campaign.feature_sums.entry(feature.clone()).or_insert(0.0) += sum;
    }
    let room = samples.saturating_sub(campaign.samples.len());
    campaign
        .samples
        .extend(held.samples.iter().take(room).cloned());
    for (place, (first, last)) in &held.records {
        let span = campaign
            .records
            .entry(place.clone())
            .or_insert((*first, *last));
        span.0 = span.0.min(*first);
        span.1 = span.1.max(*last);
    }
}

/// Stable across a restart and a redelivery: the key and the time (or
/// place) of the first line, hashed (FNV-1a, 64 bits) to a short id.
fn incident_id(key: &str, obs: &Observation) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let start = obs
        .time
        .map(|t| t.to_string())
        .or_else(|| obs.location.as_ref().map(|(p, a)| format!("{p}:{a}")))
        .unwrap_or_default();
    for b in key.bytes().chain([0]).chain(start.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests;
