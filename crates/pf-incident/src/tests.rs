use super::*;
use serde_json::json;

impl Tracker {
    fn observe_map(&mut self, record: &Map<String, Value>) -> Vec<IncidentEvent> {
        let value = Value::Object(record.clone());
        self.observe_record(&ScoredView::deserialize(&value).unwrap())
    }
}

fn record(
    ts: &str,
    kind: &str,
    fields: Value,
    anomaly: Option<(&str, &[(&str, f64)])>,
    offset: i64,
) -> Map<String, Value> {
    let mut r = json!({
        "raw": format!("{ts} {kind} {fields}"),
        "source": {"topic": "postfix", "partition": 0, "offset": offset},
        "ts": ts,
        "kind": kind,
        "fields": fields,
        "detection": {"score": 1.0, "is_anomaly": false, "severity": "none"}
    });
    if let Some((severity, tops)) = anomaly {
        r["detection"] = json!({
            "score": -5.0,
            "is_anomaly": true,
            "severity": severity,
            "rarity": 5000.0,
            "top_features": tops.iter().map(|(f, c)| json!({"feature": f, "value": 1, "contribution": c})).collect::<Vec<_>>()
        });
    }
    r.as_object().unwrap().clone()
}

fn at(minute: u32, second: u32) -> String {
    format!("2026-03-02T08:{minute:02}:{second:02}+00:00")
}

fn changes(events: &[IncidentEvent]) -> Vec<(Change, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.change,
                format!("{} {}", e.incident.entity.as_str(), e.incident.key),
            )
        })
        .collect()
}

/// Every incident reported at its first anomaly, as before holds.
fn at_once() -> Policy {
    Policy {
        hold_micros: 0,
        ..Policy::default()
    }
}

const BY_IP: &[(&str, f64)] = &[("auth_failures_1h_by_ip", -8.0), ("hour", -0.5)];
const BY_USER: &[(&str, f64)] = &[
    ("auth_failures_1h_by_user", -6.0),
    ("auth_failures_1h_by_ip", -1.0),
];

#[test]
fn a_brute_force_is_one_incident_that_escalates_then_closes() {
    let mut t = Tracker::new(Policy::default());
    let mut events = Vec::new();
    let ip = json!({"client_ip": "203.0.113.7", "sasl_username": "alice"});
    for i in 0..40 {
        let severity = if i < 5 {
            "low"
        } else if i < 20 {
            "medium"
        } else {
            "high"
        };
        let r = record(
            &at(i / 2, (i % 2) * 30),
            "smtpd.sasl_auth_failed",
            ip.clone(),
            Some((severity, BY_IP)),
            (2 * i).into(),
        );
        events.extend(t.observe(&Observation::from_record(&r)));
        // A normal line from the same client in between counts as a line.
        let n = record(
            &at(i / 2, 1),
            "smtpd.connect",
            json!({"client_ip": "203.0.113.7"}),
            None,
            (2 * i + 1).into(),
        );
        events.extend(t.observe(&Observation::from_record(&n)));
    }
    assert_eq!(
        changes(&events),
        [
            (Change::Opened, "client 203.0.113.7".to_string()),
            (Change::Escalated, "client 203.0.113.7".to_string()),
            (Change::Escalated, "client 203.0.113.7".to_string()),
        ]
    );
    assert_eq!(t.open_count(), 1);
    // Quiet for longer than the gap: the next line anywhere closes it.
    let later = record(
        "2026-03-02T09:30:00+00:00",
        "qmgr.removed",
        json!({"queue_id": "ABC"}),
        None,
        500,
    );
    let closed = t.observe(&Observation::from_record(&later));
    assert_eq!(closed.len(), 1);
    let i = &closed[0].incident;
    assert_eq!(closed[0].change, Change::Closed);
    assert_eq!(i.anomalies, 40);
    assert_eq!(i.lines, 80);
    assert_eq!(i.severity, "high");
    assert_eq!(i.first_seen, "2026-03-02T08:00:00+00:00");
    assert_eq!(i.last_seen, "2026-03-02T08:19:30+00:00");
    assert_eq!(i.top_features[0].0, "auth_failures_1h_by_ip");
    assert_eq!(i.top_features[0].1, -320.0);
    assert_eq!(i.samples.len(), 3);
    assert_eq!(i.records["postfix/0"], (0, 78));
    assert_eq!(t.open_count(), 0);
}

#[test]
fn the_strongest_feature_names_the_entity() {
    let stuffing = |ip: &str, offset| {
        record(
            &at(1, 0),
            "smtpd.sasl_auth_failed",
            json!({"client_ip": ip, "sasl_username": "bob"}),
            Some(("medium", BY_USER)),
            offset,
        )
    };
    let mut t = Tracker::new(at_once());
    let mut events = Vec::new();
    for (n, ip) in [
        "198.51.100.1",
        "198.51.100.2",
        "2001:db8:1:2::5",
        "2001:db8:1:2::6",
    ]
    .iter()
    .enumerate()
    {
        events.extend(t.observe(&Observation::from_record(&stuffing(ip, n as i64))));
    }
    assert_eq!(
        changes(&events),
        [(Change::Opened, "user bob".to_string())],
        "one account attacked from many addresses"
    );
    // Addresses from one IPv6 /64 are one client.
    let v6 = |ip: &str, offset| {
        record(
            &at(2, 0),
            "smtpd.connect",
            json!({"client_ip": ip}),
            Some(("low", BY_IP)),
            offset,
        )
    };
    let e1 = t.observe(&Observation::from_record(&v6("2001:db8:aa:bb:1::1", 10)));
    let e2 = t.observe(&Observation::from_record(&v6("2001:db8:aa:bb:ffff::2", 11)));
    assert_eq!(
        changes(&e1),
        [(Change::Opened, "client 2001:db8:aa:bb::/64".to_string())]
    );
    assert!(e2.is_empty());
    // No entity feature and no client: a daemon's error is about its kind.
    let fatal = record(
        &at(3, 0),
        "postfix.fatal",
        json!({}),
        Some(("high", &[("log_level", -20.0)])),
        12,
    );
    assert_eq!(
        changes(&t.observe(&Observation::from_record(&fatal))),
        [(Change::Opened, "kind postfix.fatal".to_string())]
    );
}

#[test]
fn a_restart_or_redelivery_never_opens_an_incident_twice() {
    let policy = at_once();
    let mut t = Tracker::new(policy);
    let r = |offset: i64| {
        record(
            &at(0, offset as u32),
            "smtpd.sasl_auth_failed",
            json!({"client_ip": "203.0.113.9"}),
            Some(("low", BY_IP)),
            offset,
        )
    };
    let mut opened = 0;
    for o in 0..10 {
        opened += t.observe(&Observation::from_record(&r(o))).len();
    }
    let saved = t.to_json();
    // The restart reads on from the saved state; Kafka redelivers 5..10 first.
    let mut t = Tracker::from_json(&saved, policy).unwrap();
    for o in 5..20 {
        opened += t.observe(&Observation::from_record(&r(o))).len();
    }
    assert_eq!(opened, 1);
    let closed = t.close_all();
    assert_eq!(closed.len(), 1);
    assert_eq!(
        closed[0].incident.anomalies, 20,
        "the redelivered 5..9 are not counted again"
    );
    let json = closed[0].to_json();
    assert_eq!(json["event"], "closed");
    assert!(json.get("feature_sums").is_none() && json.get("first_micros").is_none());
    // Lines of one multi-line Kafka message share its offset: all count,
    // once, across a restart too.
    let mut t = Tracker::new(policy);
    let same = |minute: u32| {
        record(
            &at(minute, 0),
            "smtpd.sasl_auth_failed",
            json!({"client_ip": "192.0.2.1"}),
            Some(("low", BY_IP)),
            7,
        )
    };
    t.observe(&Observation::from_record(&same(0)));
    t.observe(&Observation::from_record(&same(1)));
    let mut t = Tracker::from_json(&t.to_json(), policy).unwrap();
    for m in 0..2 {
        t.observe(&Observation::from_record(&same(m)));
    }
    t.observe(&Observation::from_record(&same(2)));
    assert_eq!(t.close_all()[0].incident.anomalies, 3);
    // The id is the same however often it is computed.
    let mut again = Tracker::new(policy);
    let first = again.observe(&Observation::from_record(&r(0)));
    assert_eq!(first[0].incident.id, closed[0].incident.id);
}

#[test]
fn records_without_time_or_detection_are_harmless() {
    let mut t = Tracker::new(Policy::default());
    let bare: Map<String, Value> = json!({"raw": "x"}).as_object().unwrap().clone();
    assert!(t.observe(&Observation::from_record(&bare)).is_empty());
    let weird: Map<String, Value> =
        json!({"raw": 5, "fields": [], "detection": {"is_anomaly": true, "top_features": "no"}})
            .as_object()
            .unwrap()
            .clone();
    let e = t.observe(&Observation::from_record(&weird));
    assert_eq!(changes(&e), [(Change::Opened, "kind unknown".to_string())]);
    assert_eq!(e[0].incident.severity, "low");
}

/// A compromised account's mail: the submission line names the account,
/// the message's later lines only its queue id; a runaway script's
/// pickups are a server-wide rate. Each is one incident, not one per message.
#[test]
fn a_messages_later_lines_join_its_incident_and_server_wide_rates_group_by_kind() {
    let mut t = Tracker::new(Policy::default());
    let mut events = Vec::new();
    let by_user: &[(&str, f64)] = &[("messages_1h_above_usual_by_user", -9.0)];
    let pickups: &[(&str, f64)] = &[("pickups_10m", -7.0), ("hour", -1.0)];
    let mut offset = 0;
    let mut next = || {
        offset += 1;
        offset
    };
    for m in 0..20u32 {
        let q = format!("Q{m}");
        let lines = [
            record(
                &at(m, 0),
                "smtpd.client",
                json!({"client_ip": format!("198.51.100.{m}"), "sasl_username": "mallory", "queue_id": q}),
                Some(("high", by_user)),
                next(),
            ),
            record(
                &at(m, 1),
                "qmgr.queued",
                json!({"queue_id": q, "from": "mallory@example.org"}),
                Some(("medium", by_user)),
                next(),
            ),
            record(
                &at(m, 2),
                "smtp.sent",
                json!({"queue_id": q, "to": "x@far.example"}),
                Some(("medium", by_user)),
                next(),
            ),
            record(
                &at(m, 3),
                "pickup.pickup",
                json!({"queue_id": format!("P{m}")}),
                Some(("low", pickups)),
                next(),
            ),
            record(
                &at(m, 4),
                "qmgr.queued",
                json!({"queue_id": format!("P{m}")}),
                Some(("low", &[("msg_len", -3.0)])),
                next(),
            ),
        ];
        for r in &lines {
            events.extend(t.observe(&Observation::from_record(r)));
        }
    }
    assert_eq!(
        changes(&events),
        [
            (Change::Opened, "user mallory".to_string()),
            (Change::Opened, "campaign sending".to_string()),
        ]
    );
    let closed = t.close_all();
    let count = |key: &str| {
        closed
            .iter()
            .find(|e| e.incident.key == key)
            .map(|e| e.incident.anomalies)
    };
    assert_eq!(count("mallory"), Some(60));
    assert_eq!(count("sending"), Some(40));
}

#[test]
fn an_incident_is_named_by_the_kind_most_of_its_lines_are() {
    let mut t = Tracker::new(Policy::default());
    let ip = json!({"client_ip": "203.0.113.7"});
    let mut last = Vec::new();
    for (i, kind) in [
        "smtpd.connect",
        "smtpd.sasl_auth_failed",
        "smtpd.sasl_auth_failed",
    ]
    .iter()
    .enumerate()
    {
        let severity = ["low", "low", "high"][i];
        last = t.observe_map(&record(
            &at(0, i as u32),
            kind,
            ip.clone(),
            Some((severity, BY_IP)),
            i as i64,
        ));
    }
    let escalated = &last[0].incident;
    assert_eq!(escalated.kind, "smtpd.sasl_auth_failed");
    assert_eq!(escalated.kinds["smtpd.connect"], 1);
    // A flood of ever new kinds stays bounded.
    for i in 0..100 {
        t.observe_map(&record(
            &at(1, i % 60),
            &format!("made.up{i}"),
            ip.clone(),
            Some(("low", BY_IP)),
            10 + i64::from(i),
        ));
    }
    let closed = t.close_all();
    assert!(closed[0].incident.kinds.len() <= MAX_KINDS + 1);
    assert_eq!(
        closed[0].incident.kinds["other"],
        100 + 2 - MAX_KINDS as u64
    );
}

#[test]
fn an_incidents_jsonl_line_reads_back_as_its_event() {
    let mut t = Tracker::new(Policy::default());
    let events = t.observe_map(&record(
        &at(0, 0),
        "smtpd.sasl_auth_failed",
        json!({"client_ip": "203.0.113.7"}),
        Some(("high", BY_IP)),
        1,
    ));
    let line = events[0].to_json().to_string();
    let back = IncidentEvent::from_json(&line).unwrap();
    assert_eq!(back.change, Change::Opened);
    assert_eq!(back.to_json(), events[0].to_json());
    assert!(IncidentEvent::from_json("{\"event\":\"nonsense\"}").is_err());
}

/// Credential stuffing from many addresses, each incident reported at once
/// (no hold): the first clients get their
/// own incidents, the rest join one campaign of what they are evidence of
/// (failed logins), whatever the line (a failure, a disconnect); a client
/// already open keeps its own; with campaign_after 0 every client is its
/// own incident.
#[test]
fn an_attack_from_many_addresses_is_one_campaign_after_the_first_few() {
    let stuffing = |n: usize| {
        record(
            &at(1, n as u32),
            if n.is_multiple_of(2) {
                "roundcube.login_failed"
            } else {
                "smtpd.disconnect_auth_failed"
            },
            json!({"client_ip": format!("198.51.100.{}", 10 + n % 8), "user": format!("user{n}")}),
            Some(("medium", BY_IP)),
            n as i64,
        )
    };
    let run = |policy: Policy| {
        let mut t = Tracker::new(policy);
        let mut events = Vec::new();
        for n in 0..16 {
            events.extend(t.observe(&Observation::from_record(&stuffing(n))));
        }
        events.extend(t.close_all());
        events
    };
    let events = run(at_once());
    let opened: Vec<String> = changes(&events)
        .into_iter()
        .filter(|(c, _)| *c == Change::Opened)
        .map(|(_, k)| k)
        .collect();
    assert_eq!(
        opened,
        [
            "client 198.51.100.10",
            "client 198.51.100.11",
            "client 198.51.100.12",
            "campaign logins"
        ]
    );
    let closed = |events: &[IncidentEvent], key: &str| {
        events
            .iter()
            .find(|e| {
                e.change == Change::Closed
                    && format!("{} {}", e.incident.entity.as_str(), e.incident.key) == key
            })
            .map(|e| (e.incident.anomalies, e.incident.members))
    };
    // Clients 10..12 come back (n = 8..10) and stay in their own incidents.
    assert_eq!(closed(&events, "client 198.51.100.10"), Some((2, 0)));
    assert_eq!(closed(&events, "campaign logins"), Some((10, 5)));
    let campaign = events
        .iter()
        .find(|e| e.change == Change::Closed && e.incident.key == "logins")
        .unwrap();
    assert_eq!(campaign.incident.lines, 10, "each of its lines once");
    assert!(
        events.iter().all(|e| e.change != Change::Member),
        "two anomalies each: no member to act on"
    );
    // A client that keeps trying inside the campaign is reported as its
    // member at its third anomaly (what a ban acts on), again when it gets
    // more severe; past ten, and five times the campaign's anomalies per
    // member, it is an attack of its own.
    let mut t = Tracker::new(at_once());
    let mut events = Vec::new();
    for n in 0..16 {
        events.extend(t.observe(&Observation::from_record(&stuffing(n))));
    }
    for n in 16..40 {
        let mut r = stuffing(n);
        r["fields"]["client_ip"] = json!("192.0.2.99");
        if n >= 20 {
            r["detection"]["severity"] = json!("high");
        }
        events.extend(t.observe(&Observation::from_record(&r)));
    }
    let own: Vec<(Change, String, String)> = events
        .iter()
        .filter(|e| e.incident.key == "192.0.2.99")
        .map(|e| (e.change, e.incident.severity.clone(), e.incident.id.clone()))
        .collect();
    let campaign_id = &events
        .iter()
        .find(|e| e.incident.key == "logins")
        .unwrap()
        .incident
        .id;
    assert_eq!(own.len(), 3, "{own:?}");
    assert_eq!((own[0].0, own[0].1.as_str()), (Change::Member, "medium"));
    assert_eq!((own[1].0, own[1].1.as_str()), (Change::Member, "high"));
    assert_eq!(&own[0].2, campaign_id, "a member event is the campaign's");
    assert_eq!(own[2].0, Change::Opened);
    let opened = events
        .iter()
        .find(|e| e.change == Change::Opened && e.incident.key == "192.0.2.99")
        .unwrap();
    assert_eq!(opened.incident.anomalies, 1, "its eleventh line opened it");
    let every_client = run(Policy {
        campaign_after: 0,
        ..at_once()
    });
    assert_eq!(
        every_client
            .iter()
            .filter(|e| e.change == Change::Opened)
            .count(),
        8
    );
}

/// Dovecot's delivery line names the mailbox it delivered to: a bounce
/// storm's deliveries join the incident of the recipient domain, not one
/// incident per mailbox as if each were a login.
#[test]
fn a_dovecot_delivery_is_about_its_recipients_domain_not_a_login() {
    let by_domain: &[(&str, f64)] = &[("null_sender_mails_1h_to_domain", -9.0)];
    let mut t = Tracker::new(Policy::default());
    let mut events = Vec::new();
    for (n, user) in ["bob@example.org", "laura@example.org", "nora@example.org"]
        .iter()
        .enumerate()
    {
        let r = record(
            &at(1, n as u32),
            "dovecot.delivery",
            json!({"user": user}),
            Some(("medium", by_domain)),
            n as i64,
        );
        events.extend(t.observe(&Observation::from_record(&r)));
    }
    assert_eq!(
        changes(&events),
        [(Change::Opened, "domain example.org".to_string())]
    );
}

/// A local flood's server-wide incident (`campaign sending`, no members)
/// is not a campaign of many: an account sending spam meanwhile gets its
/// own incident, not a member line the admin never reads.
#[test]
fn a_server_wide_incident_does_not_absorb_an_account() {
    let pickups: &[(&str, f64)] = &[("pickups_10m", -9.0)];
    let by_user: &[(&str, f64)] = &[("messages_1h_above_usual_by_user", -9.0)];
    let mut t = Tracker::new(Policy::default());
    let mut events = Vec::new();
    let lines = [
        record(
            &at(1, 0),
            "pickup.queued",
            json!({"queue_id": "P1"}),
            Some(("medium", pickups)),
            1,
        ),
        record(
            &at(1, 1),
            "smtpd.client",
            json!({"client_ip": "192.0.2.7", "sasl_username": "carol", "queue_id": "Q1"}),
            Some(("high", by_user)),
            2,
        ),
    ];
    for r in &lines {
        events.extend(t.observe(&Observation::from_record(r)));
    }
    assert_eq!(
        changes(&events),
        [
            (Change::Opened, "campaign sending".to_string()),
            (Change::Opened, "user carol".to_string())
        ]
    );
}

fn failure_from(
    ip: &str,
    minute: u32,
    second: u32,
    severity: &str,
    offset: i64,
) -> Map<String, Value> {
    record(
        &at(minute, second),
        "smtpd.sasl_auth_failed",
        json!({"client_ip": ip}),
        Some((severity, BY_IP)),
        offset,
    )
}

fn quiet_line(minute: u32, second: u32, offset: i64) -> Map<String, Value> {
    record(&at(minute, second), "qmgr.removed", json!({}), None, offset)
}

/// The first addresses of a campaign are held, not reported: when the
/// campaign forms within the hold it takes them in, and the admin hears of
/// one campaign with all its lines, not of three addresses and then it.
#[test]
fn a_campaigns_first_addresses_are_held_and_join_it() {
    let mut t = Tracker::new(Policy::default());
    let mut events = Vec::new();
    for n in 0..8u32 {
        let ip = format!("198.51.100.{}", 10 + n);
        events.extend(t.observe_map(&failure_from(&ip, 1, 10 * n, "medium", i64::from(n))));
    }
    events.extend(t.close_all());
    let reported: Vec<(Change, String)> = changes(&events);
    assert_eq!(
        reported,
        [
            (Change::Opened, "campaign logins".to_string()),
            (Change::Closed, "campaign logins".to_string())
        ]
    );
    let campaign = &events[0].incident;
    assert_eq!(
        (campaign.anomalies, campaign.members),
        (4, 4),
        "the three held and the fourth"
    );
    assert_eq!(
        campaign.first_seen,
        at(1, 0),
        "it began with the first held address"
    );
    assert_eq!(campaign.records["postfix/0"], (0, 3));
    assert_eq!(events[1].incident.anomalies, 8);
    // A held address that comes back is the campaign's member, its held
    // anomaly counted: its third anomaly in all is what a ban acts on.
    let mut t = Tracker::new(Policy::default());
    let mut events = Vec::new();
    for (n, last) in [10, 11, 12, 13, 10, 10].iter().enumerate() {
        let ip = format!("198.51.100.{last}");
        events.extend(t.observe_map(&failure_from(&ip, 1, 10 * n as u32, "medium", n as i64)));
        if n == 4 {
            assert_eq!(
                changes(&events),
                [(Change::Opened, "campaign logins".to_string())]
            );
        }
    }
    assert_eq!(
        changes(&events[1..]),
        [(Change::Member, "client 198.51.100.10".to_string())]
    );
    assert_eq!(events[1].incident.anomalies, 3);
}

/// A lone address is reported once its hold has passed (in event time, with
/// the next line of any kind), with every anomaly it sent meanwhile; a
/// `high` line is reported at once; with no lines at all the idle time
/// counts on from the latest line.
#[test]
fn a_held_incident_is_reported_after_its_hold_or_at_once_when_high() {
    let mut t = Tracker::new(Policy::default());
    assert!(t
        .observe_map(&failure_from("203.0.113.5", 0, 0, "low", 0))
        .is_empty());
    assert!(t
        .observe_map(&failure_from("203.0.113.5", 0, 30, "medium", 1))
        .is_empty());
    assert!(t.observe_map(&quiet_line(1, 59, 2)).is_empty());
    let events = t.observe_map(&quiet_line(2, 0, 3));
    assert_eq!(
        changes(&events),
        [(Change::Opened, "client 203.0.113.5".to_string())]
    );
    let opened = &events[0].incident;
    assert_eq!((opened.anomalies, opened.severity.as_str()), (2, "medium"));
    assert_eq!(opened.first_seen, at(0, 0));
    assert!(events[0].to_json().get("held_until").is_none());
    // Later lines escalate it as usual.
    let events = t.observe_map(&failure_from("203.0.113.5", 2, 10, "high", 4));
    assert_eq!(
        changes(&events),
        [(Change::Escalated, "client 203.0.113.5".to_string())]
    );

    let mut t = Tracker::new(Policy::default());
    assert!(t
        .observe_map(&failure_from("203.0.113.6", 0, 0, "low", 0))
        .is_empty());
    let events = t.observe_map(&failure_from("203.0.113.6", 0, 5, "high", 1));
    assert_eq!(
        changes(&events),
        [(Change::Opened, "client 203.0.113.6".to_string())]
    );
    assert_eq!(events[0].incident.anomalies, 2);
    assert!(
        t.observe_map(&quiet_line(3, 0, 2)).is_empty(),
        "not opened twice"
    );

    let mut t = Tracker::new(Policy::default());
    assert!(t
        .observe_map(&failure_from("203.0.113.7", 0, 0, "low", 0))
        .is_empty());
    assert!(t.release_when_idle(119_000_000).is_empty());
    let events = t.release_when_idle(120_000_000);
    assert_eq!(
        changes(&events),
        [(Change::Opened, "client 203.0.113.7".to_string())]
    );
    assert!(t.release_when_idle(500_000_000).is_empty());
}

/// A held incident is in the saved state: after a restart (and Kafka's
/// redelivery) it is reported once, when its hold ends; at the end of a
/// replay it is reported opened, then closed.
#[test]
fn a_held_incident_survives_a_restart_and_the_end_of_a_replay() {
    let policy = Policy::default();
    let mut t = Tracker::new(policy);
    t.observe_map(&failure_from("203.0.113.8", 0, 0, "low", 0));
    t.observe_map(&failure_from("203.0.113.8", 0, 10, "low", 1));
    let mut t = Tracker::from_json(&t.to_json(), policy).unwrap();
    assert!(t
        .observe_map(&failure_from("203.0.113.8", 0, 10, "low", 1))
        .is_empty());
    let events = t.observe_map(&quiet_line(2, 30, 2));
    assert_eq!(
        changes(&events),
        [(Change::Opened, "client 203.0.113.8".to_string())]
    );
    assert_eq!(
        events[0].incident.anomalies, 2,
        "the redelivered line is not counted again"
    );
    assert!(t.observe_map(&quiet_line(2, 40, 3)).is_empty());

    let mut t = Tracker::new(policy);
    t.observe_map(&failure_from("203.0.113.9", 0, 0, "low", 0));
    let end: Vec<Change> = t.close_all().iter().map(|e| e.change).collect();
    assert_eq!(end, [Change::Opened, Change::Closed]);
}

/// A compromised account seen first as the envelope sender of its spam
/// (qmgr) and then as the login sending it (smtpd) is one incident; a
/// login of another name is not.
#[test]
fn an_account_sending_as_itself_is_one_incident() {
    let mut t = Tracker::new(Policy::default());
    let by_sender: &[(&str, f64)] = &[("messages_1h_by_sender", -7.0)];
    let by_user: &[(&str, f64)] = &[("messages_1h_above_usual_by_user", -7.0)];
    let sent = record(
        &at(0, 0),
        "qmgr.queued",
        json!({"from": "nina@example.org", "queue_id": "6B894714A9"}),
        Some(("high", by_sender)),
        0,
    );
    let login = |user: &str, offset| {
        record(
            &at(1, 0),
            "smtpd.client",
            json!({"client_ip": "185.178.83.138", "sasl_username": user, "queue_id": "7A5B42A914"}),
            Some(("high", by_user)),
            offset,
        )
    };
    let mut events = t.observe_map(&sent);
    events.extend(t.observe_map(&login("nina@example.org", 1)));
    assert_eq!(
        changes(&events),
        [(Change::Opened, "sender nina@example.org".to_string())]
    );
    events.extend(t.observe_map(&login("otto@example.org", 2)));
    assert_eq!(
        changes(&events[1..]),
        [(Change::Opened, "user otto@example.org".to_string())]
    );
    let closed = t.close_all();
    let nina = closed
        .iter()
        .find(|e| e.incident.key == "nina@example.org")
        .unwrap();
    assert_eq!(nina.incident.anomalies, 2);
}

fn at_hm(hour: u32, minute: u32) -> String {
    format!("2026-03-02T{hour:02}:{minute:02}:00+00:00")
}

/// A slow spray from one address: a burst of failures every `every`
/// minutes for `bursts` bursts; the events of the run (the last closes all).
fn slow_spray(t: &mut Tracker, every: u32, bursts: u32) -> Vec<IncidentEvent> {
    let ip = json!({"client_ip": "203.0.113.7"});
    let mut events = Vec::new();
    let mut offset = 0;
    for b in 0..bursts {
        let start = b * every;
        for i in 0..3 {
            let minute = start + i;
            let ts = at_hm(1 + minute / 60, minute % 60);
            offset += 1;
            let r = record(
                &ts,
                "smtpd.sasl_auth_failed",
                ip.clone(),
                Some(("medium", BY_IP)),
                offset,
            );
            events.extend(t.observe_map(&r));
        }
    }
    events.extend(t.close_all());
    events
}

fn opened(events: &[IncidentEvent]) -> Vec<&Incident> {
    events
        .iter()
        .filter(|e| e.change == Change::Opened)
        .map(|e| &e.incident)
        .collect()
}

#[test]
fn an_attack_that_keeps_coming_back_waits_longer_before_it_closes() {
    // Bursts 45 minutes apart, a 30-minute gap: the first incident closes,
    // the second waits 60 minutes and takes every later burst.
    let mut t = Tracker::new(at_once());
    let events = slow_spray(&mut t, 45, 6);
    let opens = opened(&events);
    assert_eq!(opens.len(), 2, "{:?}", changes(&events));
    assert_eq!(opens[0].recurs, 0);
    assert_eq!(opens[1].recurs, 1);
    // Each later burst is reported as resumed (what fail2ban bans again on).
    let resumed = events
        .iter()
        .filter(|e| e.change == Change::Resumed)
        .count();
    assert_eq!(resumed, 4, "{:?}", changes(&events));
    let last = events.last().unwrap();
    assert_eq!(last.change, Change::Closed);
    assert_eq!(last.incident.anomalies, 15);
    assert!(last
        .alert_line(false)
        .contains("(back: 1 earlier within a day)"));
    assert!(!last
        .to_json()
        .as_object()
        .unwrap()
        .contains_key("gap_micros"));
    assert_eq!(last.to_json()["recurs"], 1);

    // The gap doubles each time, up to max_gap: bursts 100 minutes apart
    // close at 30, 60 and 120 minutes; from the fourth on they are one.
    let mut t = Tracker::new(Policy {
        max_gap_micros: 120 * 60 * 1_000_000,
        ..at_once()
    });
    let opens = opened(&slow_spray(&mut t, 100, 8)).len();
    assert_eq!(opens, 3);

    // max_gap at the gap: one incident per burst, as without recall.
    let mut t = Tracker::new(Policy {
        max_gap_micros: 30 * 60 * 1_000_000,
        ..at_once()
    });
    let events = slow_spray(&mut t, 45, 6);
    assert_eq!(opened(&events).len(), 6);
    assert_eq!(opened(&events)[5].recurs, 5);
}

#[test]
fn a_key_back_after_a_day_starts_afresh_and_the_recall_survives_a_restart() {
    let ip = json!({"client_ip": "203.0.113.7"});
    let line = |ts: &str, offset| {
        record(
            ts,
            "smtpd.sasl_auth_failed",
            ip.clone(),
            Some(("medium", BY_IP)),
            offset,
        )
    };
    // A line of another client: its time closes what has been idle.
    let quiet = |ts: &str, offset| {
        record(
            ts,
            "smtpd.connect",
            json!({"client_ip": "192.0.2.1"}),
            None,
            offset,
        )
    };
    let mut t = Tracker::new(at_once());
    t.observe_map(&line("2026-03-02T01:00:00+00:00", 1));
    // Closed by another line's time, then the tracker is saved and loaded.
    let other = quiet("2026-03-02T02:00:00+00:00", 2);
    assert_eq!(changes(&t.observe_map(&other))[0].0, Change::Closed);
    let mut t = Tracker::from_json(&t.to_json(), at_once()).unwrap();
    let back = t.observe_map(&line("2026-03-02T03:00:00+00:00", 3));
    assert_eq!(opened(&back)[0].recurs, 1);
    // 50 minutes later it is still open: it waits 60, not 30.
    assert!(t
        .observe_map(&quiet("2026-03-02T03:50:00+00:00", 4))
        .is_empty());
    let closes = t.observe_map(&quiet("2026-03-02T04:01:00+00:00", 5));
    assert_eq!(
        changes(&closes),
        vec![(Change::Closed, "client 203.0.113.7".into())]
    );
    // More than a day after its last anomaly: a first incident again.
    let next_day = t.observe_map(&line("2026-03-03T04:00:01+00:00", 6));
    assert_eq!(opened(&next_day)[0].recurs, 0);
    let closes = t.observe_map(&quiet("2026-03-03T04:31:00+00:00", 7));
    assert_eq!(
        closes.len(),
        1,
        "a fresh incident closes after the policy's 30 minutes"
    );
}
