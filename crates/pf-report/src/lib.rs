//! The tuning report: what an admin looks at to move the `high`, `medium`
//! and `low` thresholds.
//!
//! [`ScoreReport`] takes every decision score pf-score computes (into a
//! fixed histogram, so memory does not grow with the input) and keeps the
//! most anomalous records with their explanations; [`ScoreReport::render`]
//! writes one self-contained XHTML page (inline SVG and CSS, no scripts,
//! nothing fetched) that any browser opens from disk and any XML parser
//! can check.

use std::fmt::Write;

/// Histogram range and resolution. Decision scores of an isolation forest
/// lie in (-1, 1) and in practice within ±0.5; anything outside lands in the
/// first or last bin.
const LOWEST: f64 = -1.0;
const HIGHEST: f64 = 1.0;
const BINS: usize = 2000;

/// The three thresholds on the decision score, as in the config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub high: f64,
    pub medium: f64,
    pub low: f64,
}

/// One feature's part in an anomaly's explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    pub feature: String,
    /// The value as it appeared in the record (JSON text).
    pub value: String,
    pub contribution: f64,
}

/// An anomalous record as the report lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    pub score: f64,
    pub ts: String,
    pub kind: String,
    pub raw: String,
    pub top_features: Vec<Contribution>,
}

/// An incident as the report's table lists it (its latest event).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentRow {
    pub severity: String,
    /// `open` or `closed`.
    pub status: String,
    pub entity: String,
    pub key: String,
    pub kind: String,
    pub first_seen: String,
    pub last_seen: String,
    pub anomalies: u64,
    pub lines: u64,
    /// Rarity words ("1 in 250,000").
    pub rarity: String,
    pub why: Vec<String>,
}

/// Hours of anomalies kept for the time axis.
const TIMELINE_HOURS: usize = 14 * 24;

/// Anomalies per hour of event time by severity, for the time axis: kept
/// by pf-score for its report and by pf-sink, which refreshes the
/// incidents part of the report when it ends (after pf-score has).
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Unix hour: high, medium, low.
    hours: std::collections::BTreeMap<i64, [u64; 3]>,
}

impl Timeline {
    /// Counts an anomaly at its event time (RFC 3339); `severity` is
    /// `high`, `medium` or `low`. A time that does not parse is left out.
    pub fn add(&mut self, ts: &str, severity: &str) {
        let Some(seconds) = unix_seconds(ts) else {
            return;
        };
        let lane = match severity {
            "high" => 0,
            "medium" => 1,
            _ => 2,
        };
        self.hours.entry(seconds.div_euclid(3600)).or_default()[lane] += 1;
        while self.hours.len() > TIMELINE_HOURS {
            self.hours.pop_first();
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScoreReport {
    timeline: Timeline,
    thresholds: Thresholds,
    bins: Vec<u64>,
    scored: u64,
    unscorable: u64,
    min: f64,
    max: f64,
    /// high, medium, low, none.
    severities: [u64; 4],
    top: Vec<Anomaly>,
    keep: usize,
}

/// Longest raw line shown, in characters.
const RAW_SHOWN: usize = 400;

impl ScoreReport {
    /// A report listing up to `keep` of the most anomalous records.
    pub fn new(thresholds: Thresholds, keep: usize) -> ScoreReport {
        ScoreReport {
            timeline: Default::default(),
            thresholds,
            bins: vec![0; BINS],
            scored: 0,
            unscorable: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            severities: [0; 4],
            top: Vec::new(),
            keep,
        }
    }

    pub fn severity(&self, score: f64) -> usize {
        let t = self.thresholds;
        if score < t.high {
            0
        } else if score < t.medium {
            1
        } else if score < t.low {
            2
        } else {
            3
        }
    }

    fn bin(score: f64) -> usize {
        let x = ((score - LOWEST) / (HIGHEST - LOWEST) * BINS as f64).floor();
        x.clamp(0.0, (BINS - 1) as f64) as usize
    }

    fn bin_start(i: usize) -> f64 {
        LOWEST + (HIGHEST - LOWEST) * i as f64 / BINS as f64
    }

    /// Counts one scored record.
    pub fn add(&mut self, score: f64) {
        if !score.is_finite() {
            self.unscorable += 1;
            return;
        }
        self.scored += 1;
        self.bins[Self::bin(score)] += 1;
        self.min = self.min.min(score);
        self.max = self.max.max(score);
        self.severities[self.severity(score)] += 1;
    }

    /// Counts an anomaly at its event time for the time axis.
    pub fn add_anomaly_at(&mut self, ts: &str, severity: &str) {
        self.timeline.add(ts, severity);
    }

    /// Counts a record that could not be scored.
    pub fn add_unscorable(&mut self) {
        self.unscorable += 1;
    }

    /// Whether an anomaly with this score would be listed (so the caller
    /// builds an [`Anomaly`] only when it is).
    pub fn wants(&self, score: f64) -> bool {
        self.keep > 0
            && (self.top.len() < self.keep || self.top.last().is_some_and(|a| score < a.score))
    }

    /// Offers an anomaly for the list of the most anomalous.
    pub fn offer(&mut self, mut anomaly: Anomaly) {
        if !self.wants(anomaly.score) {
            return;
        }
        if anomaly.raw.chars().count() > RAW_SHOWN {
            anomaly.raw = anomaly.raw.chars().take(RAW_SHOWN).collect::<String>() + "…";
        }
        let at = self.top.partition_point(|a| a.score <= anomaly.score);
        self.top.insert(at, anomaly);
        self.top.truncate(self.keep);
    }

    pub fn scored(&self) -> u64 {
        self.scored
    }

    /// Records with a score below `threshold`, at histogram resolution
    /// (exact at the thresholds' own values when they fall on bin edges).
    pub fn below(&self, threshold: f64) -> u64 {
        let edge = Self::bin(threshold);
        self.bins[..edge].iter().sum()
    }

    /// The page. `title` says what was scored (model, input); `incidents`
    /// are pf-sink's, from `incidents.jsonl` beside the report.
    pub fn render(&self, title: &str, incidents: &[IncidentRow]) -> String {
        let mut h = String::with_capacity(64 * 1024);
        let t = self.thresholds;
        let _ = write!(
            h,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<!DOCTYPE html>\n\
             <html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">\n<head>\n\
             <meta charset=\"UTF-8\"/>\n<title>pf-score report: {}</title>\n<style>\n{}\n</style>\n</head>\n<body>\n",
            escape(title),
            CSS
        );
        let _ = writeln!(h, "<h1>Anomaly scores: {}</h1>", escape(title));
        let flagged = self.severities[0] + self.severities[1] + self.severities[2];
        let _ = writeln!(
            h,
            "<p>{} records scored, {} not scorable; {} anomalies ({}) at the thresholds below.</p>",
            self.scored,
            self.unscorable,
            flagged,
            percent(flagged, self.scored)
        );
        h.push_str("<table class=\"counts\">\n<tr><th>severity</th><th>threshold (score below)</th><th>records</th><th>share</th></tr>\n");
        let rows = [
            ("high", Some(t.high)),
            ("medium", Some(t.medium)),
            ("low", Some(t.low)),
            ("none", None),
        ];
        for (i, (name, threshold)) in rows.iter().enumerate() {
            let _ = writeln!(
                h,
                "<tr class=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                threshold.map_or("—".to_string(), |v| format!("{v}")),
                self.severities[i],
                percent(self.severities[i], self.scored)
            );
        }
        h.push_str("</table>\n");
        h.push_str(&incidents_section(&self.timeline, incidents));
        self.histogram(&mut h);
        self.what_if(&mut h);
        self.anomalies(&mut h);
        h.push_str(HELP);
        h.push_str("</body>\n</html>\n");
        h
    }

    /// The SVG: bars of a log-scaled count over the scores seen, with a
    /// vertical line per threshold.
    fn histogram(&self, h: &mut String) {
        const W: f64 = 900.0;
        const H: f64 = 320.0;
        const LEFT: f64 = 60.0;
        const BOTTOM: f64 = 40.0;
        const TOP: f64 = 20.0;
        const BARS: usize = 90;
        let t = self.thresholds;
        let (mut lo, mut hi) = if self.scored > 0 {
            (self.min, self.max)
        } else {
            (-0.2, 0.2)
        };
        for v in [t.high, t.medium, t.low] {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let pad = ((hi - lo) * 0.03).max(0.005);
        lo = (lo - pad).max(LOWEST);
        hi = (hi + pad).min(HIGHEST);
        let width = (hi - lo) / BARS as f64;
        let mut bars = vec![0u64; BARS];
        for (i, &count) in self.bins.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let centre = Self::bin_start(i) + (HIGHEST - LOWEST) / BINS as f64 / 2.0;
            let b = (((centre - lo) / width).floor()).clamp(0.0, (BARS - 1) as f64) as usize;
            bars[b] += count;
        }
        let top_count = bars.iter().copied().max().unwrap_or(0).max(1);
        let y_max = ((top_count as f64) + 1.0).log10().ceil().max(1.0);
        let plot_w = W - LEFT - 20.0;
        let plot_h = H - BOTTOM - TOP;
        let x_of = |score: f64| LEFT + (score - lo) / (hi - lo) * plot_w;
        let y_of = |count: u64| TOP + plot_h - ((count as f64) + 1.0).log10() / y_max * plot_h;
        let _ = writeln!(
            h,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"histogram of decision scores\">"
        );
        let _ = writeln!(
            h,
            "<title>Histogram of {} decision scores (log scale)</title>",
            self.scored
        );
        // Axes and log-scale grid.
        let _ = writeln!(
            h,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
            TOP + plot_h,
            LEFT + plot_w,
            TOP + plot_h
        );
        for p in 0..=(y_max as u32) {
            let count = 10u64.pow(p);
            let y = TOP + plot_h - (p as f64) / y_max * plot_h;
            let _ = writeln!(
                h,
                "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{count}</text>",
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0
            );
        }
        for k in 0..=6 {
            let score = lo + (hi - lo) * k as f64 / 6.0;
            let _ = writeln!(
                h,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{score:.3}</text>",
                x_of(score),
                TOP + plot_h + 16.0
            );
        }
        let _ = writeln!(
            h,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">decision score (negative = anomalous)</text>",
            LEFT + plot_w / 2.0,
            H - 4.0
        );
        for (b, &count) in bars.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let x0 = x_of(lo + width * b as f64);
            let centre = lo + width * (b as f64 + 0.5);
            let class = ["high", "medium", "low", "none"][self.severity(centre)];
            let y = y_of(count);
            let _ = writeln!(
                h,
                "<rect class=\"bar {class}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{count} records with score {:.3} to {:.3}</title></rect>",
                (plot_w / BARS as f64 - 1.0).max(1.0),
                TOP + plot_h - y,
                lo + width * b as f64,
                lo + width * (b as f64 + 1.0)
            );
        }
        for (name, v) in [("high", t.high), ("medium", t.medium), ("low", t.low)] {
            let x = x_of(v);
            let _ = writeln!(
                h,
                "<line class=\"threshold {name}\" x1=\"{x:.1}\" y1=\"{TOP}\" x2=\"{x:.1}\" y2=\"{:.1}\"><title>{name}: score below {v}</title></line><text class=\"threshold-label {name}\" x=\"{:.1}\" y=\"{:.1}\">{name} {v}</text>",
                TOP + plot_h,
                x + 3.0,
                TOP + 12.0 + 14.0 * ["high", "medium", "low"].iter().position(|n| *n == name).unwrap_or(0) as f64
            );
        }
        h.push_str("</svg>\n");
    }

    /// How many records other `low` thresholds would have flagged.
    fn what_if(&self, h: &mut String) {
        if self.scored == 0 {
            return;
        }
        h.push_str("<h2>If <code>low</code> were…</h2>\n<table class=\"whatif\">\n<tr><th>low</th><th>anomalies</th><th>share</th></tr>\n");
        let t = self.thresholds;
        let mut candidates: Vec<f64> = vec![t.high, t.medium, t.low];
        for k in -4..=4 {
            candidates.push(t.low + 0.025 * k as f64);
        }
        candidates.sort_by(f64::total_cmp);
        candidates.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        for v in candidates {
            let n = self.below(v);
            let current = if (v - t.low).abs() < 1e-9 {
                " class=\"current\""
            } else {
                ""
            };
            let _ = writeln!(
                h,
                "<tr{current}><td>{v:.3}</td><td>{n}</td><td>{}</td></tr>",
                percent(n, self.scored)
            );
        }
        h.push_str("</table>\n");
    }

    fn anomalies(&self, h: &mut String) {
        let _ = writeln!(h, "<h2>The {} most anomalous records</h2>", self.top.len());
        if self.top.is_empty() {
            h.push_str("<p>None below the <code>low</code> threshold.</p>\n");
            return;
        }
        h.push_str("<table class=\"top\">\n<tr><th>score</th><th>severity</th><th>time</th><th>kind</th><th>why (feature = value, contribution)</th><th>line</th></tr>\n");
        for a in &self.top {
            let severity = ["high", "medium", "low", "none"][self.severity(a.score)];
            let why: Vec<String> = a
                .top_features
                .iter()
                .map(|c| {
                    format!(
                        "{} = {} ({:+.3})",
                        escape(&c.feature),
                        escape(&c.value),
                        c.contribution
                    )
                })
                .collect();
            let _ = writeln!(
                h,
                "<tr class=\"{severity}\"><td>{:.4}</td><td>{severity}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                a.score,
                escape(&a.ts),
                escape(&a.kind),
                why.join("<br/>"),
                escape(&a.raw)
            );
        }
        h.push_str("</table>\n");
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0%".into()
    } else {
        format!("{:.3}%", 100.0 * part as f64 / whole as f64)
    }
}

/// Escapes text for XHTML, dropping characters XML does not allow (log
/// lines are attacker-controlled and may hold any control character).
fn unix_seconds(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp())
}

/// Incidents shown in the table at most (the most severe, then the latest).
const INCIDENTS_SHOWN: usize = 100;

fn incident_table(h: &mut String, incidents: &[IncidentRow]) {
    let _ = writeln!(
        h,
        "<h2 id=\"incidents\">Incidents</h2>\n<p>{} incidents in <code>incidents.jsonl</code> ({} open); the most severe and latest first.</p>",
        incidents.len(),
        incidents.iter().filter(|i| i.status == "open").count()
    );
    if incidents.is_empty() {
        return;
    }
    let rank = |s: &str| match s {
        "high" => 3,
        "medium" => 2,
        "low" => 1,
        _ => 0,
    };
    let mut shown: Vec<&IncidentRow> = incidents.iter().collect();
    shown.sort_by(|a, b| {
        rank(&b.severity)
            .cmp(&rank(&a.severity))
            .then_with(|| b.last_seen.cmp(&a.last_seen))
    });
    shown.truncate(INCIDENTS_SHOWN);
    h.push_str("<table class=\"incidents\">\n<tr><th>severity</th><th>status</th><th>key</th><th>kind</th><th>span</th><th>anomalous / lines</th><th>rarest line</th><th>why</th></tr>\n");
    for i in shown {
        let class = match i.severity.as_str() {
            "high" | "medium" | "low" => i.severity.as_str(),
            _ => "none",
        };
        let _ = writeln!(
            h,
            "<tr class=\"incident {class}\"><td>{}</td><td>{}</td><td>{} <code>{}</code></td><td>{}</td><td>{} .. {}</td><td>{} / {}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.severity),
            escape(&i.status),
            escape(&i.entity),
            escape(&i.key),
            escape(&i.kind),
            escape(&i.first_seen),
            escape(&i.last_seen),
            i.anomalies,
            i.lines,
            escape(&i.rarity),
            escape(&i.why.join(", "))
        );
    }
    h.push_str("</table>\n");
}

const SECTION_BEGIN: &str = "<!-- incidents: begin -->\n";
const SECTION_END: &str = "<!-- incidents: end -->\n";

/// The time axis and the incident table, between markers that
/// [`refresh_incidents`] finds.
pub fn incidents_section(timeline: &Timeline, incidents: &[IncidentRow]) -> String {
    let mut h = String::from(SECTION_BEGIN);
    timeline.svg(&mut h, incidents);
    incident_table(&mut h, incidents);
    h.push_str(SECTION_END);
    h
}

/// Rewrites the incidents part of an existing report (atomically); false
/// when there is no report there, or it has no such part.
pub fn refresh_incidents(
    report: &std::path::Path,
    timeline: &Timeline,
    incidents: &[IncidentRow],
) -> std::io::Result<bool> {
    let page = match std::fs::read_to_string(report) {
        Ok(page) => page,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let (Some(begin), Some(end)) = (page.find(SECTION_BEGIN), page.find(SECTION_END)) else {
        return Ok(false);
    };
    if end < begin {
        return Ok(false);
    }
    let mut fresh = String::with_capacity(page.len());
    fresh.push_str(&page[..begin]);
    fresh.push_str(&incidents_section(timeline, incidents));
    fresh.push_str(&page[end + SECTION_END.len()..]);
    pf_record::atomic::write_private_atomically(report, fresh.as_bytes(), 0o640)?;
    Ok(true)
}

/// pf-sink's incident events file, beside the report in the output directory.
pub const INCIDENTS_FILE: &str = "incidents.jsonl";
/// Read at most this much of its end: the latest incidents.
const INCIDENTS_READ: u64 = 4 << 20;

/// The incidents of an `incidents.jsonl` (each as its latest event says);
/// none when the file is not there.
pub fn incident_rows(path: &std::path::Path) -> Vec<IncidentRow> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(INCIDENTS_READ);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if from > 0 {
        lines.next(); // cut by the start of the read
    }
    let mut latest: std::collections::BTreeMap<String, IncidentRow> = Default::default();
    for line in lines {
        let Ok(event) = pf_incident::IncidentEvent::from_json(line) else {
            continue;
        };
        if event.change == pf_incident::Change::Member {
            continue;
        }
        let status = if event.change == pf_incident::Change::Closed {
            "closed"
        } else {
            "open"
        };
        let i = event.incident;
        latest.insert(
            i.id.clone(),
            IncidentRow {
                status: status.into(),
                entity: i.entity.as_str().into(),
                kind: i.kind,
                first_seen: i.first_seen,
                last_seen: i.last_seen,
                anomalies: i.anomalies,
                lines: i.lines,
                rarity: pf_record::rarity::describe(i.rarity),
                why: i.top_features.into_iter().map(|(f, _)| f).collect(),
                severity: i.severity,
                key: i.key,
            },
        );
    }
    latest.into_values().collect()
}

impl Timeline {
    /// The SVG time axis: anomalies per hour stacked by severity, and a
    /// marker per incident at its first line, by severity.
    fn svg(&self, h: &mut String, incidents: &[IncidentRow]) {
        const W: f64 = 900.0;
        const H: f64 = 220.0;
        const LEFT: f64 = 60.0;
        const BOTTOM: f64 = 36.0;
        const TOP: f64 = 30.0;
        let starts: Vec<(i64, &IncidentRow)> = incidents
            .iter()
            .filter_map(|i| unix_seconds(&i.first_seen).map(|t| (t, i)))
            .collect();
        let hours = self.hours.keys().copied();
        let first = hours
            .clone()
            .map(|hr| hr * 3600)
            .chain(starts.iter().map(|(t, _)| *t))
            .min();
        let last = hours
            .map(|hr| hr * 3600 + 3600)
            .chain(starts.iter().map(|(t, _)| *t + 1))
            .max();
        h.push_str("<h2>Over time</h2>\n");
        let (Some(first), Some(last)) = (first, last) else {
            h.push_str("<p>No anomalies or incidents yet.</p>\n");
            return;
        };
        let first = first.div_euclid(3600) * 3600;
        let last = (last + 3599).div_euclid(3600) * 3600;
        let span = (last - first).max(3600) as f64;
        let plot_w = W - LEFT - 20.0;
        let plot_h = H - BOTTOM - TOP;
        let x_of = |t: i64| LEFT + (t - first) as f64 / span * plot_w;
        let top_count = self
            .hours
            .values()
            .map(|c| c.iter().sum::<u64>())
            .max()
            .unwrap_or(0)
            .max(1);
        let y_of = |n: u64| TOP + plot_h - n as f64 / top_count as f64 * plot_h;
        let _ = writeln!(
            h,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"anomalies and incidents over time\">"
        );
        let _ = writeln!(
            h,
            "<title>Anomalous lines per hour by severity, and incidents by their first line</title>"
        );
        let _ = writeln!(
            h,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\"/><line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{0}\"/>",
            TOP + plot_h,
            LEFT + plot_w
        );
        let _ = writeln!(
            h,
            "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{top_count}</text><text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
            LEFT - 4.0,
            TOP + 4.0,
            LEFT - 4.0,
            TOP + plot_h
        );
        let bar_w = (plot_w * 3600.0 / span - 1.0).max(1.0);
        for (hour, counts) in &self.hours {
            let x = x_of(hour * 3600);
            let mut base = 0;
            for (lane, class) in ["high", "medium", "low"].iter().enumerate().rev() {
                let n = counts[lane];
                if n == 0 {
                    continue;
                }
                let (y0, y1) = (y_of(base), y_of(base + n));
                let _ = writeln!(
                    h,
                    "<rect class=\"bar {class}\" x=\"{x:.1}\" y=\"{y1:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\"><title>{n} {class} anomalies in the hour from {}</title></rect>",
                    (y0 - y1).max(0.5),
                    hour_label(hour * 3600)
                );
                base += n;
            }
        }
        for (t, incident) in &starts {
            let class = match incident.severity.as_str() {
                "high" | "medium" | "low" => incident.severity.as_str(),
                _ => "none",
            };
            let _ = writeln!(
                h,
                "<circle class=\"incident {class}\" cx=\"{:.1}\" cy=\"{}\" r=\"6\"><title>{} incident: {} {} ({}), from {}</title></circle>",
                x_of(*t),
                TOP - 14.0,
                escape(&incident.severity),
                escape(&incident.entity),
                escape(&incident.key),
                escape(&incident.kind),
                escape(&incident.first_seen)
            );
        }
        for (x, t, anchor) in [(LEFT, first, "start"), (LEFT + plot_w, last, "end")] {
            let _ = writeln!(
                h,
                "<text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                TOP + plot_h + 16.0,
                hour_label(t)
            );
        }
        let _ = writeln!(
            h,
            "<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">event time (UTC); bars: anomalous lines per hour; dots: incidents</text>",
            LEFT + plot_w / 2.0,
            H - 4.0
        );
        h.push_str("</svg>\n");
    }
}

fn hour_label(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin:0.8em 0}td,th{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;vertical-align:top}\
tr.high td:first-child{border-left:6px solid #c0392b}tr.medium td:first-child{border-left:6px solid #e67e22}\
tr.low td:first-child{border-left:6px solid #f1c40f}tr.current{font-weight:bold}\
table.top code{font-size:85%;word-break:break-all}\
rect.bar.none{fill:#7f8c8d}rect.bar.low{fill:#f1c40f}rect.bar.medium{fill:#e67e22}rect.bar.high{fill:#c0392b}\
line.axis{stroke:#333}line.grid{stroke:#eee}text.tick,text.label{font-size:11px;fill:#333}\
line.threshold{stroke-width:2;stroke-dasharray:5,3}line.threshold.high{stroke:#c0392b}\
line.threshold.medium{stroke:#e67e22}line.threshold.low{stroke:#b7950b}\
text.threshold-label{font-size:11px}\
circle.incident.high{fill:#c0392b}circle.incident.medium{fill:#e67e22}circle.incident.low{fill:#f1c40f}\
circle.incident{stroke:#333;stroke-width:1}table.incidents code{font-size:85%;white-space:nowrap}";

const HELP: &str = "<h2>Tuning</h2>\n<p>Records are anomalies when their score is below \
<code>anomaly.threshold.low</code>; <code>medium</code> and <code>high</code> grade them. \
Move <code>low</code> left (more negative) to be alerted less, right to be alerted more; the \
table above shows how many records each choice would have flagged in this data. Keep \
<code>high</code> &lt; <code>medium</code> &lt; <code>low</code>. The bars are coloured by \
the severity their scores get; the count axis is logarithmic.</p>\n";

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        high: -0.1,
        medium: -0.05,
        low: 0.0,
    };

    #[test]
    fn counts_and_keeps_the_most_anomalous() {
        let mut r = ScoreReport::new(T, 2);
        for s in [0.1, 0.05, -0.02, -0.07, -0.2, f64::NAN] {
            r.add(s);
            if s < 0.0 && r.wants(s) {
                r.offer(Anomaly {
                    score: s,
                    ts: String::new(),
                    kind: "k".into(),
                    raw: "x".repeat(1000),
                    top_features: vec![],
                });
            }
        }
        assert_eq!(r.severities, [1, 1, 1, 2]);
        assert_eq!(r.unscorable, 1);
        assert_eq!(
            r.top.iter().map(|a| a.score).collect::<Vec<_>>(),
            [-0.2, -0.07]
        );
        assert!(r.top[0].raw.chars().count() <= RAW_SHOWN + 1);
        assert_eq!(r.below(0.0), 3);
        assert_eq!(r.below(-0.1), 1);
    }

    #[test]
    fn hostile_text_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\u{1b}[31m"),
            "&lt;a href=&#39;x&#39;&gt;&amp;\u{FFFD}[31m"
        );
    }
}
