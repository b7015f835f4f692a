#!/usr/bin/env python3
"""Labelled detection benchmark from a real mail log: attack episodes injected in the log's own style.

    tests/traffic/inject.py --log REAL.log --out DIR [--seed 1] [--train-share 0.5] [--year YYYY]

Reads a real Postfix log (rsyslog RFC 3339 `2023-03-14T00:00:31.185246+01:00 helga postfix/...` or
BSD syslog `Feb 25 13:58:26 server1 postfix/...`; other lines, such as Roundcube's
`[20-Oct-2020 14:56:10 +0100]: ...` or pasted fragments, may be mixed in) and writes DIR/traffic.log,
DIR/labels.csv and DIR/split.json in simulate.py's contract, for evaluate.py. Prints train_days on
stdout and a summary on stderr.

traffic.log
    Every real line, byte for byte and in its original order, with the injected lines merged in
    by time: an injected line goes after every real line with the same timestamp (at the log's
    precision). Real logs need not be in time order (dumps concatenate excerpts), so the log is
    cut into segments wherever its time steps back by more than a minute; each segment keeps a
    running-maximum clock and every episode lives inside one segment. Injected lines copy the log:
    timestamp format and zone offset, main host name, daemon names (postfix/submission/smtpd,
    postfix/10025/smtpd, postfix/amavis/smtp, postfix/pipe or postfix/local, as the log has them),
    PIDs (the running qmgr, postscreen, pickup, master and amavis; new smtpd/cleanup/smtp/...
    processes take PIDs interpolated between the real ones around them, never a real one, reused
    for back-to-back work as Postfix does), queue ids in the log's form (long time-encoded
    `4PbC4x469Jz3tBr` or short hex `AE11A4011B7B`, never a real one) and the Postfix generation
    (3.x `disconnect ... commands=` counters, or 2.x plain disconnects). Flows are complete:
    postscreen CONNECT/PASS NEW|OLD where the log uses postscreen, smtpd connect/TLS/.../disconnect,
    cleanup message-id, qmgr from=, the content-filter hop when the log has one (amavis/smtp ->
    10025/smtpd -> second queue id, amavis "Passed CLEAN"), delivery (smtp to the Internet, the
    log's local delivery for local users), retries, bounce notifications, qmgr removed. Injected
    lines past the end of their segment are dropped (a rotated log).

labels.csv
    `line,scenario,episode,day,noise`, one row per traffic.log line, 1-based. Real lines are
    `normal` (their scanners, rejects and bounces included), injected ones carry their scenario
    and `<scenario>-<n>`. `day` is the line's own calendar date (as written, local time) counted
    from the earliest date in the log, gaps included. `noise` is empty.

split.json
    {"train_days": N, "first_day": "YYYY-MM-DD", "year": ..., "zone": ..., "profile": {...}}: days < N
    are training and hold no attacks. N is the day boundary whose share of lines before it is nearest
    to --train-share, with lines on both sides and at least 20 minutes of syslog traffic after it.
    "profile" is what the injected lines copied from the log.

Year-less (BSD) timestamps
    The year is --year, else inferred: Postfix/Sendmail message-ids `<YYYYMMDDhhmm...>` (else
    Roundcube dates, else the clock) give a reference time, and every line takes the year that
    puts it at most one day after it (pf-parse's rule with that reference instead of the clock).
    Give pf-parse `--year` = split.json's "year" for the test days, and `--timezone` = its "zone",
    the syslog clock's offset from UTC as Postfix's own message-id stamps show it.

Attacks (test days only; one episode per scenario per 4 h of distinct test time, 2-8, spread evenly;
single attackers from the documentation ranges, distributed ones from public ranges absent from the
log, new addresses for every episode)
    sasl_brute_force         one address, 20-200 SASL LOGIN/PLAIN failures in 3-40 min, 1-3 per
                             session, 1-2 accounts
    password_spraying        one address, one failure every 4-20 min for 2-8 h, a new user name each time
    distributed_brute_force  one real account, 20-120 addresses with 1-2 tries each
    credential_stuffing      15-60 accounts from 10-50 addresses, 1-3 sessions of 1-3 failing tries each
    compromised_account      a real local user logs in from a new address and sends 15-60 spam
                             messages to 1-8 external recipients each: sent, deferred and retried,
                             bounced with DSNs back to the user
    directory_harvest        one address on port 25, 50-400 RCPT guesses in 5-40 min (550 5.1.1
                             User unknown in local recipient table, too many errors)
    open_relay_probe         1-4 addresses, 3-20 attempts each (554 5.7.1 Relay access denied)
    backscatter_storm        25-120 bounces from=<> from 15-80 MTAs in 10-60 min to forged local
                             senders: rejected as unknown, or accepted and delivered
    queue_flood              a web script: 30-150 `pickup uid=33 from=<www-data>` messages in
                             5-30 min, delivered to the Internet (some bounce)
    daemon_errors            1-3 lines of a fatal/panic/killed-by-signal error the log never has
    In Postfix 3 logs SASL failures carry `, sasl_username=...` (the 3.7+ form); in 2.x logs user
    names appear only in successful logins.

Deterministic for a given seed and log (one random.Random(seed), no hash() of strings, no
iteration over sets; the clock only as the last resort for the year). Standard library only.
"""
import argparse
import bisect
import datetime as dt
import json
import os
import random
import re
import sys
from collections import Counter, defaultdict, deque

SCENARIOS = ["sasl_brute_force", "password_spraying", "distributed_brute_force", "credential_stuffing",
             "compromised_account", "directory_harvest", "open_relay_probe", "backscatter_storm",
             "queue_flood", "daemon_errors"]
# (shortest, longest) active time in seconds, and the time the episode's deliveries may need after it
DURATIONS = {"sasl_brute_force": (180, 2400), "password_spraying": (7200, 28800),
             "distributed_brute_force": (1200, 9000), "credential_stuffing": (1800, 10800),
             "compromised_account": (900, 5400), "directory_harvest": (300, 2400), "open_relay_probe": (120, 1800),
             "backscatter_storm": (600, 3600), "queue_flood": (300, 1800), "daemon_errors": (1, 60)}
TAILS = {"compromised_account": 1500, "queue_flood": 1500, "backscatter_storm": 120}
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
EPOCH = dt.datetime(1970, 1, 1)
SLACK = 60                 # seconds a log may step back without starting a new segment
HOUR = 3600
LONG_LIVED = {"postfix/qmgr", "postfix/postscreen", "postfix/master", "postfix/anvil", "postfix/tlsmgr",
              "postfix/pickup", "amavis", "postfix/dnsblog", "postfix/tlsproxy", "postfix/verify", "postfix/scache"}
B52 = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"   # Postfix's long queue id alphabet
SYSTEM = ("root", "postmaster", "MAILER-DAEMON", "www-data")

DOC_NETS = ["192.0.2", "198.51.100", "203.0.113"]
PUBLIC_OCTETS = [5, 31, 37, 45, 46, 62, 77, 78, 79, 82, 85, 87, 89, 91, 92, 93, 94, 95, 103, 109, 141,
                 176, 178, 185, 188, 193, 194, 195, 212, 213, 217]
ROLES = ["admin", "info", "test", "office", "support", "sales", "contact", "webmaster", "postmaster", "mail",
         "user", "service", "help", "billing", "marketing", "hr", "noreply", "backup", "scanner", "guest",
         "demo", "shop", "team", "manager", "it", "security", "newsletter", "orders", "jobs", "kontakt",
         "buchhaltung", "verwaltung", "office1", "test1", "administrator", "reception", "accounting"]
FIRST = ["anna", "ben", "clara", "david", "eva", "felix", "greta", "hugo", "jonas", "lena", "max", "nora",
         "paul", "sara", "tom", "julia", "peter", "sofia", "lukas", "emma", "mia", "leon", "hanna", "marco",
         "laura", "michael", "thomas", "andreas", "stefan", "sabine", "petra", "markus", "daniel", "frank"]
LAST = ["mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "schulz",
        "hoffmann", "koch", "richter", "klein", "wolf", "neumann", "braun", "smith", "jones", "brown", "rossi"]
WORDS = ["solar", "green", "blue", "prime", "smart", "global", "alpha", "nova", "city", "star", "euro", "tech",
         "home", "shop", "direct", "best", "mega", "royal", "united", "metro", "vital", "trade", "media", "net"]
TLDS = ["com", "net", "org", "de", "fr", "it", "co.uk", "com.br", "nl", "pl", "es", "ru", "info", "biz", "in"]
# Freemail domains spam goes to, with their MX (delivery targets, not attackers) and reply style.
MX = {"gmail.com": ("gmail-smtp-in.l.google.com", "142.250.27.27", "gmail"), "yahoo.com": ("mta7.am0.yahoodns.net", "67.195.204.72", ""),
      "hotmail.com": ("hotmail-com.olc.protection.outlook.com", "52.101.68.16", ""), "web.de": ("mx-ha02.web.de", "212.227.17.8", "gmx"),
      "outlook.com": ("outlook-com.olc.protection.outlook.com", "52.101.73.10", ""), "gmx.de": ("mx01.emig.gmx.net", "212.227.17.5", "gmx"),
      "mail.ru": ("mxs.mail.ru", "94.100.180.31", ""), "yandex.ru": ("mx.yandex.ru", "77.88.21.249", ""),
      "aol.com": ("mx-aol.mail.gm0.yahoodns.net", "67.195.204.79", ""), "t-online.de": ("mx00.t-online.de", "194.25.134.8", ""),
      "orange.fr": ("smtp-in.orange.fr", "80.12.24.81", ""), "libero.it": ("smtp-in.libero.it", "213.209.1.129", "")}
REPLIES = {"bounced": ("5.1.1", "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown (in reply to RCPT TO command)"),
           "spam": ("5.7.1", "554 5.7.1 Message rejected as spam (in reply to end of DATA command)"),
           "deferred": ("4.7.0", "421 4.7.0 Try again later, closing connection. (in reply to MAIL FROM command)")}
BOT_HELOS = ["ylmf-pc", "User", "localhost", "WIN-CLJ1B0GQ6JP", "windows", "unknown", "mail.example.com"]
# (program, message, what master logs after it); skipped when the message's longest literal part is in the log
DAEMON_ERRORS = [
    ("postfix/cleanup", "fatal: open database /etc/postfix/header_checks.db: No such file or directory", ["exit status 1", "throttling"]),
    ("postfix/smtpd", "panic: vstream_fdopen: bad file {n}", ["killed by signal 6"]),
    ("postfix/smtpd", "fatal: no SASL authentication mechanisms", ["exit status 1", "throttling"]),
    ("postfix/qmgr", "panic: myfree: corrupt or unallocated memory block", ["killed by signal 6"]),
    ("postfix/trivial-rewrite", 'fatal: proxymap service is not configured for table "mysql:/etc/postfix/mysql-virtual.cf"',
     ["exit status 1"]),
    ("postfix/qmgr", "fatal: scan_dir_push: open directory deferred/{h}: Permission denied", ["exit status 1", "throttling"]),
    ("postfix/local", "fatal: open database /etc/aliases.db: No such file or directory", ["exit status 1"]),
    ("postfix/smtp", "fatal: unknown service: smtp/tcp", ["exit status 1", "throttling"]),
    ("postfix/master", "warning: process {dir}/smtpd pid {p} killed by signal 11", []),
    ("postfix/cleanup", "panic: cleanup_milter: unexpected milter reply: 0x{x}", ["killed by signal 6"])]

ISO_RE = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)? ")
BSD_RE = re.compile(r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d) ")
RC_RE = re.compile(r"\[(\d\d)-([A-Z][a-z]{2})-(\d{4}) (\d\d):(\d\d):(\d\d)")
TAG_RE = re.compile(r"(\S+) ([\w./-]+)\[(\d+)\]: (.*)$")
QID_RE = re.compile(r"^([0-9A-F]{6,12}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{1,6}): ")
IP4_RE = re.compile(r"(?<![\d.])(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}(?![\d.])")


def fmt_delay(x):
    return str(int(x)) if x >= 10 else "0" if x < 0.005 else "%.2g" % x


def counters(items):
    """smtpd's disconnect counters: items are (name, ok, total)."""
    parts, ok_sum, tot_sum = [], 0, 0
    for name, ok, tot in items:
        if tot:
            parts.append(f"{name}={ok}" if ok == tot else f"{name}={ok}/{tot}")
            ok_sum, tot_sum = ok_sum + ok, tot_sum + tot
    return " ".join(parts + [f"commands={ok_sum}" if ok_sum == tot_sum else f"commands={ok_sum}/{tot_sum}"])


def enc52(v, width):
    return "".join(B52[v // 52 ** k % 52] for k in range(width - 1, -1, -1))


def most(counter, default=None):
    return counter.most_common(1)[0][0] if counter else default


# ------------------------------------------------------------------ reading the real log
class Line:
    """raw bytes, q = timestamp in ticks (None without one), date, zone offset, host/prog/pid/msg, segment, key."""
    __slots__ = ("raw", "text", "iso", "q", "date", "off", "host", "prog", "pid", "msg", "seg", "key", "bsd")


def read_log(path, forced_year):
    """Parses every line. Returns (lines, ticks per second, year of BSD lines or None)."""
    raws = open(path, "rb").read().split(b"\n")
    if raws and raws[-1] == b"":
        raws.pop()
    lines, unit, evidence, rc_dates = [], None, [], []
    for raw in raws:
        ln = Line()
        ln.raw, ln.text = raw, raw.decode("utf-8", "replace")
        ln.iso = ln.q = ln.date = ln.off = ln.host = ln.prog = ln.pid = ln.msg = ln.bsd = None
        rest = None
        m = ISO_RE.match(ln.text)
        b = None if m else BSD_RE.match(ln.text)
        if m:
            frac = m.group(7) or ""
            unit = unit or 10 ** len(frac)
            naive = dt.datetime(*(int(g) for g in m.groups()[:6]))
            ticks = int((frac + "0" * 9)[:len(str(unit)) - 1] or 0)
            ln.q, ln.date, ln.off, ln.iso = int((naive - EPOCH).total_seconds()) * unit + ticks, naive.date(), m.group(8) or "", True
            rest = ln.text[m.end():]
        elif b and b.group(1) in MONTHS:
            ln.bsd = (MONTHS.index(b.group(1)) + 1,) + tuple(int(g) for g in b.groups()[1:])
            rest = ln.text[b.end():]
            e = re.search(r"(?:message-id|msgid)=<(20\d\d)(\d\d)\d\d\d\d\d\d", rest)
            if e and int(e.group(2)) == ln.bsd[0] and (ln.bsd[0], ln.bsd[1]) != (2, 29):
                evidence.append(dt.datetime(int(e.group(1)), *ln.bsd))
        else:
            r = RC_RE.match(ln.text)
            if r and r.group(2) in MONTHS:
                ln.date = dt.date(int(r.group(3)), MONTHS.index(r.group(2)) + 1, int(r.group(1)))
                rc_dates.append(dt.datetime.combine(ln.date, dt.time(*(int(g) for g in r.groups()[3:]))))
        t = TAG_RE.match(rest) if rest is not None else None
        if t:
            ln.host, ln.prog, ln.pid, ln.msg = t.group(1), t.group(2), int(t.group(3)), t.group(4)
        lines.append(ln)
    unit = unit or 1
    year = None
    if any(ln.bsd for ln in lines):
        ref = max(evidence or rc_dates or [dt.datetime.now()])
        year = forced_year or ref.year
        for ln in lines:
            if not ln.bsd:
                continue
            y = year
            while True:
                try:
                    when = dt.datetime(y, *ln.bsd)
                    if forced_year or when <= ref + dt.timedelta(days=1):
                        break
                except ValueError:      # Feb 29 goes to the last leap year
                    pass
                y -= 1
            ln.date, ln.q = when.date(), int((when - EPOCH).total_seconds()) * unit
    prev = None
    for ln in lines:                    # undated lines take the previous line's date
        ln.date = prev = ln.date or prev
    first = next((ln.date for ln in lines if ln.date), dt.date(2000, 1, 1))
    for ln in lines:
        ln.date = ln.date or first
    return lines, unit, year


def segment(lines, unit):
    """Cuts the log where time steps back by more than SLACK; key = running maximum within a segment."""
    seg, key = 0, None
    for ln in lines:
        if ln.q is not None:
            if key is not None and ln.q < key - SLACK * unit:
                seg, key = seg + 1, ln.q
            else:
                key = ln.q if key is None else max(key, ln.q)
        ln.seg, ln.key = seg, key
    return seg + 1


def test_windows(lines, nseg, first, b, unit):
    """Per segment, the span of its syslog lines on days >= b: [(seg, start, end)] of 20 min or more."""
    lo, hi = [None] * nseg, [None] * nseg
    for ln in lines:
        if ln.q is not None and ln.host and (ln.date - first).days >= b:
            s = ln.seg
            lo[s], hi[s] = min(lo[s] or ln.q, ln.q), max(hi[s] or ln.key, ln.key)
    return [(s, lo[s], hi[s]) for s in range(nseg) if lo[s] is not None and hi[s] - lo[s] >= 1200 * unit]


def choose_split(lines, nseg, first, share, unit):
    per_day = Counter((ln.date - first).days for ln in lines)
    best, before = None, 0
    for i, b in enumerate(sorted(per_day)):
        wins = test_windows(lines, nseg, first, b, unit) if i else None
        if wins and (best is None or abs(before / len(lines) - share) < best[0] - 1e-9):
            best = (abs(before / len(lines) - share), b, wins, before / len(lines))
        before += per_day[b]
    if best is None:
        sys.exit("inject.py: no day boundary leaves syslog traffic (20 min or more) on both sides")
    return best[1:]


# ------------------------------------------------------------------ what the log looks like
def study(lines, wins, unit):
    """Everything the injected lines copy from the log: names, daemons, formats, users, domains."""
    p = argparse.Namespace()
    segs = {s for s, _, _ in wins}
    hosts = Counter(ln.host for ln in lines if ln.prog and ln.prog.startswith("postfix") and ln.seg in segs)
    p.host = most(hosts) or most(Counter(ln.host for ln in lines if ln.host))
    mine = [ln for ln in lines if ln.host == p.host and ln.prog]
    progs = Counter(ln.prog for ln in mine)
    p.iso = any(ln.iso for ln in mine)
    p.postscreen = any(ln.prog == "postfix/postscreen" and ln.msg.startswith("CONNECT from") for ln in mine)
    srv = Counter(m.group(1) for ln in mine if ln.prog == "postfix/postscreen"
                  for m in [re.search(r" to \[([\d.]+)\]:25$", ln.msg)] if m)
    p.server_ip = most(srv, "192.0.2.1")
    p.counters = any(re.match(r"disconnect from \S+ .*commands=", ln.msg) for ln in mine if ln.prog.endswith("smtpd"))
    p.sasl_prog = "postfix/submission/smtpd" if progs["postfix/submission/smtpd"] else "postfix/smtpd"
    tls = Counter((ln.prog == p.sasl_prog, m.group(1)) for ln in mine if ln.prog.endswith("smtpd")
                  for m in [re.match(r"\w+ TLS connection established from \S+: (.*)$", ln.msg)] if m)
    p.tls = most(Counter({d: n for (_, d), n in tls.items()}))
    p.sasl_tls = most(Counter({d: n for (s, d), n in tls.items() if s}), p.tls)
    p.smtp_tls = next((re.sub(r"^.*?:25: ", "", ln.msg) for ln in mine if ln.prog == "postfix/smtp"
                       and ln.msg.startswith("Trusted TLS connection established to")), None)
    # a content filter: postfix/<name>/smtp to 127.0.0.1 and a reinjection smtpd fed from localhost
    p.filter_prog = next((f for f, _ in progs.most_common() if re.fullmatch(r"postfix/\w+/smtp", f)), None)
    local_fed = {ln.prog for ln in mine if "connect from localhost[127.0.0.1]" in ln.msg}
    p.reinject = next((f for f, _ in progs.most_common() if re.fullmatch(r"postfix/\w+/smtpd", f)
                       and f != p.sasl_prog and f in local_fed), None)
    p.filter = bool(p.filter_prog and p.reinject)
    ports = [x for x, _ in Counter(m.group(1) for ln in mine if ln.prog == p.filter_prog
                                   for m in [re.search(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:(\d+)", ln.msg)] if m).most_common()]
    p.filter_in, p.filter_out = (ports + ["10024"])[0], (ports[1:] + ports + ["10024"])[0]
    p.reinject_port = (re.findall(r"(\d+)/smtpd", p.reinject or "") + ["10025"])[0]
    p.amavis = progs["amavis"] > 0
    # local delivery (program, relay, the text in parentheses) and the mailboxes it reaches
    loc, rcpts = Counter(), Counter()
    for ln in mine:
        m = re.match(r"\w+: to=<([^>]+)>, (?:orig_to=<([^>]*)>, )?relay=([^,]+), .*status=sent \((.*)\)$", ln.msg)
        if m and ln.prog in ("postfix/local", "postfix/pipe", "postfix/lmtp", "postfix/virtual") \
                and not m.group(4).startswith("forwarded"):
            loc[(ln.prog, m.group(3), m.group(4))] += 1
            rcpts.update(a for a in m.groups()[:2] if a and "@" in a)
    p.local = most(loc, ("postfix/local", "local", "delivered to mailbox"))
    ver = next((re.search(r"version (\S+),", ln.msg).group(1) for ln in mine if "-- version " in ln.msg), "")
    p.daemon_dir = next((m.group(1) for ln in mine for m in [re.search(r"process (\S+)/[\w-]+ pid", ln.msg)] if m),
                        "/usr/libexec/postfix" if ver.startswith("2.") else "/usr/lib/postfix/sbin")
    # myorigin (local senders) and myhostname (message-ids) from the flows of picked-up mail
    pick = {QID_RE.match(ln.msg).group(1) for ln in mine if ln.prog == "postfix/pickup" and QID_RE.match(ln.msg)}
    p.myorigin = p.myhostname = None
    p.msgid_stamp = True
    for ln in mine:
        m = QID_RE.match(ln.msg)
        if m and m.group(1) in pick:
            f = re.search(r"from=<[^@>]+@([^>]+)>", ln.msg)
            mid = re.search(r"message-id=<(\d{12,14}\.)?" + m.group(1) + r"@([^>]+)>", ln.msg)
            if ln.prog == "postfix/qmgr" and f and not p.myorigin:
                p.myorigin = f.group(1)
            if mid and not p.myhostname:
                p.myhostname, p.msgid_stamp = mid.group(2), bool(mid.group(1))
    p.myorigin = p.myorigin or p.myhostname or p.host
    p.myhostname = p.myhostname or p.myorigin
    p.users = [a for a, _ in rcpts.most_common()]
    doms = Counter(a.split("@")[1] for a in rcpts.elements())
    p.domains = [d for d, _ in doms.most_common() if d not in (p.myorigin, p.myhostname)] or [p.myorigin]
    p.domain = p.domains[0]
    p.sasl_users = [u for u, _ in Counter(m.group(1) for ln in mine
                                          for m in [re.search(r"sasl_username=([^,\s]+)", ln.msg)] if m).most_common()]
    p.real_people = [a for a in p.users if a.split("@")[0] not in SYSTEM]
    qids = [m.group(1) for ln in mine if ln.prog.startswith("postfix") for m in [QID_RE.match(ln.msg)] if m]
    p.long_qid = sum(1 for q in qids if q[10:11] == "z") > len(qids) / 2
    p.inodes = [i for i, _ in Counter(q[11:] if p.long_qid else q[5:] for q in qids).most_common(4)] \
        or (["3tBr"] if p.long_qid else ["404B3A1"])
    p.real_qids = set(qids)
    # BSD logs: the Postfix message-id stamp is UTC, the syslog stamp local time
    shift = Counter(round((ln.q // unit - (dt.datetime.strptime(m.group(1), "%Y%m%d%H%M%S") - EPOCH).total_seconds())
                          / 900) * 900 for ln in mine if ln.q is not None
                    for m in [re.search(r"message-id=<(20\d{12})\.", ln.msg)] if m)
    p.utc_shift = most(shift, 0)
    p.real_nets = set(n for ln in lines for n in IP4_RE.findall(ln.text))
    p.errors = [e for e in DAEMON_ERRORS
                if not any(max(re.split(r"\{\w+\}", e[1]), key=len) in ln.text for ln in lines)]
    return p


# ------------------------------------------------------------------ the injector
class Injector:
    def __init__(self, lines, unit, wins, prof, rng):
        self.rng, self.p, self.unit, self.wins = rng, prof, unit, wins
        self.out = []                      # (seg, ticks, seq, text, scenario, episode)
        self.label, self.seg, self.wend = ("normal", ""), None, None
        self.used_ips, self.used_qids, self.dropped = set(), set(), 0
        self.episodes, self.pools, self.long_mem, self.mx_ips, self.err_i = Counter(), {}, {}, {}, -1
        mine = [ln for ln in lines if ln.host == prof.host and ln.pid is not None and ln.q is not None]
        self.real_pids = set(ln.pid for ln in lines if ln.pid is not None)
        self.pid_max = 32768 if max(self.real_pids | {1}) < 32768 else 4194304
        by_prog = defaultdict(list)
        for ln in mine:
            by_prog[ln.prog].append((ln.q, ln.pid))
        self.by_prog = {k: sorted(v) for k, v in by_prog.items()}
        self.clock = sorted((ln.q, ln.pid) for ln in mine if ln.prog not in LONG_LIVED) or [(0, 1000)]
        self.clock_t = [c[0] for c in self.clock]
        self.amavis_ctr = Counter()
        for ln in mine:
            m = re.match(r"\((\d+)-(\d+)\)", ln.msg) if ln.prog == "amavis" else None
            if m:
                self.amavis_ctr[int(m.group(1))] = max(self.amavis_ctr[int(m.group(1))], int(m.group(2)))
        self.seg_keys, self.seg_offs = defaultdict(list), defaultdict(list)
        for ln in lines:
            if ln.q is not None:
                self.seg_keys[ln.seg].append(ln.key)
                self.seg_offs[ln.seg].append(ln.off or "")

    # -------------------------------------------------------------- time, output
    def u(self, a, b):
        return self.rng.uniform(a, b)

    def tq(self, t):
        return int(t * self.unit)

    def offset(self, q):
        """The zone offset of the real line before q in the current segment."""
        return self.seg_offs[self.seg][max(0, bisect.bisect_right(self.seg_keys[self.seg], q) - 1)]

    def emit(self, t, prog, pid, msg):
        q = self.tq(t)
        if q > self.wend:
            self.dropped += 1
            return
        secs, frac = divmod(q, self.unit)
        d = EPOCH + dt.timedelta(seconds=secs)
        if self.p.iso:
            f = f".{frac:0{len(str(self.unit)) - 1}d}" if self.unit > 1 else ""
            stamp = f"{d:%Y-%m-%dT%H:%M:%S}{f}{self.offset(q)}"
        else:
            stamp = f"{MONTHS[d.month - 1]} {d.day:2d} {d:%H:%M:%S}"
        self.out.append((self.seg, q, len(self.out), f"{stamp} {self.p.host} {prog}[{pid}]: {msg}", *self.label))

    def utc(self, t):
        """Seconds since the epoch in UTC for local time t."""
        if not self.p.iso:
            return int(t) - self.p.utc_shift
        off = self.offset(self.tq(t))
        sign = -1 if off.startswith("-") else 1
        return int(t) - (sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60) if len(off) == 6 else 0)

    # -------------------------------------------------------------- pids, queue ids, names
    def fresh_pid(self, t):
        """A new process: a pid between the real ones logged around t, never one the log uses."""
        q = self.tq(t)
        i = bisect.bisect_right(self.clock_t, q) - 1
        if i < 0:
            p = self.clock[0][1] - self.rng.randint(50, 400)
        else:
            t0, p0 = self.clock[i]
            t1, p1 = self.clock[i + 1] if i + 1 < len(self.clock) else (None, None)
            if p1 is not None and p0 - p1 > 16384 and self.pid_max == 32768:
                p1 += self.pid_max          # the pid counter wrapped in between
            if p1 is not None and p1 > p0 and t1 > t0:
                p = p0 + (p1 - p0) * (q - t0) / (t1 - t0)
            else:
                p = p0 + min(3000, (q - t0) / self.unit * 0.2)
        p = int(p) + self.rng.randint(1, 9)
        while True:
            p = max(300, 300 + p % self.pid_max if p >= self.pid_max else p)
            if p not in self.real_pids:
                self.real_pids.add(p)
                return p
            p += 1

    def long_pid(self, prog, t):
        """The running process of a long-lived daemon (pickup only if it logged in the last 6 hours)."""
        arr, q = self.by_prog.get(prog), self.tq(t)
        recent = 6 * HOUR * self.unit if prog == "postfix/pickup" else float("inf")
        if arr:
            i = bisect.bisect_right(arr, (q, 1 << 62)) - 1
            if i >= 0 and q - arr[i][0] < recent:
                return arr[i][1]
            if i < 0 and prog != "postfix/pickup":
                return arr[0][1]
        mem = self.long_mem.get(prog)
        if mem and q - mem[1] < recent:
            self.long_mem[prog] = (mem[0], q)
            return mem[0]
        boss = self.by_prog.get("postfix/qmgr") or self.by_prog.get("postfix/postscreen")
        if prog == "postfix/master" and boss:     # master started qmgr a moment after itself
            pid = max(300, boss[0][1] - self.rng.randint(3, 60))
        else:
            pid = self.fresh_pid(t)
        self.long_mem[prog] = (pid, q)
        return pid

    def proc(self, prog, t, busy=0.0):
        """A short-lived daemon: this episode's process of that kind idle for < 100 s, else a new one."""
        if prog in LONG_LIVED:
            return self.long_pid(prog, t)
        pool = self.pools.setdefault((self.label[1], prog), [])
        for entry in pool:
            if entry[1] <= t <= entry[1] + 100:
                entry[1] = t + busy
                return entry[0]
        pool.append([self.fresh_pid(t), t + busy])
        return pool[-1][0]

    def release(self, prog, pid, t):
        for entry in self.pools.get((self.label[1], prog), []):
            if entry[0] == pid:
                entry[1] = t

    def qid(self, t, second=False):
        p, r = self.p, self.rng
        while True:
            if p.long_qid:          # seconds, microseconds, 'z', inode number
                usec = int(t % 1 * 1e6) if self.unit > 1 else r.randint(0, 999999)
                q = enc52(self.utc(t), 6) + enc52(usec, 4) + "z" + p.inodes[min(len(p.inodes) - 1, int(second))]
                t += 1e-6 * r.randint(1, 50)
            else:                   # microseconds and inode number in hex, near the log's inodes
                base = r.choice(p.inodes)
                inode = "%0*X" % (len(base), (int(base, 16) + r.randint(-300, 300)) % 16 ** len(base)) \
                    if re.fullmatch(r"[0-9A-F]+", base) else base
                q = "%05X" % r.randint(0, 999999) + inode
            if q not in p.real_qids and q not in self.used_qids:
                self.used_qids.add(q)
                return q

    def new_ip(self, doc=False):
        r = self.rng
        while True:
            net = r.choice(DOC_NETS) if doc else f"{r.choice(PUBLIC_OCTETS)}.{r.randint(0, 255)}.{r.randint(0, 255)}"
            ip = f"{net}.{r.randint(1, 254)}"
            if net not in self.p.real_nets and ip not in self.used_ips:
                self.used_ips.add(ip)
                return ip

    def rdns(self, ip, named=0.3):
        if self.rng.random() >= named:
            return "unknown"
        a, b, c, d = ip.split(".")
        return self.rng.choice([f"{d}-{c}-{b}-{a}.static.{self.random_domain()}", f"vps{d}.{self.random_domain()}",
                                f"host-{a}-{b}-{c}-{d}.{self.random_domain()}"])

    def random_domain(self):
        a, b = self.rng.sample(WORDS, 2)
        return f"{a}{b}{self.rng.choice(['', str(self.rng.randint(1, 99))])}.{self.rng.choice(TLDS)}"

    def random_person(self, domain=None):
        r = self.rng
        f, l = r.choice(FIRST), r.choice(LAST)
        local = r.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}{l}{r.randint(1, 99)}", f"{f}_{l}", f"{f}{r.randint(1960, 2005)}"])
        return f"{local}@{domain or r.choice(sorted(MX))}"

    def account_names(self, n):
        """User names attackers try: the log's SASL users and mailboxes first, then guesses at its domains."""
        p = self.p
        names = list(p.sasl_users) + [a for a in p.real_people if a not in p.sasl_users]
        guesses = [f"{x}@{d}" for d in p.domains[:3] for x in ROLES] + [f"{f}@{p.domain}" for f in FIRST] + \
                  [f"{f}.{l}@{p.domain}" for f in FIRST[:12] for l in LAST[:6]]
        self.rng.shuffle(guesses)
        return (names + [g for g in guesses if g not in names])[:n]

    def msgid(self, t, qid=None, domain=None):
        r, p = self.rng, self.p
        if qid:
            stamp = f"{EPOCH + dt.timedelta(seconds=self.utc(t)):%Y%m%d%H%M%S}." if p.msgid_stamp else ""
            return f"{stamp}{qid}@{p.myhostname}"
        return r.choice([f"{r.getrandbits(96):024x}@{domain}", f"{r.getrandbits(40):x}.{r.getrandbits(32):x}@{domain}"])

    # -------------------------------------------------------------- building blocks
    def session(self, t, prog, ip, host, tls, new=None):
        """Opens an SMTP session (postscreen first when new is not None and the log uses it). Returns (pid, t)."""
        if new is not None and self.p.postscreen:
            ps = self.long_pid("postfix/postscreen", t)
            port = self.rng.randint(1024, 65535)
            self.emit(t, "postfix/postscreen", ps, f"CONNECT from [{ip}]:{port} to [{self.p.server_ip}]:25")
            t += self.u(6.0, 6.1) if new else self.u(0.0002, 0.002)
            self.emit(t, "postfix/postscreen", ps, f"PASS {'NEW' if new else 'OLD'} [{ip}]:{port}")
            t += self.u(0.3, 2.0) if new else self.u(0.001, 0.004)
        pid = self.proc(prog, t, busy=HOUR)
        self.emit(t, prog, pid, f"connect from {host}[{ip}]")
        if tls:
            t += self.u(0.05, 0.4)
            self.emit(t, prog, pid, f"Anonymous TLS connection established from {host}[{ip}]: {tls}")
        return pid, t

    def disconnect(self, t, prog, pid, host, ip, tls, **cmds):
        """cmds: name=count or name=(accepted, total), after ehlo and starttls."""
        items = [("ehlo", 2 if tls else 1, 2 if tls else 1), ("starttls", int(bool(tls)), int(bool(tls)))]
        items += [(k, *(v if isinstance(v, tuple) else (v, v))) for k, v in cmds.items()]
        self.emit(t, prog, pid, f"disconnect from {host}[{ip}]" + (f" {counters(items)}" if self.p.counters else ""))
        self.release(prog, pid, t)

    def auth_session(self, t, ip, host, users, gap=(0.5, 3.0)):
        """One SASL session whose every AUTH fails (one per entry of users). Returns its end."""
        p, r = self.p, self.rng
        tls = p.sasl_tls if p.sasl_prog != "postfix/smtpd" or r.random() < 0.7 else None
        pid, t = self.session(t, p.sasl_prog, ip, host, tls)
        method = r.choice(["LOGIN", "LOGIN", "PLAIN"])
        for user in users:
            t += self.u(*gap)
            why = "authentication failure" if not p.counters else \
                ("UGFzc3dvcmQ6" if method == "LOGIN" else "(reason unavailable)") + f", sasl_username={user}"
            self.emit(t, p.sasl_prog, pid, f"warning: {host}[{ip}]: SASL {method} authentication failed: {why}")
        t += self.u(0.01, 0.5)
        lost = r.random() < 0.3
        if lost:
            self.emit(t, p.sasl_prog, pid, f"lost connection after AUTH from {host}[{ip}]")
            t += self.u(0.0001, 0.001)
        self.disconnect(t, p.sasl_prog, pid, host, ip, tls, auth=(0, len(users)), quit=int(not lost))
        return t

    def qmgr(self, t, msg):
        self.emit(t, "postfix/qmgr", self.long_pid("postfix/qmgr", t), msg)

    def cleanup(self, t, qid, msgid):
        pid = self.proc("postfix/cleanup", t)
        self.emit(t, "postfix/cleanup", pid, f"{qid}: message-id=<{msgid}>")
        self.release("postfix/cleanup", pid, t)

    def local_deliver(self, t, qid, rcpt):
        """Delivery to a local mailbox the way the log does it (pipe to dovecot, local, lmtp)."""
        prog, relay, text = self.p.local
        if rcpt.split("@")[-1] in (self.p.myorigin, self.p.myhostname):
            prog, relay, text = "postfix/local", "local", "delivered to mailbox"
        pid = self.proc(prog, t)
        a, b, d = self.u(0.005, 0.03), self.u(0.005, 0.03), self.u(0.01, 0.15)
        t += a + b + d
        self.emit(t, prog, pid, f"{qid}: to=<{rcpt}>, relay={relay}, delay={fmt_delay(a + b + d)}, "
                                f"delays={fmt_delay(a)}/{fmt_delay(b)}/0/{fmt_delay(d)}, dsn=2.0.0, status=sent ({text})")
        self.release(prog, pid, t)
        return t

    def amavis(self, t, qid, q2, sender, rcpts, msgid, size, client, inbound):
        r = self.rng
        near = [pid for q, pid in self.by_prog.get("amavis", []) if abs(q - self.tq(t)) < 2 * HOUR * self.unit] \
            or [pid for _, pid in self.by_prog.get("amavis", [])[-5:]] or [self.long_pid("amavis", t)]
        apid = r.choice(near)
        self.amavis_ctr[apid] += 1
        rc = ",".join(f"<{x}>" for x in rcpts)
        if client:
            where = f"[{client[0]}]:{client[1]} [{client[0]}] ESMTP/ESMTP <{sender}> -> {rc}, " \
                    f"(ESMTP{'S' if inbound else 'SA'}://[{client[0]}]:{client[1]})"
        else:
            where = f"[127.0.0.1] /ESMTP <{sender}> -> {rc}, ()"
        tag = "{RelayedInbound}," if inbound else "{RelayedInternal}, ORIGINATING LOCAL"
        mail_id = "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") for _ in range(12))
        self.emit(t, "amavis", apid, f"({apid}-{self.amavis_ctr[apid]:02d}) Passed CLEAN {tag} {where}, Queue-ID: {qid}, "
                                     f"Message-ID: <{msgid}>, mail_id: {mail_id}, Hits: {self.u(-1.5, 4.5):.3f}, "
                                     f"size: {size}, queued_as: {q2}, {r.randint(300, 5000)} ms")

    def through_filter(self, t, qid, sender, rcpts, size, msgid, client, inbound):
        """The content-filter hop: filter smtp -> reinjection smtpd -> a second queue id. Returns (t, qid2, size2)."""
        p, start, n = self.p, t, len(rcpts)
        t += self.u(0.4, 4.0)
        rp = self.proc(p.reinject, t, busy=1)
        self.emit(t, p.reinject, rp, "connect from localhost[127.0.0.1]")
        q2 = self.qid(t + 0.005, second=True)
        self.emit(t + 0.005, p.reinject, rp, f"{q2}: client=localhost[127.0.0.1]")
        self.cleanup(t + 0.008, q2, msgid)
        size2 = size + self.rng.randint(550, 1100)
        self.qmgr(t + 0.012, f"{q2}: from=<{sender}>, size={size2}, nrcpt={n} (queue active)")
        self.disconnect(t + 0.013, p.reinject, rp, "localhost", "127.0.0.1", None, mail=1, rcpt=n, data=1, quit=1)
        if p.amavis:
            self.amavis(t + 0.02, qid, q2, sender, rcpts, msgid, size, client, inbound)
        fp, d = self.proc(p.filter_prog, t), t + 0.025 - start
        for x in rcpts:
            self.emit(t + 0.025, p.filter_prog, fp,
                      f"{qid}: to=<{x}>, relay=127.0.0.1[127.0.0.1]:{p.filter_in if inbound else p.filter_out}, "
                      f"delay={fmt_delay(d)}, delays=0.02/0.01/0.01/{fmt_delay(d - 0.04)}, dsn=2.0.0, status=sent "
                      f"(250 2.0.0 from MTA(smtp:[127.0.0.1]:{p.reinject_port}): 250 2.0.0 Ok: queued as {q2})")
        self.release(p.filter_prog, fp, t + 0.03)
        self.qmgr(t + 0.03, f"{qid}: removed")
        return t + 0.04, q2, size2

    def deliver_out(self, t, qid, sender, size, rcpts):
        """smtp deliveries per domain (deferred recipients retried once), DSN to the sender, removed."""
        r = self.rng
        bounced, start, pending = [], t, list(rcpts)
        for attempt in range(2):
            if attempt:
                t = start + self.u(300, 1200)
                if t > self.wend / self.unit - 120:
                    return t               # still deferred when the log ends
                self.qmgr(t, f"{qid}: from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)")
            retry, bydom = [], {}
            for x in pending:
                bydom.setdefault(x.split("@")[1], []).append(x)
            for dom, group in bydom.items():
                mx, ip, style = MX.get(dom) or (f"mx.{dom}", self.mx_ips.get(dom) or self.mx_ips.setdefault(dom, self.new_ip()), "")
                pid = self.proc("postfix/smtp", t)
                t += self.u(0.05, 0.4)
                if self.p.smtp_tls and r.random() < 0.5:
                    self.emit(t, "postfix/smtp", pid, f"Trusted TLS connection established to {mx}[{ip}]:25: {self.p.smtp_tls}")
                for x in group:
                    status = r.choices(["sent", "bounced", "spam", "deferred"], [75, 20, 5, 0] if attempt else [70, 12, 6, 12])[0]
                    if status == "sent":
                        dsn, text = "2.0.0", {"gmail": f"250 2.0.0 OK  {r.randint(1678000000, 1687999999)} "
                                                       f"{r.getrandbits(60):x}.{r.randint(1, 600)} - gsmtp",
                                              "gmx": f"250 Requested mail action okay, completed: id={r.getrandbits(40):X}"
                                                     f"-{r.getrandbits(40):X}"}.get(style, f"250 2.0.0 Ok: queued as {r.getrandbits(44):011X}")
                    else:
                        dsn, text = REPLIES[status]
                        text = f"host {mx}[{ip}] said: " + text.format(rcpt=x)
                    a, c, d = t - start, self.u(0.1, 0.6), self.u(0.1, 1.2)
                    t += c + d
                    word = "bounced" if status == "spam" else status
                    self.emit(t, "postfix/smtp", pid, f"{qid}: to=<{x}>, relay={mx}[{ip}]:25, delay={fmt_delay(a + c + d)}, "
                                                      f"delays={fmt_delay(a)}/0.01/{fmt_delay(c)}/{fmt_delay(d)}, "
                                                      f"dsn={dsn}, status={word} ({text})")
                    (retry if word == "deferred" else bounced if word == "bounced" else []).append(x)
                self.release("postfix/smtp", pid, t)
            pending = retry
            if not pending:
                break
        if pending:
            return t
        if bounced and sender:
            t = self.dsn(t + 0.01, qid, sender)
        self.qmgr(t + 0.002, f"{qid}: removed")
        return t

    def dsn(self, t, qid, sender):
        """bounce's non-delivery notification, delivered locally to a local sender."""
        q3, bp = self.qid(t), self.proc("postfix/bounce", t)
        self.emit(t, "postfix/bounce", bp, f"{qid}: sender non-delivery notification: {q3}")
        self.release("postfix/bounce", bp, t)
        self.cleanup(t + 0.002, q3, self.msgid(t, q3))
        self.qmgr(t + 0.004, f"{q3}: from=<>, size={self.rng.randint(2400, 9000)}, nrcpt=1 (queue active)")
        local = sender.split("@")[1] in self.p.domains + [self.p.myorigin, self.p.myhostname]
        t2 = self.local_deliver(t + 0.01, q3, sender) if local else t + 0.5
        self.qmgr(t2 + 0.001, f"{q3}: removed")
        return t

    def route_out(self, t, qid, sender, size, rcpts, msgid, client):
        if self.p.filter:
            t, qid, size = self.through_filter(t, qid, sender, rcpts, size, msgid, client, inbound=False)
        return self.deliver_out(t, qid, sender, size, rcpts)

    def route_in(self, t, qid, sender, size, rcpt, msgid, client):
        if self.p.filter:
            t, qid, _ = self.through_filter(t, qid, sender, [rcpt], size, msgid, client, inbound=True)
        t = self.local_deliver(t + self.u(0.02, 0.1), qid, rcpt)
        self.qmgr(t + 0.0005, f"{qid}: removed")
        return t

    def rcpt_session(self, t, ip, host, helo, rejects, new, accepted=0, limit=20):
        """A port-25 session whose RCPTs are refused: rejects = [(reply, from, to)]. Returns its end."""
        tls = self.p.tls if self.rng.random() < 0.4 else None
        pid, t = self.session(t, "postfix/smtpd", ip, host, tls, new)
        done = 0
        for reply, frm, to in rejects:
            t += self.u(0.05, 1.5)
            self.emit(t, "postfix/smtpd", pid, f"NOQUEUE: reject: RCPT from {host}[{ip}]: {reply}; from=<{frm}> "
                                               f"to=<{to}> proto=ESMTP helo=<{helo}>")
            done += 1
            if done >= limit:
                t += self.u(0.01, 0.2)
                self.emit(t, "postfix/smtpd", pid, f"too many errors after RCPT from {host}[{ip}]")
                break
        t += self.u(0.05, 1.0)
        ok = int(done < limit)
        self.disconnect(t, "postfix/smtpd", pid, host, ip, tls, mail=1, rcpt=(min(accepted, done), done + min(accepted, done)),
                        rset=(ok, ok), quit=(ok, ok))
        return t

    # -------------------------------------------------------------- scenarios
    def sasl_brute_force(self, t, dur):
        r = self.rng
        ip = self.new_ip(doc=True)
        host = self.rdns(ip, 0.2)
        targets = r.sample(self.account_names(4), r.randint(1, 2))
        total = r.randint(20, 200)
        gap = dur / total
        while total > 0:
            k = min(total, r.randint(1, 3))
            t = self.auth_session(t, ip, host, [r.choice(targets) for _ in range(k)], (gap * 0.3, gap * 1.2)) + self.u(0.2, gap)
            total -= k

    def password_spraying(self, t, dur):
        ip = self.new_ip(doc=True)
        host = self.rdns(ip, 0.3)
        names, end = self.account_names(400), t + dur
        self.rng.shuffle(names)
        for name in names:
            if t > end:
                break
            self.auth_session(t, ip, host, [name])
            t += self.u(240, 1200)

    def distributed_brute_force(self, t, dur):
        r = self.rng
        account = r.choice(self.p.sasl_users + self.p.real_people or self.account_names(5))
        for k in sorted(r.uniform(0, dur) for _ in range(r.randint(20, 120))):
            ip = self.new_ip()
            self.auth_session(t + k, ip, self.rdns(ip, 0.35), [account] * r.randint(1, 2))

    def credential_stuffing(self, t, dur):
        r = self.rng
        accounts = self.account_names(r.randint(15, 60))
        for ip in [self.new_ip() for _ in range(r.randint(10, 50))]:
            host, at = self.rdns(ip, 0.3), t + self.u(0, dur * 0.8)
            for _ in range(r.randint(1, 3)):
                at = self.auth_session(at, ip, host, r.sample(accounts, r.randint(1, 3))) + self.u(5, 240)

    def compromised_account(self, t, dur):
        r, p = self.rng, self.p
        user = r.choice(p.sasl_users or p.real_people or [f"{r.choice(FIRST)}@{p.domain}"])
        sender = user if "@" in user else f"{user}@{p.domain}"
        if p.sasl_users and r.random() < 0.6:          # a shared login sending as one of the mailboxes
            sender = r.choice([a for a in p.real_people if a.split("@")[1] in p.domains] or [sender])
        ip = self.new_ip(doc=True)
        host, tls, port = self.rdns(ip, 0.4), p.sasl_tls, r.randint(1024, 65535)
        total, end = r.randint(15, 60), t + dur
        while total > 0 and t < end:
            batch = min(total, r.randint(3, 15))
            total -= batch
            pid, t = self.session(t, p.sasl_prog, ip, host, tls)
            method, nrc = r.choice(["LOGIN", "PLAIN"]), 0
            for _ in range(batch):
                t += self.u(0.3, 3.0)
                qid = self.qid(t)
                self.emit(t, p.sasl_prog, pid, f"{qid}: client={host}[{ip}], sasl_method={method}, sasl_username={user}")
                dom = r.choice(sorted(MX) + [self.random_domain() for _ in range(4)])
                rcpts = sorted({self.random_person(dom if r.random() < 0.5 else None) for _ in range(r.randint(1, 8))})
                nrc += len(rcpts)
                size, msgid = r.randint(1800, 40000), self.msgid(t, domain=sender.split("@")[1])
                t += self.u(0.05, 0.4)
                self.cleanup(t, qid, msgid)
                t += self.u(0.002, 0.02)
                self.qmgr(t, f"{qid}: from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)")
                self.route_out(t, qid, sender, size, rcpts, msgid, (ip, port))
            t += self.u(0.02, 0.3)
            self.disconnect(t, p.sasl_prog, pid, host, ip, tls, auth=1, mail=batch, rcpt=nrc, data=batch, quit=1)
            t += self.u(10, max(20, dur / 8))

    def directory_harvest(self, t, dur):
        r, p = self.rng, self.p
        ip = self.new_ip(doc=True)
        host, helo = self.rdns(ip, 0.3), r.choice(BOT_HELOS + [f"mail.{self.random_domain()}"])
        real = {a.split("@")[0] for a in p.users}
        pool = [x for x in ROLES + FIRST + [f"{f}.{l}" for f in FIRST for l in LAST[:8]] +
                [f"{f[0]}{l}" for f in FIRST for l in LAST[:8]] if x not in real]
        r.shuffle(pool)
        total = r.randint(50, 400)
        frm, new, i = self.random_person(), True, 0
        while i < total:
            k = min(total - i, r.randint(5, 25))
            rej = [(f"550 5.1.1 <{g}@{p.domain}>: Recipient address rejected: User unknown in local recipient table",
                    frm, f"{g}@{p.domain}") for g in pool[i:i + k]]
            t = self.rcpt_session(t, ip, host, helo, rej, new, accepted=r.choice([0, 0, 1])) + self.u(0.5, dur / total * k * 0.5)
            i, new = i + k, False

    def open_relay_probe(self, t, dur):
        r, p = self.rng, self.p
        for _ in range(r.randint(1, 4)):
            ip = self.new_ip(doc=r.random() < 0.5)
            host = self.rdns(ip, 0.3)
            helo = r.choice([f"[{p.server_ip}]", p.server_ip, "ylmf-pc", "User", p.myhostname, ip])
            at, new, left = t + self.u(0, dur * 0.5), True, r.randint(3, 20)
            while left > 0:
                rej = []
                for _ in range(min(left, r.randint(1, 5))):
                    victim = self.random_person()
                    frm = r.choice([f"test@{p.domain}", f"admin@{p.domain}", victim, f"relaytest@{self.random_domain()}"])
                    rej.append((f"554 5.7.1 <{victim}>: Relay access denied", frm, victim))
                left -= len(rej)
                at = self.rcpt_session(at, ip, host, helo, rej, new) + self.u(5, dur / 6)
                new = False

    def backscatter_storm(self, t, dur):
        r, p = self.rng, self.p
        mtas = []
        for _ in range(r.randint(15, 80)):
            ip, dom = self.new_ip(), self.random_domain()
            mtas.append([ip, r.choice([f"mail.{dom}", f"mx{r.randint(1, 9)}.{dom}", f"smtp.{dom}"]), True])
        real = p.real_people or p.users
        for k in sorted(self.u(0, dur) for _ in range(r.randint(25, 120))):
            mta = r.choice(mtas)
            ip, host, new = mta
            mta[2] = False
            if real and r.random() < 0.3:        # forged as a real user: accepted and delivered
                tls = self.p.tls if r.random() < 0.5 else None
                pid, at = self.session(t + k, "postfix/smtpd", ip, host, tls, new)
                at += self.u(0.1, 0.8)
                qid = self.qid(at)
                self.emit(at, "postfix/smtpd", pid, f"{qid}: client={host}[{ip}]")
                size, msgid = r.randint(2500, 12000), self.msgid(at, domain=host.split(".", 1)[1])
                self.cleanup(at + 0.05, qid, msgid)
                self.qmgr(at + 0.07, f"{qid}: from=<>, size={size}, nrcpt=1 (queue active)")
                self.disconnect(at + 0.08, "postfix/smtpd", pid, host, ip, tls, mail=1, rcpt=1, data=1, quit=1)
                self.route_in(at + 0.1, qid, "", size, r.choice(real), msgid, (ip, r.randint(1024, 65535)))
            else:
                local = r.choice([f"{r.choice(FIRST)}.{r.choice(LAST)}", f"{r.choice(WORDS)}{r.randint(1, 999)}",
                                  "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(5, 10)))])
                to = f"{local}@{r.choice(p.domains[:2])}"
                self.rcpt_session(t + k, ip, host, host, [(f"550 5.1.1 <{to}>: Recipient address rejected: "
                                                           f"User unknown in local recipient table", "", to)], new)

    def queue_flood(self, t, dur):
        r, p = self.rng, self.p
        pk, sender = self.long_pid("postfix/pickup", t), f"www-data@{p.myorigin}"
        for k in sorted(self.u(0, dur) for _ in range(r.randint(30, 150))):
            at = t + k
            qid = self.qid(at)
            self.emit(at, "postfix/pickup", pk, f"{qid}: uid=33 from=<www-data>")
            size, msgid = r.randint(900, 6000), self.msgid(at, qid)
            self.cleanup(at + self.u(0.002, 0.02), qid, msgid)
            rcpts = sorted({self.random_person() for _ in range(r.choice([1, 1, 1, 2, 3]))})
            at += self.u(0.02, 0.05)
            self.qmgr(at, f"{qid}: from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)")
            self.route_out(at, qid, sender, size, rcpts, msgid, None)

    def daemon_errors(self, t, dur):
        r, p = self.rng, self.p
        if not p.errors:
            return
        self.err_i += 1
        if self.err_i == 0:
            r.shuffle(p.errors)
        prog, msg, follow = p.errors[self.err_i % len(p.errors)]
        mp = self.long_pid("postfix/master", t)
        pid = mp if prog == "postfix/master" else self.long_pid(prog, t) if prog == "postfix/qmgr" else self.fresh_pid(t)
        daemon = f"{p.daemon_dir}/{prog.split('/')[-1]}"
        self.emit(t, prog, pid, msg.format(n=r.randint(3, 9), h=r.choice("0123456789ABCDEF"), dir=p.daemon_dir,
                                           p=self.fresh_pid(t), x=f"{r.getrandbits(16):x}"))
        for f in follow[:r.randint(0, 2)]:
            t += self.u(0.001, 0.05)
            self.emit(t, "postfix/master", mp, f"warning: {daemon}: bad command startup -- throttling" if f == "throttling"
                      else f"warning: process {daemon} pid {pid} {f}")

    # -------------------------------------------------------------- scheduling
    def run(self, per):
        """per episodes of every scenario, spread evenly over the test windows laid end to end."""
        spans = [(a // self.unit, b // self.unit, s, b) for s, a, b in self.wins]
        total = sum(b - a for a, b, _, _ in spans)
        for name in SCENARIOS:
            for j in range(per):
                pos = (j + self.u(0.05, 0.95)) * total / per
                for a, b, s, wend in spans:
                    if pos <= b - a:
                        break
                    pos -= b - a
                lo, hi = DURATIONS[name]
                tail = TAILS.get(name, 30)
                dur = min(self.u(lo, hi), max(1.0, (b - a - tail) * 0.85))
                start = max(a + 1, min(a + pos, b - dur - tail)) + self.u(0, 1)
                self.seg, self.wend = s, wend
                self.label = (name, f"{name}-{j + 1}")
                self.episodes[name] += 1
                getattr(self, name)(start, dur)
        self.label = ("normal", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--train-share", type=float, default=0.5)
    ap.add_argument("--year", type=int, default=None, help="year for BSD timestamps (default: inferred)")
    args = ap.parse_args()
    if not 0 < args.train_share < 1:
        ap.error("--train-share must be between 0 and 1")
    lines, unit, year = read_log(args.log, args.year)
    first = min(ln.date for ln in lines)
    nseg = segment(lines, unit)
    b, wins, frac = choose_split(lines, nseg, first, args.train_share, unit)
    prof = study(lines, wins, unit)
    inj = Injector(lines, unit, wins, prof, random.Random(args.seed))
    spans, hours, reach = sorted((s, e) for _, s, e in wins), 0.0, None
    for s, e in spans:                  # distinct test time: dumps repeat the same excerpt
        hours += max(0, e - max(s, reach or s)) / unit / HOUR
        reach = max(reach or e, e)
    inj.run(max(2, min(8, round(hours / 4))))

    pending = defaultdict(deque)        # per segment, injected lines in time order
    for item in sorted(inj.out, key=lambda x: x[:3]):
        pending[item[0]].append(item)
    os.makedirs(args.out, exist_ok=True)
    per_scen = Counter()
    with open(os.path.join(args.out, "traffic.log"), "wb") as log, \
            open(os.path.join(args.out, "labels.csv"), "w") as lab:
        lab.write("line,scenario,episode,day,noise\n")

        def put(raw, scen, ep, day):
            per_scen[scen] += 1
            per_scen[""] += 1               # the line number
            log.write(raw + b"\n")
            lab.write(f"{per_scen['']},{scen},{ep},{day},\n")

        def flush(seg, limit):
            """Writes the segment's injected lines stamped before limit (all of them for None)."""
            pend = pending.get(seg)
            while pend and (limit is None or pend[0][1] < limit):
                _, q, _, text, scen, ep = pend.popleft()
                put(text.encode("utf-8"), scen, ep, ((EPOCH + dt.timedelta(seconds=q // unit)).date() - first).days)

        cur = 0
        for ln in lines:
            if ln.seg != cur:
                flush(cur, None)
                cur = ln.seg
            if ln.q is not None:
                flush(ln.seg, ln.key)
            put(ln.raw, "normal", "", (ln.date - first).days)
        flush(cur, None)
    n = per_scen[""]
    with open(os.path.join(args.out, "split.json"), "w") as f:
        sh = abs(prof.utc_shift)
        zone = None if prof.iso else f"{'-' if prof.utc_shift < 0 else '+'}{sh // 3600:02d}:{sh % 3600 // 60:02d}"
        json.dump({"train_days": b, "first_day": first.isoformat(), "test_first_day": str(first + dt.timedelta(days=b)),
                   "last_day": str(max(ln.date for ln in lines)), "year": year, "zone": zone, "seed": args.seed,
                   "log": os.path.basename(args.log),
                   "profile": {k: getattr(prof, k) for k in ("host", "postscreen", "counters", "sasl_prog", "filter", "local",
                                                             "domains", "users", "sasl_users", "myorigin", "long_qid")}},
                  f, indent=1)
        f.write("\n")
    print(f"inject: {n} lines ({len(lines)} real, {n - len(lines)} injected, {inj.dropped} dropped past segment ends) "
          f"in {args.out}; host {prof.host}; train_days={b} ({frac:.0%} of the real lines; day 0 = {first}); episodes: "
          + " ".join(f"{k}={inj.episodes[k]}" for k in SCENARIOS) + "; lines: "
          + " ".join(f"{k}={per_scen[k]}" for k in ["normal"] + SCENARIOS), file=sys.stderr)
    print(b)


if __name__ == "__main__":
    main()
