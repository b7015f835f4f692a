#!/usr/bin/env python3
"""Labelled mail-traffic simulator for the anomaly-detection benchmark.

    tests/traffic/simulate.py [--days 21] [--train-days 14] [--users 40] [--seed 1] --out DIR

Writes DIR/traffic.log and DIR/labels.csv for one small domain, example.org,
served by mx1 (Postfix with postscreen, a submission service, Dovecot IMAP and
LMTP, Roundcube webmail), starting on Monday 2026-03-02 00:00 UTC.

traffic.log
    One file in time order (a stable sort of every generated line by its
    timestamp) mixing syslog lines in rsyslog's RFC 3339 format
    (`2026-03-02T08:15:03.123456+00:00 mx1 postfix/smtpd[1234]: ...`, Dovecot as
    `dovecot: ...`) and Roundcube's own `[02-Mar-2026 08:15:03 +0000]: <sess> ...`
    lines (logins, failed logins, sent mail). The line templates are those of
    pipelines/sample/generate.py, extended; all of them are recognised by pf-parse.
    Dovecot runs with auth_verbose, so every refused password also gives an
    `auth: passwd-file(user,ip,<session>): Password mismatch|unknown user` line.
    Lines that would fall after the last day are dropped (as in a rotated log).

labels.csv
    `line,scenario,episode,day,noise`: one row per line of traffic.log, in order
    (line numbers are 1-based). `scenario` is `normal` or an attack name,
    `episode` is `<scenario>-<n>` for attack lines and empty otherwise, `day` is
    the 0-based day of the line's timestamp, `noise` names the kind of benign
    oddity a normal line belongs to (empty for plain traffic and attacks).

Normal traffic: habits
    `--users` mailboxes. Each user has a home IP (with reverse DNS at a
    fictitious ISP, or none), shares one of three office NAT addresses, may have
    a phone whose addresses come from a carrier /24, works a personal window
    (about 07-19 on weekdays, with a personal peak; sometimes from home),
    is rarely active at weekends, and a few leave a desktop client running all
    night. Users have 5-25 regular correspondents at 15 partner domains (12
    companies with their own MX and outbound hosts, plus three freemail
    providers) and a few colleagues; four mailboxes are also reached through
    role aliases (info@, sales@, office@, support@).
    Per user and day: IMAP logins and logouts from the desktop client (every
    10-40 minutes, often two connections), from the phone (mobile range, home
    or office Wi-Fi), webmail sessions for webmail users (Roundcube login plus
    its IMAP logins from 127.0.0.1), 0-30 messages sent through submission
    with SASL (client, cleanup, qmgr, smtp/lmtp delivery per recipient,
    removed; 1-5 recipients, mostly correspondents, the rest colleagues) from
    the client, the phone or webmail, and inbound mail from correspondents,
    newsletters and notification systems (postscreen, smtpd, cleanup, qmgr,
    lmtp + Dovecot "saved mail", removed), all diurnal and quieter at weekends.
    System traffic: cron mail (pickup uid=0, a developer's crontab), website
    contact-form mail from www-data, weekly certificate reloads (postfix-script
    + master reload), postscreen cache clean-ups, anvil statistics every ten
    minutes naming the busiest client.

Normal traffic: noise (labelled normal, `noise` column set)
    mistyped_password   1-3 failures then success from the user's usual IP,
                        over SASL, IMAP or webmail
    greylisting         a new sender's 450 Greylisted reject, retried 5-30 min later
    rbl_reject          spam bots rejected by smtpd (554 ... blocked using
                        zen.spamhaus.org, sometimes after a "hostname ... does
                        not resolve" warning) or by postscreen's DNSBL, day and night
    bounce_mistyped_recipient  a user's typo bounced: bounced delivery,
                        bounce notification and the DSN delivered back
    slow_partner        one partner's MX times out for a few hours now and then:
                        deferred deliveries retried until sent
    scanner             internet scanners: connect and leave, a TLS error,
                        an IMAP connection without auth, or 1-2 SASL/IMAP tries
    pregreet, hangup    postscreen PREGREET / HANGUP from bots
    unknown_recipient   a correspondent's typo or a stale address, or a spam
                        bot's single guess: 550 5.1.1 User unknown, 1-2 RCPTs
    relay_attempt       a scanner's single relay test: 454 Relay access denied
    newsletter          a user mails 30-50 recipients at once
    travel_login        a user's day on the road: logins and sending from a
                        hotel/foreign address never seen before

Attacks (only on days >= --train-days; 8-12 episodes per scenario, spread over
the attack days at random hours, varied intensity; every attacker address
comes from 185/8, 45/8 or 91/8 (backscatter MTAs from 193-195/8 and 5/8,
spam-recipient MX hosts from 64-99/8), ranges normal traffic never uses, and
is new for each episode)
    sasl_brute_force      submission sessions with 1-3 SASL failures each,
                          40-400 attempts in 10-60 min, 1-3 target accounts
                          (visible only in Dovecot's auth lines)
    password_spraying     one IMAP or webmail attempt every 4-20 min for 6-24 h,
                          a different user name each time
    compromised_account   SASL login with a stolen password from a new address
                          (sometimes webmail/IMAP first), 100-800 spam messages
                          in 1-3 h to 1-10 random external recipients each:
                          bounced, deferred, DSNs back to the user; sometimes
                          the admin purges the queue and the bot keeps failing
    directory_harvest     port 25 RCPT guessing, 50-500 guesses in 5-40 min
    open_relay_probe      5-40 relay attempts (454 Relay access denied), now and
                          then a non-SMTP command or improper pipelining
    backscatter           100-1000 bounces from=<> in 30-120 min from many MTAs,
                          accepted for real users, 550 User unknown otherwise
    webmail_credential_stuffing  Roundcube failed logins with leaked-list
                          user names from 1-3 addresses, 0-2 successes
    imap_brute_force      50-500 IMAP password failures for 1-3 real users
    runaway_script        300-3000 locally submitted messages (pickup) in
                          20-90 min from www-data or a user's crontab
    daemon_errors         1-5 lines of Postfix fatal/panic/error/warning

Deterministic for a given seed: one random.Random(seed), no clock, no hash()
of strings, no iteration over sets. Standard library only.
"""
import argparse
import base64
import datetime as dt
import math
import os
import sys
from collections import Counter
from contextlib import contextmanager
import random

DOMAIN = "example.org"
HOST = "mx1"
FQDN = "mx1.example.org"
SERVER_IP = "192.0.2.10"
START = dt.datetime(2026, 3, 2, tzinfo=dt.timezone.utc)  # a Monday
DAY = 86400.0
LMTP_RELAY = f"{FQDN}[private/dovecot-lmtp]"
POSTFIX_VERSION = "3.7.11"
TLS_IN = ("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
          "server-signature RSA-PSS (2048 bits) server-digest SHA256")
TLS_IN_12 = "TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)"
TLS_OUT = ("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
           "server-signature RSA-PSS (2048 bits) server-digest SHA256")

NORMAL = ("normal", "", "")
ATTACKS = ["sasl_brute_force", "password_spraying", "compromised_account", "directory_harvest",
           "open_relay_probe", "backscatter", "webmail_credential_stuffing", "imap_brute_force",
           "runaway_script", "daemon_errors"]

# First octets by role. Normal traffic and attacks never share one.
HOME_OCTETS = [84, 88, 93, 79, 62, 217, 87, 95]
OFFICE_OCTETS = [213]
MOBILE_OCTETS = [37, 176, 109]
TRAVEL_OCTETS = [151, 2, 78, 82, 90]
PARTNER_OCTETS = [212, 81, 46]
SPAM_OCTETS = [36, 103, 113, 117, 177, 190, 14, 27]
SCANNER_NETS = ["162.142.125", "167.94.138", "167.94.146", "71.6.199", "80.82.77", "152.32.128",
                "147.185.132", "80.94.95"]
ATTACK_OCTETS = [185, 45, 91]
BACKSCATTER_OCTETS = [193, 194, 195, 5]
VICTIM_MX_OCTETS = [64, 66, 67, 69, 72, 74, 98, 99]
_normal = set(HOME_OCTETS + OFFICE_OCTETS + MOBILE_OCTETS + TRAVEL_OCTETS + PARTNER_OCTETS + SPAM_OCTETS
              + [int(n.split(".")[0]) for n in SCANNER_NETS] + [198, 203, 142, 209, 52, 40, 127, 192])
assert not _normal & set(ATTACK_OCTETS + BACKSCATTER_OCTETS + VICTIM_MX_OCTETS)

FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
         "laura", "mike", "nina", "oscar", "paula", "quentin", "rita", "sam", "tina", "uwe", "vera",
         "walter", "xenia", "yann", "zoe", "anna", "ben", "clara", "david", "eva", "felix", "greta",
         "hugo", "ida", "jonas", "kim", "lena", "max", "nora", "otto", "pia", "ralf", "sara", "tom",
         "ute", "viktor", "wanda", "jan", "lisa", "marc", "julia", "peter", "sofia", "lukas", "emma",
         "paul", "mia", "leon", "hanna"]
LAST = ["mueller", "schmidt", "schneider", "fischer", "weber", "meyer", "wagner", "becker", "schulz",
        "hoffmann", "koch", "richter", "klein", "wolf", "neumann", "schwarz", "braun", "hofmann",
        "smith", "jones", "brown", "taylor", "wilson", "martin", "bernard", "dubois", "rossi", "russo",
        "garcia", "lopez", "novak", "kowalski", "jansen", "peeters", "berger", "huber", "bauer"]
PARTNERS = ["northwind-traders", "alpenbau", "kestrel-logistics", "bluefin-legal", "oakridge-consulting",
            "meridian-bank", "fabrik-hoffmann", "polaris-it", "stadtwerke-muehlheim", "verde-foods",
            "atlas-insurance", "helix-labs"]
ISPS = ["dyn.citynet.example", "dip0.telnet.example", "pools.arcor-dsl.example", "cust.kabelplus.example",
        "adsl.fibernet.example"]
NEWSLETTERS = [("news.shopwelt.example", "newsletter", 7), ("mailer.taskboard.example", "notifications", None),
               ("lists.opensource.example", "devel-bounces", None), ("alerts.monitoring.example", "alerts", None),
               ("mail.fachverlag.example", "redaktion", 6), ("billing.cloudhost.example", "billing", 3)]
FREEMAIL = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "web.de", "gmx.de", "mail.ru",
            "yandex.ru", "icloud.com", "free.fr", "orange.fr", "libero.it", "gmx.net", "t-online.de"]
WORDS = ["solar", "green", "blue", "prime", "smart", "global", "alpha", "nova", "city", "star", "euro",
         "tech", "home", "shop", "direct", "best", "mega", "royal", "united", "pacific", "metro", "vital",
         "digital", "trade", "media", "group", "world", "net", "web", "cloud", "data", "sun", "river"]
TLDS = ["com", "net", "org", "de", "fr", "it", "co.uk", "com.br", "nl", "pl", "es", "ru", "info", "biz"]
SPRAY_NAMES = ["admin", "info", "test", "sales", "office", "support", "contact", "webmaster", "postmaster",
               "hr", "billing", "marketing", "user", "mail", "noreply", "service", "help", "accounting",
               "finance", "jobs", "root", "guest", "demo", "backup", "scanner", "reception", "team",
               "manager", "director", "it", "security", "abuse", "newsletter", "shop", "orders", "careers"]
BOT_HELOS = ["ylmf-pc", "User", "localhost", "WIN-CLJ1B0GQ6JP", "mail.example.com", "windows",
             "smtp.gmail.com", "unknown"]
ALIASES = ["info", "sales", "office", "support"]
SLOW_PARTNER = 3  # index into the partner list: the partner whose MX times out now and then

DOVECOT_SCHEME = "passwd-file"


def fmt_delay(x):
    if x >= 10:
        return str(int(x))
    if x < 0.005:
        return "0"
    return "%.2g" % x


def counters(items):
    """smtpd's disconnect counters: items are (name, ok, total)."""
    parts, ok_sum, tot_sum = [], 0, 0
    for name, ok, tot in items:
        if tot == 0:
            continue
        parts.append(f"{name}={ok}" if ok == tot else f"{name}={ok}/{tot}")
        ok_sum += ok
        tot_sum += tot
    parts.append(f"commands={ok_sum}" if ok_sum == tot_sum else f"commands={ok_sum}/{tot_sum}")
    return " ".join(parts)


class User:
    pass


class Sim:
    def __init__(self, days, train_days, n_users, seed):
        self.rng = random.Random(seed)
        self.days = days
        self.train_days = train_days
        self.end = days * DAY
        self.lines = []          # (microseconds, is_roundcube, text, label)
        self.label = NORMAL
        self.pools = {}
        self.connects = []       # (t, anvil service, ip, label) for the anvil statistics
        self.used_ips = set()
        self.mx_cache = {}
        self.episodes = Counter()
        self.build_world(n_users)

    # ---------------------------------------------------------------- output
    def emit(self, t, text):
        self.lines.append((int(t * 1e6), 0, text, self.label))

    def rc(self, t, session, text):
        self.lines.append((int(t * 1e6), 1, f"<{session[:8]}> {text}", self.label))

    @contextmanager
    def labelled(self, label):
        old = self.label
        self.label = label
        try:
            yield
        finally:
            self.label = old

    def noise(self, name):
        return self.labelled(("normal", "", name))

    # ---------------------------------------------------------------- ids
    def u(self, a, b):
        return self.rng.uniform(a, b)

    def qid(self):
        return "%010X" % self.rng.getrandbits(40)

    def dsess(self):
        return base64.b64encode(self.rng.getrandbits(96).to_bytes(12, "big")).decode()

    def rcsess(self):
        return "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(26))

    def pid(self, daemon, t, size=4, bucket=600):
        """Short-lived daemon processes: a few pids per daemon per ten minutes, growing over time."""
        b = int(t // bucket)
        key = (daemon, b)
        pool = self.pools.get(key)
        if pool is None:
            base = 3000 + int(t // 600) * 97
            pool = [base + self.rng.randint(0, 96) for _ in range(size)]
            self.pools[key] = pool
        return self.rng.choice(pool)

    def long_pid(self, daemon, t):
        """Long-lived processes (qmgr, pickup, postscreen, anvil): new pid at each reload."""
        epoch = sum(1 for r in self.reloads if r <= t)
        key = (daemon, "epoch", epoch)
        p = self.pools.get(key)
        if p is None:
            base = 1100 + (int(self.reloads[epoch - 1] // 600) * 97 if epoch else 0)
            p = base + self.rng.randint(0, 90)
            self.pools[key] = p
        return p

    def new_ip(self, octets=None, net=None):
        while True:
            if net:
                ip = f"{net}.{self.rng.randint(2, 254)}"
            else:
                ip = f"{self.rng.choice(octets)}.{self.rng.randint(1, 254)}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"
            if ip not in self.used_ips:
                self.used_ips.add(ip)
                return ip

    def rdns(self, ip, isp=None):
        a, b, c, d = ip.split(".")
        isp = isp or self.rng.choice(ISPS)
        if isp.startswith("dip0"):
            return "p%02X%02X%02X%02X.%s" % (int(a), int(b), int(c), int(d), isp)
        if isp.startswith("pools"):
            return f"dslb-{int(a):03d}-{int(b):03d}-{int(c):03d}-{int(d):03d}.{isp}"
        return f"{a}-{b}-{c}-{d}.{isp}"

    def msgid(self, style, domain=DOMAIN, t=0.0, qid=None):
        r = self.rng
        if style == "thunderbird":
            h = "%032x" % r.getrandbits(128)
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}@{domain}"
        if style == "outlook":
            return "%s%06dB%s@%s.eurprd04.prod.outlook.com" % (
                r.choice(["AM0PR04MB", "DB9PR04MB", "PAXPR04MB"]), r.randint(0, 999999),
                "%08X" % r.getrandbits(32), r.choice(["AM0PR04MB", "DB9PR04MB"]) + str(r.randint(1000, 9999)))
        if style == "apple":
            h = "%032X" % r.getrandbits(128)
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}@{domain}"
        if style == "roundcube":
            return "%032x@%s" % (r.getrandbits(128), domain)
        if style == "gmail":
            return "CA+%s@mail.gmail.com" % base64.b64encode(r.getrandbits(240).to_bytes(30, "big")).decode()
        if style == "postfix":
            return "%s.%s@%s" % (self.stamp(t), qid, FQDN)
        return "%x.%x@%s" % (r.getrandbits(48), r.getrandbits(32), domain)

    def stamp(self, t):
        d = START + dt.timedelta(seconds=t)
        return d.strftime("%Y%m%d%H%M%S")

    def anvil_at(self, t):
        d = START + dt.timedelta(seconds=t)
        return "%s %2d %s" % (d.strftime("%b"), d.day, d.strftime("%H:%M:%S"))

    def size(self, mu=9.6, sigma=1.3):
        return max(600, min(25_000_000, int(self.rng.lognormvariate(mu, sigma))))

    def poisson(self, lam):
        if lam <= 0:
            return 0
        if lam > 30:
            return max(0, int(round(self.rng.gauss(lam, math.sqrt(lam)))))
        limit, k, p = math.exp(-lam), 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    # ---------------------------------------------------------------- world
    def build_world(self, n):
        rng = self.rng
        names = []
        for i in range(n):
            if i < len(FIRST):
                names.append(FIRST[i])
            else:
                while True:
                    cand = f"{rng.choice(FIRST)}.{rng.choice(LAST)}"
                    if cand not in names:
                        names.append(cand)
                        break
        self.offices = []
        for i in range(3):
            ip = self.new_ip(OFFICE_OCTETS)
            self.offices.append((f"gw{i + 1}.office.{DOMAIN}" if i < 2 else self.rdns(ip, "business.citynet.example"), ip))
        # partners: (domain, mx host, mx ip, outbound hosts/ips, reply style)
        self.partners = []
        for i, name in enumerate(PARTNERS):
            dom = f"{name}.example"
            mx_ip = self.new_ip(PARTNER_OCTETS)
            out = [(f"mail.{dom}", mx_ip)] if rng.random() < 0.5 else [
                (f"out{k}.{dom}", self.new_ip(PARTNER_OCTETS)) for k in range(1, rng.randint(2, 3))]
            style = rng.choice(["postfix", "postfix", "exchange", "exim"])
            self.partners.append({"domain": dom, "mx": f"mx.{dom}" if i % 2 else f"mail.{dom}",
                                  "mx_ip": mx_ip, "out": out, "style": style})
        self.partners.append({"domain": "gmail.com", "mx": "gmail-smtp-in.l.google.com",
                              "mx_ip": "142.250.27.27", "style": "gmail",
                              "out": [(f"mail-{p}-f{k}.google.com", f"209.85.{o}.{k}")
                                      for p, o, k in (("wr1", 221, 41), ("wm1", 128, 51), ("ej1", 218, 42),
                                                      ("lf1", 167, 44))]})
        self.partners.append({"domain": "outlook.com", "mx": "outlook-com.olc.protection.outlook.com",
                              "mx_ip": "52.101.68.16", "style": "outlook",
                              "out": [(f"mail-{p}.outbound.protection.outlook.com", f"40.92.{a}.{b}")
                                      for p, a, b in (("am6eur05olkn2041", 91, 41), ("db8eur05olkn2012", 89, 12),
                                                      ("vi1eur04olkn2055", 75, 55))]})
        self.partners.append({"domain": "gmx.de", "mx": "mx00.emig.gmx.net", "mx_ip": "212.227.15.9",
                              "style": "postfix", "out": [("mout.gmx.net", "212.227.17.22"),
                                                          ("mout.gmx.net", "212.227.17.20")]})
        for p in self.partners:
            self.mx_cache[p["domain"]] = (p["mx"], p["mx_ip"], p["style"])
            self.used_ips.add(p["mx_ip"])
        self.newsletters = []
        for host, local, hour in NEWSLETTERS:
            ip = self.new_ip([198, 203] + PARTNER_OCTETS)
            self.newsletters.append({"host": host, "ip": ip, "local": local, "hour": hour,
                                     "domain": host.split(".", 1)[1]})
        # occasional, previously unseen senders (greylisted first)
        self.occasional = []
        for _ in range(40):
            dom = f"{rng.choice(WORDS)}{rng.choice(WORDS)}.example"
            ip = self.new_ip(PARTNER_OCTETS + [217])
            self.occasional.append((dom, f"mail.{dom}", ip))

        self.users = []
        for i, name in enumerate(names):
            u = User()
            u.i = i
            u.name = name
            u.addr = f"{name}@{DOMAIN}"
            u.id = i + 1
            u.home_ip = self.new_ip(HOME_OCTETS)
            u.home_host = "unknown" if rng.random() < 0.2 else self.rdns(u.home_ip)
            u.office = rng.choices([0, 1, 2], [0.6, 0.3, 0.1])[0]
            u.mobile = None
            if rng.random() < 0.45:
                u.mobile = f"{rng.choice(MOBILE_OCTETS)}.{rng.randint(1, 254)}.{rng.randint(0, 255)}"
            u.desktop = rng.random() < 0.85
            u.webmail = (not u.desktop) or rng.random() < 0.25
            u.send_rate = max(0.3, min(30.0, rng.lognormvariate(1.5, 0.85)))
            u.in_rate = u.send_rate * 0.8 + rng.uniform(2, 7)
            u.start = min(10.0, max(6.5, rng.gauss(8.0, 0.6)))
            u.end = u.start + min(11.0, max(6.0, rng.gauss(9.0, 0.8)))
            u.peak = rng.uniform(u.start + 1, u.end - 1)
            u.weekend = rng.choice([0.03, 0.08, 0.15, 0.25, 0.4])
            u.always_on = rng.random() < 0.12
            u.remote = rng.uniform(0.05, 0.35)
            u.reconnect = rng.uniform(12, 40)
            u.mistype = rng.uniform(0.01, 0.06)
            u.client = rng.choice(["thunderbird", "thunderbird", "outlook", "apple"])
            u.corr = []
            for _ in range(rng.randint(5, 25)):
                p = rng.choices(self.partners, [1.0] * 12 + [1.6, 0.8, 0.6])[0]
                if p["domain"] in ("gmail.com", "outlook.com", "gmx.de"):
                    local = f"{rng.choice(FIRST)}.{rng.choice(LAST)}{rng.choice(['', str(rng.randint(1, 99))])}"
                else:
                    local = rng.choice([f"{rng.choice(FIRST)}.{rng.choice(LAST)}", rng.choice(FIRST),
                                        rng.choice(["orders", "office", "info", "accounts", "support"])])
                addr = f"{local}@{p['domain']}"
                if addr not in u.corr:
                    u.corr.append(addr)
            self.users.append(u)
        for u in self.users:
            others = [v for v in self.users if v is not u]
            u.colleagues = rng.sample(others, min(len(others), rng.randint(2, 8)))
        self.alias_of = {}
        for k, a in enumerate(ALIASES):
            self.alias_of[a] = self.users[k % len(self.users)]
        self.user_by_addr = {u.addr: u for u in self.users}
        self.corr_all = set(a for u in self.users for a in u.corr)
        # two developers with shell accounts and a crontab that mails them
        self.shell_users = self.users[-2:]
        for k, u in enumerate(self.shell_users):
            u.uid = 1001 + k
            u.login = u.name.split(".")[0]
        # weekly certificate renewal reloads, the slow partner's outages
        self.reloads = []
        for d in range(2 + rng.randint(0, 3), self.days, 7):
            self.reloads.append(d * DAY + rng.uniform(1.5, 5.5) * 3600)
        self.outages = []
        for _ in range(max(1, self.days // 2)):
            s = rng.uniform(0, self.end - 6 * 3600)
            self.outages.append((s, s + rng.uniform(1, 5) * 3600))

    def relay_for(self, domain):
        v = self.mx_cache.get(domain)
        if v is None:
            r = self.rng
            host = r.choice(["mx1", "mx", "mail", "smtp", "mx01", "mail1"]) + "." + domain
            v = (host, self.new_ip(VICTIM_MX_OCTETS), r.choice(["postfix", "exim", "exchange"]))
            self.mx_cache[domain] = v
        return v

    def random_domain(self):
        r = self.rng
        return f"{r.choice(WORDS)}{r.choice(WORDS)}{r.choice(['', str(r.randint(1, 99))])}.{r.choice(TLDS)}"

    def random_person(self, domain=None):
        r = self.rng
        f, l = r.choice(FIRST), r.choice(LAST)
        local = r.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}{l}{r.randint(1, 99)}", f"{f}_{l}", f"{l}.{f}",
                          f"{f}{r.randint(1960, 2005)}"])
        return f"{local}@{domain or r.choice(FREEMAIL)}"

    # ---------------------------------------------------------------- building blocks
    def postscreen(self, t, ip, new=False):
        pid = self.long_pid("postscreen", t)
        port = self.rng.randint(1024, 65535)
        self.emit(t, f"postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to [{SERVER_IP}]:25")
        if new:
            t += self.u(6.0, 6.3)
            self.emit(t, f"postfix/postscreen[{pid}]: PASS NEW [{ip}]:{port}")
        else:
            t += self.u(0.001, 0.01)
            self.emit(t, f"postfix/postscreen[{pid}]: PASS OLD [{ip}]:{port}")
        return t + self.u(0.001, 0.02)

    def connect(self, t, svc, host, ip, pid):
        self.emit(t, f"postfix/{svc}[{pid}]: connect from {host}[{ip}]")
        self.connects.append((t, "smtp" if svc == "smtpd" else "submission", ip, self.label))

    def remote_ok(self, style, qid_like=None):
        r = self.rng
        if style == "gmail":
            return "250 2.0.0 OK  %d %s.%d - gsmtp" % (1772400000 + r.randint(0, 2000000),
                                                     "%x" % r.getrandbits(60), r.randint(1, 600))
        if style == "outlook":
            return "250 2.6.0 <%x@%s> [InternalId=%d, Hostname=AM8P190MB%04d.EURP190.PROD.OUTLOOK.COM] %d bytes in 0.%03d, %d.%03d KB/sec Queued mail for delivery" % (
                r.getrandbits(48), DOMAIN, r.getrandbits(44), r.randint(0, 9999), r.randint(2000, 90000),
                r.randint(1, 999), r.randint(10, 900), r.randint(0, 999))
        if style == "exchange":
            return "250 2.6.0 <%x@%s> Queued mail for delivery" % (r.getrandbits(48), DOMAIN)
        if style == "exim":
            return "250 OK id=1v%s-00%s-%s" % (
                base64.b64encode(r.getrandbits(24).to_bytes(3, "big")).decode().replace("/", "x"),
                "%04X" % r.getrandbits(16), "%02d" % r.randint(1, 99))
        return "250 2.0.0 Ok: queued as %s" % ("%011X" % r.getrandbits(44))

    def delays(self, before=(0.01, 0.6), qmgr=(0, 0.02), conn=(0.05, 0.6), xfer=(0.05, 1.5)):
        a, b, c, d = (self.u(*before), self.u(*qmgr), self.u(*conn), self.u(*xfer))
        return f"delay={fmt_delay(a + b + c + d)}, delays={fmt_delay(a)}/{fmt_delay(b)}/{fmt_delay(c)}/{fmt_delay(d)}", a + b + c + d

    def local_delivery(self, t, qid, rcpt, msgid):
        """lmtp into Dovecot (virtual mailbox, maybe through an alias) or local(8) for mx1 accounts."""
        local, _, dom = rcpt.partition("@")
        if dom == FQDN:
            d, took = self.delays(conn=(0, 0.01), xfer=(0.001, 0.03))
            orig = f", orig_to=<{local}>" if local == "root" and self.rng.random() < 0.5 else ""
            self.emit(t + took, f"postfix/local[{self.pid('local', t, 2)}]: {qid}: to=<{rcpt}>{orig}, relay=local, {d}, dsn=2.0.0, status=sent (delivered to mailbox)")
            return t + took
        orig = ""
        to = rcpt
        if local in self.alias_of:
            to = self.alias_of[local].addr
            orig = f", orig_to=<{rcpt}>"
        lpid = self.pid("lmtp", t, 2)
        d, took = self.delays(conn=(0, 0.01), xfer=(0.01, 0.15))
        sess = self.dsess()
        self.emit(t + took * 0.8, f"dovecot: lmtp({to})<{self.pid('dlmtp', t, 2)}><{sess}>: msgid=<{msgid}>: saved mail to INBOX")
        self.emit(t + took, f"postfix/lmtp[{lpid}]: {qid}: to=<{to}>{orig}, relay={LMTP_RELAY}, {d}, dsn=2.0.0, status=sent (250 2.0.0 <{to}> {sess} Saved)")
        return t + took

    def external_attempt(self, t, qid, rcpt, outcome, pid, tls):
        dom = rcpt.split("@", 1)[1]
        mx, ip, style = self.relay_for(dom)
        r = self.rng
        if outcome == "defer_timeout":
            self.emit(t + 30, f"postfix/smtp[{pid}]: connect to {mx}[{ip}]:25: Connection timed out")
            d = self.u(0.01, 0.2)
            self.emit(t + 30.01, f"postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay=none, delay={fmt_delay(d + 30)}, delays={fmt_delay(d)}/0/30/0, dsn=4.4.1, status=deferred (connect to {mx}[{ip}]:25: Connection timed out)")
            return t + 30.01
        if outcome == "bounce_nohost":
            d = self.u(0.01, 0.3)
            self.emit(t + d, f"postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, relay=none, delay={fmt_delay(d)}, delays={fmt_delay(d)}/0/0/0, dsn=5.4.4, status=bounced (Host or domain name not found. Name service error for name={dom} type=MX: Host not found, try again)")
            return t + d
        if tls:
            self.emit(t + self.u(0.05, 0.3), f"postfix/smtp[{pid}]: Trusted TLS connection established to {mx}[{ip}]:25: {TLS_OUT}")
        d, took = self.delays()
        relay = f"relay={mx}[{ip}]:25, {d}"
        if outcome == "sent":
            line = f"dsn=2.0.0, status=sent ({self.remote_ok(style)})"
        elif outcome == "bounce_unknown":
            if style == "gmail":
                why = (f"550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 "
                       f"double-checking the recipient's email address for typos or 550-5.1.1 unnecessary spaces. "
                       f"For more information, go to 550 5.1.1  https://support.google.com/mail/?p=NoSuchUser {r.getrandbits(40):x}.{r.randint(1, 500)} - gsmtp")
            elif style == "exchange":
                why = f"550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {rcpt} not found by SMTP address lookup"
            else:
                why = f"550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table"
            line = f"dsn=5.1.1, status=bounced (host {mx}[{ip}] said: {why} (in reply to RCPT TO command))"
        elif outcome == "bounce_spam":
            line = f"dsn=5.7.1, status=bounced (host {mx}[{ip}] said: 554 5.7.1 Message rejected as spam by content filter (in reply to end of DATA command))"
        elif outcome == "defer_grey":
            line = f"dsn=4.2.0, status=deferred (host {mx}[{ip}] said: 450 4.2.0 <{rcpt}>: Recipient address rejected: Greylisted for 300 seconds (in reply to RCPT TO command))"
        elif outcome == "defer_rate":
            line = (f"dsn=4.7.0, status=deferred (host {mx}[{ip}] said: 421 4.7.0 [{SERVER_IP}] Messages from {SERVER_IP} "
                    f"temporarily deferred due to unexpected volume or user complaints (in reply to MAIL FROM command))")
        else:  # defer_busy
            line = f"dsn=4.3.0, status=deferred (host {mx}[{ip}] said: 451 4.3.0 Temporary local problem - please try later (in reply to end of DATA command))"
        self.emit(t + took, f"postfix/smtp[{pid}]: {qid}: to=<{rcpt}>, {relay}, {line}")
        return t + took

    def deliver(self, t, qid, sender, size, rcpts, msgid, plans=None, dsn=True):
        """cleanup + qmgr + every recipient's delivery (with retries) + DSN + removed. Returns end time."""
        rng = self.rng
        self.emit(t, f"postfix/cleanup[{self.pid('cleanup', t, 3)}]: {qid}: message-id=<{msgid}>")
        t += self.u(0.002, 0.03)
        qm = self.long_pid("qmgr", t)
        self.emit(t, f"postfix/qmgr[{qm}]: {qid}: from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)")
        plans = plans or {}
        pending = list(rcpts)
        bounced = []
        rnd = 0
        end = t
        start = t
        while pending:
            if rnd:
                t = start + [0, 300, 900, 2100, 4500, 8500, 12500, 16500, 20500, 24500, 28500][min(rnd, 10)] + self.u(0, 120)
                qm = self.long_pid("qmgr", t)
                self.emit(t, f"postfix/qmgr[{qm}]: {qid}: from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)")
            nxt = []
            bydom = {}
            for r in pending:
                bydom.setdefault(r.split("@", 1)[1], []).append(r)
            for dom, group in bydom.items():
                ts = t + self.u(0.01, 0.3)
                if dom == DOMAIN or dom == FQDN:
                    for r in group:
                        ts = self.local_delivery(ts, qid, r, msgid)
                        end = max(end, ts)
                    continue
                spid = self.pid("smtp", ts, 6)
                tls = rng.random() < 0.6
                for r in group:
                    plan = plans.get(r, ["sent"])
                    outcome = plan[min(rnd, len(plan) - 1)]
                    ts = self.external_attempt(ts, qid, r, outcome, spid, tls)
                    tls = False
                    end = max(end, ts)
                    if outcome.startswith("defer") and rnd < 10:
                        nxt.append(r)
                    elif outcome.startswith("bounce"):
                        bounced.append(r)
            pending = nxt
            rnd += 1
        t = end + self.u(0.001, 0.05)
        if bounced and sender and dsn:
            t = self.send_dsn(t, qid, sender)
        self.emit(t, f"postfix/qmgr[{self.long_pid('qmgr', t)}]: {qid}: removed")
        return t

    def send_dsn(self, t, qid, to):
        q2 = self.qid()
        self.emit(t, f"postfix/bounce[{self.pid('bounce', t, 1)}]: {qid}: sender non-delivery notification: {q2}")
        t += self.u(0.001, 0.02)
        self.emit(t, f"postfix/cleanup[{self.pid('cleanup', t, 3)}]: {q2}: message-id=<{self.msgid('postfix', t=t, qid=q2)}>")
        qm = self.long_pid("qmgr", t)
        self.emit(t + 0.001, f"postfix/qmgr[{qm}]: {q2}: from=<>, size={self.rng.randint(2400, 9000)}, nrcpt=1 (queue active)")
        dom = to.split("@", 1)[1]
        if dom in (DOMAIN, FQDN):
            t2 = self.local_delivery(t + 0.01, q2, to, f"{self.stamp(t)}.{q2}@{FQDN}")
        else:
            t2 = self.external_attempt(t + 0.01, q2, to, "sent", self.pid("smtp", t, 6), False)
        self.emit(t2 + 0.001, f"postfix/qmgr[{self.long_pid('qmgr', t2)}]: {q2}: removed")
        return t

    def submission(self, t, host, ip, login, messages, fails=0, tls=True, dovecot_ip=None):
        """A submission session. messages: list of (sender, rcpts, size, msgid, plans). Returns end time."""
        rng = self.rng
        pid = self.pid("submission/smtpd", t, 3)
        self.connect(t, "submission/smtpd", host, ip, pid)
        t += self.u(0.05, 0.3)
        if tls:
            self.emit(t, f"postfix/submission/smtpd[{pid}]: Anonymous TLS connection established from {host}[{ip}]: {TLS_IN}")
        for _ in range(fails):
            t += self.u(0.3, 1.5)
            self.dovecot_auth_fail(t, login, dovecot_ip or ip, real=True)
            t += self.u(0.01, 0.05)
            self.emit(t, f"postfix/submission/smtpd[{pid}]: warning: {host}[{ip}]: SASL PLAIN authentication failed: ")
            t += self.u(2, 9)  # the client asks the user again
        t += self.u(0.05, 0.3)
        ends = []
        nrc = 0
        for sender, rcpts, size, msgid, plans in messages:
            qid = self.qid()
            self.emit(t, f"postfix/submission/smtpd[{pid}]: {qid}: client={host}[{ip}], sasl_method=PLAIN, sasl_username={login}")
            t += self.u(0.05, 0.4) + size / 4e6
            ends.append(self.deliver(t, qid, sender, size, rcpts, msgid, plans))
            nrc += len(rcpts)
            t += self.u(0.02, 0.3)
        m = len(messages)
        c = counters([("ehlo", 2 if tls else 1, 2 if tls else 1), ("starttls", 1 if tls else 0, 1 if tls else 0),
                      ("auth", 1 if m or not fails else 0, fails + (1 if m or not fails else 0)),
                      ("mail", m, m), ("rcpt", nrc, nrc), ("data", m, m), ("quit", 1, 1)])
        self.emit(t, f"postfix/submission/smtpd[{pid}]: disconnect from {host}[{ip}] {c}")
        return max([t] + ends)

    def dovecot_auth_fail(self, t, user, ip, real):
        self.emit(t, f"dovecot: auth: {DOVECOT_SCHEME}({user},{ip},<{self.dsess()}>): {'Password mismatch' if real else 'unknown user'}")

    def imap_login(self, t, user, ip, dur, webmail=False):
        mpid = self.pid("imap", t, 12)
        sess = self.dsess()
        lip, sec = ("127.0.0.1", "secured") if webmail else (SERVER_IP, "TLS")
        self.emit(t, f"dovecot: imap-login: Login: user=<{user}>, method=PLAIN, rip={ip}, lip={lip}, mpid={mpid}, {sec}, session=<{sess}>")
        e = t + dur
        r = self.rng
        i, o = r.randint(40, 3000), r.randint(300, 400000)
        tail = f"in={i} out={o} deleted={r.choice([0, 0, 0, 1, 2])} expunged={r.choice([0, 0, 1])} trashed=0 hdr_count={r.randint(0, 40)} hdr_bytes={r.randint(0, 90000)} body_count={r.randint(0, 12)} body_bytes={r.randint(0, 300000)}"
        if webmail or r.random() < 0.6:
            self.emit(e, f"dovecot: imap({user})<{mpid}><{sess}>: Disconnected: Logged out {tail}")
        else:
            self.emit(e, f"dovecot: imap({user})<{mpid}><{sess}>: Disconnected: Connection closed (IDLE running for 0.001 + waiting input for {dur:.3f} secs, 2 B in + 10 B out, state=wait-input) {tail}")

    def imap_fail(self, t, user, ip, attempts=1, real=True, webmail=False, secs=None):
        for k in range(attempts):
            self.dovecot_auth_fail(t + k * self.u(1.5, 4), user, ip, real)
        lip, sec = ("127.0.0.1", "secured") if webmail else (SERVER_IP, "TLS")
        secs = secs if secs is not None else attempts * self.rng.randint(2, 4)
        closed = "Disconnected: Inactivity" if secs >= 60 else self.rng.choice(
            ["Disconnected: Connection closed", "Disconnected: Connection closed", "Disconnected"])
        self.emit(t + secs, f"dovecot: imap-login: {closed} (auth failed, {attempts} attempts in {secs} secs): user=<{user}>, method=PLAIN, rip={ip}, lip={lip}, {sec}, session=<{self.dsess()}>")
        return t + secs

    def webmail_login(self, t, u, ip, dur, sends=()):
        """A Roundcube session: login, IMAP logins from 127.0.0.1 per request, sent mail, all from ip."""
        sess = self.rcsess()
        self.imap_login(t, u.addr, "127.0.0.1", self.u(0.2, 1.5), webmail=True)
        self.rc(t + 0.3, sess, f"Successful login for {u.addr} (ID: {u.id}) from {ip} in session {sess} (error: 0)")
        n = self.rng.randint(2, 8)
        for k in range(n):
            s = t + dur * (k + 1) / (n + 1) + self.u(-30, 30)
            self.imap_login(s, u.addr, "127.0.0.1", self.u(0.1, 2.0), webmail=True)
        for s, rcpts in sends:
            msgid = self.msgid("roundcube")
            end = self.submission(s, "localhost", "127.0.0.1", u.addr,
                                  [(u.addr, rcpts, self.size(), msgid, None)], tls=False)
            self.rc(s + 0.5, sess, f"User {u.addr} [{ip}]; Message <{msgid}> for {', '.join(rcpts)}; 250: 2.0.0 Ok: queued as {self.qid()}")
            self.last_end = end

    def inbound(self, t, host, ip, sender, rcpts, msgid, size, new=False, tls=True):
        t = self.postscreen(t, ip, new)
        pid = self.pid("smtpd", t, 4)
        self.connect(t, "smtpd", host, ip, pid)
        t += self.u(0.05, 0.4)
        if tls:
            self.emit(t, f"postfix/smtpd[{pid}]: {'Anonymous' if self.rng.random() < 0.7 else 'Untrusted'} TLS connection established from {host}[{ip}]: {TLS_IN if self.rng.random() < 0.8 else TLS_IN_12}")
            t += self.u(0.05, 0.3)
        qid = self.qid()
        self.emit(t, f"postfix/smtpd[{pid}]: {qid}: client={host}[{ip}]")
        t += self.u(0.05, 0.5) + size / 5e6
        end = self.deliver(t, qid, sender, size, rcpts, msgid)
        t += self.u(0.02, 0.2)
        c = counters([("ehlo", 2 if tls else 1, 2 if tls else 1), ("starttls", int(tls), int(tls)), ("mail", 1, 1),
                      ("rcpt", len(rcpts), len(rcpts)), ("data", 1, 1), ("quit", 1, 1)])
        self.emit(t, f"postfix/smtpd[{pid}]: disconnect from {host}[{ip}] {c}")
        return max(t, end)

    def reject_session(self, t, host, ip, rejects, helo, proto="ESMTP", new=True, postscreen=True, extra=None,
                       accepted=0, tls=False):
        """A port-25 session whose RCPTs are refused: rejects = list of (reply, from, to)."""
        if postscreen:
            t = self.postscreen(t, ip, new)
        pid = self.pid("smtpd", t, 4)
        self.connect(t, "smtpd", host, ip, pid)
        t += self.u(0.2, 1.0)
        if tls:
            self.emit(t, f"postfix/smtpd[{pid}]: Anonymous TLS connection established from {host}[{ip}]: {TLS_IN}")
        if extra:
            self.emit(t, f"postfix/smtpd[{pid}]: {extra}")
        froms = []
        for reply, frm, to in rejects:
            t += self.u(0.1, 1.5)
            self.emit(t, f"postfix/smtpd[{pid}]: NOQUEUE: reject: RCPT from {host}[{ip}]: {reply}; from=<{frm}> to=<{to}> proto={proto} helo=<{helo}>")
            if frm not in froms:
                froms.append(frm)
        t += self.u(0.1, 1.0)
        n = len(rejects) + accepted
        if not froms and n:
            froms = ["?"]
        hello = "ehlo" if proto == "ESMTP" else "helo"
        c = counters([(hello, 2 if tls else 1, 2 if tls else 1), ("starttls", int(tls), int(tls)),
                      ("mail", len(froms), len(froms)), ("rcpt", accepted, n),
                      ("rset", 1 if len(froms) > 1 else 0, 1 if len(froms) > 1 else 0), ("quit", 1, 1)])
        self.emit(t, f"postfix/smtpd[{pid}]: disconnect from {host}[{ip}] {c}")
        return t

    # ---------------------------------------------------------------- normal: users
    def hour_in(self, u, lo, hi, day0):
        h = min(hi, max(lo, self.rng.gauss(u.peak, (hi - lo) / 3.0)))
        return day0 + h * 3600 + self.u(0, 59)

    def pick_rcpts(self, u, n=None):
        rng = self.rng
        n = n or rng.choices([1, 2, 3, 4, 5], [60, 20, 10, 6, 4])[0]
        out = []
        for _ in range(n):
            if rng.random() < 0.72 or not u.colleagues:
                a = rng.choice(u.corr)
            else:
                a = rng.choice(u.colleagues).addr
            if a not in out:
                out.append(a)
        return out

    def plans_for(self, t, rcpts):
        """Delivery plans: the slow partner's outage, the odd greylisting partner. Returns (plans, slow)."""
        plans = {}
        slow = False
        for r in rcpts:
            dom = r.split("@", 1)[1]
            if dom == self.partners[SLOW_PARTNER]["domain"]:
                for s, e in self.outages:
                    if s <= t < e:
                        offs = [0, 300, 900, 2100, 4500, 8500, 12500, 16500, 20500, 24500]
                        k = next((i for i, o in enumerate(offs) if t + o >= e), len(offs) - 1)
                        plans[r] = ["defer_timeout"] * k + ["sent"]
                        slow = True
            elif dom.endswith(".example") and self.rng.random() < 0.01:
                plans[r] = ["defer_grey", "sent"]
        return plans, slow

    def user_send(self, t, u, ip, host, channel, rcpts=None, mistyped=False):
        rcpts = rcpts or self.pick_rcpts(u)
        plans, slow = self.plans_for(t, rcpts)
        label = self.label
        if mistyped:
            ext = [r for r in rcpts if not r.endswith("@" + DOMAIN)]
            if ext:
                r = ext[0]
                local, dom = r.split("@", 1)
                if len(local) > 3:
                    k = self.rng.randint(0, len(local) - 2)
                    typo = local[:k] + local[k + 1] + local[k] + local[k + 2:]
                else:
                    typo = local + local[-1]
                typo = f"{typo}@{dom}"
                rcpts = [typo if x == r else x for x in rcpts]
                plans[typo] = ["bounce_unknown"]
                label = ("normal", "", "bounce_mistyped_recipient")
        elif slow and self.label == NORMAL:
            label = ("normal", "", "slow_partner")
        with self.labelled(label):
            if channel == "webmail":
                self.webmail_login(t, u, ip, self.u(120, 1500), sends=[(t + self.u(60, 600), rcpts)])
            else:
                style = "apple" if channel == "mobile" else u.client
                self.submission(t, host, ip, u.addr, [(u.addr, rcpts, self.size(9.4, 1.4), self.msgid(style), plans)])

    def user_day(self, d, u, travel=None):
        rng = self.rng
        day0 = d * DAY
        weekend = d % 7 >= 5
        active = rng.random() < (u.weekend if weekend else 0.94)
        if travel:
            ip, host = travel, "unknown" if rng.random() < 0.5 else self.rdns(travel, "hotel-wifi.example")
            lo, hi = u.start - 0.5, u.end + 2
        elif weekend:
            ip, host = u.home_ip, u.home_host
            lo = rng.uniform(9, 19)
            hi = lo + rng.uniform(1, 4)
        elif rng.random() < u.remote:
            ip, host = u.home_ip, u.home_host
            lo, hi = u.start + rng.uniform(-0.5, 0.5), u.end + rng.uniform(-0.5, 1.0)
        else:
            host, ip = self.offices[u.office]
            lo, hi = u.start + rng.uniform(-0.4, 0.4), u.end + rng.uniform(-0.7, 0.7)
        at_office = ip == self.offices[u.office][1]
        # desktop IMAP client
        if u.desktop and active:
            t = day0 + lo * 3600
            while t < day0 + hi * 3600:
                dur = rng.expovariate(1 / (u.reconnect * 60))
                for _ in range(rng.choice([1, 1, 2])):
                    self.imap_login(t + self.u(0, 1), u.addr, ip, min(dur, self.u(60, 3600)))
                t += dur + self.u(5, 60)
        if u.desktop and u.always_on and not travel:
            t = day0 + self.u(0, 1800)
            while t < day0 + DAY:
                if not (active and at_office is False and day0 + lo * 3600 <= t <= day0 + hi * 3600):
                    self.imap_login(t, u.addr, u.home_ip, self.u(30, 1800))
                t += self.u(1800, 4200)
        # phone
        if u.mobile:
            wake, sleep = rng.uniform(6.3, 8.0), rng.uniform(21.5, 23.9)
            t = day0 + wake * 3600
            mip = f"{u.mobile}.{rng.randint(2, 254)}"
            while t < day0 + sleep * 3600:
                h = (t - day0) / 3600
                if travel:
                    pip = travel if rng.random() < 0.5 else mip
                elif active and at_office and lo <= h <= hi and rng.random() < 0.4:
                    pip = ip
                elif (h < 8 or h > 18.5 or weekend) and rng.random() < 0.6:
                    pip = u.home_ip
                else:
                    if rng.random() < 0.15:
                        mip = f"{u.mobile}.{rng.randint(2, 254)}"
                    pip = mip
                self.imap_login(t, u.addr, pip, self.u(5, 300))
                t += rng.expovariate(1 / 2400) + 120
        # webmail sessions
        if u.webmail and active:
            for _ in range(rng.randint(2, 4) if not u.desktop else rng.randint(0, 2)):
                self.webmail_login(self.hour_in(u, lo, hi, day0), u, ip, self.u(120, 2400))
        # mail sent
        n = self.poisson(u.send_rate * (0.2 if weekend else 1.0)) if active else (
            1 if u.mobile and rng.random() < 0.1 else 0)
        for _ in range(n):
            t = self.hour_in(u, lo, hi, day0) if active else day0 + self.u(9, 21) * 3600
            if rng.random() < 0.1:
                t = day0 + self.u(hi, 23.5) * 3600  # an evening reply
            mobile = u.mobile and (not active or rng.random() < 0.15)
            if mobile:
                chan, sip, shost = "mobile", f"{u.mobile}.{rng.randint(2, 254)}", "unknown"
                if travel:
                    sip = travel
            elif u.webmail and (not u.desktop or rng.random() < 0.3):
                chan, sip, shost = "webmail", ip, host
            else:
                chan, sip, shost = "client", ip, host
            if t < self.end:
                self.user_send(t, u, sip, shost, chan, mistyped=rng.random() < 0.007)
        # a mistyped password (noise)
        if active and rng.random() < u.mistype * 2:
            with self.noise("mistyped_password"):
                t = self.hour_in(u, lo, hi, day0)
                fails = rng.choices([1, 2, 3], [70, 22, 8])[0]
                chans = (["imap", "sasl"] if u.desktop else []) + (["webmail"] if u.webmail else [])
                ch = rng.choice(chans)
                if ch == "imap":
                    for _ in range(fails):
                        t = self.imap_fail(t, u.addr, ip) + self.u(4, 40)
                    self.imap_login(t, u.addr, ip, self.u(60, 1800))
                elif ch == "sasl":
                    self.submission(t, host, ip, u.addr, [(u.addr, self.pick_rcpts(u), self.size(), self.msgid(u.client), None)], fails=fails)
                else:
                    for _ in range(fails):
                        sess = self.rcsess()
                        self.imap_fail(t, u.addr, "127.0.0.1", webmail=True, secs=2)
                        self.rc(t + 2.2, sess, f"Failed login for {u.addr} from {ip} in session {sess} (error: 0)")
                        t += self.u(6, 40)
                    self.webmail_login(t, u, ip, self.u(120, 1200))
        # inbound (plain normal even while the user travels)
        m = self.poisson(u.in_rate * (0.3 if weekend else 1.0))
        with self.labelled(NORMAL):
            for _ in range(m):
                self.inbound_for(d, u)

    def inbound_for(self, d, u):
        rng = self.rng
        day0 = d * DAY
        weekend = d % 7 >= 5
        kind = rng.choices(["corr", "news", "notify"], [62, 23, 15])[0]
        if kind == "corr":
            sender = rng.choice(u.corr)
            dom = sender.split("@", 1)[1]
            p = next(p for p in self.partners if p["domain"] == dom)
            host, ip = rng.choice(p["out"])
            h = rng.uniform(8, 22) if weekend or dom in ("gmail.com", "gmx.de", "outlook.com") and rng.random() < 0.4 \
                else min(20.5, max(6.0, rng.gauss(12.5, 3.0)))
            t = day0 + h * 3600
            style = "gmail" if dom == "gmail.com" else ("outlook" if p["style"] in ("outlook", "exchange") else "x")
            rcpts = [u.addr]
            if rng.random() < 0.15 and u.colleagues:
                for v in rng.sample(u.colleagues, min(len(u.colleagues), rng.randint(1, 2))):
                    rcpts.append(v.addr)
            if rng.random() < 0.08:
                rcpts[0] = f"{rng.choice(ALIASES)}@{DOMAIN}"
            msgid = self.msgid(style, dom)
            size = self.size(10.0, 1.4)
        else:
            nl = rng.choice(self.newsletters[:2] + self.newsletters[4:5]) if kind == "news" else rng.choice(self.newsletters)
            host, ip, dom = nl["host"], nl["ip"], nl["domain"]
            if nl["hour"] is not None:
                t = day0 + nl["hour"] * 3600 + self.u(0, 900)
            else:
                t = day0 + self.u(0, DAY)
            sender = f"{nl['local']}+{rng.getrandbits(32):x}@{host}" if kind == "news" else f"{nl['local']}@{dom}"
            rcpts = [u.addr]
            msgid = self.msgid("x", host)
            size = self.size(10.5, 0.8)
        self.inbound(t, host, ip, sender, rcpts, msgid, size, tls=rng.random() < 0.92)

    # ---------------------------------------------------------------- normal: noise and system
    def day_noise(self, d):
        rng = self.rng
        day0 = d * DAY
        weekend = d % 7 >= 5
        # greylisting of new senders, then the retry
        with self.noise("greylisting"):
            for _ in range(rng.randint(2, 6) if weekend else rng.randint(4, 12)):
                dom, host, ip = rng.choice(self.occasional)
                u = rng.choice(self.users)
                sender = self.random_person(dom)
                t = day0 + min(20.0, max(6.0, rng.gauss(12.5, 3))) * 3600
                reply = f"450 4.2.0 <{u.addr}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{DOMAIN}.html"
                self.reject_session(t, host, ip, [(reply, sender, u.addr)], host, new=rng.random() < 0.5, tls=True)
                self.inbound(t + self.u(300, 1800), host, ip, sender, [u.addr], self.msgid("x", dom), self.size())
        # RBL rejects of spam bots, day and night
        n = rng.randint(20, 60)
        bots = [self.new_ip(SPAM_OCTETS) for _ in range(max(1, n // 2))]
        with self.noise("rbl_reject"):
            for _ in range(n):
                ip = rng.choice(bots)
                t = day0 + self.u(0, DAY)
                to = rng.choice(self.users).addr if rng.random() < 0.8 else f"{rng.choice(SPRAY_NAMES)}@{DOMAIN}"
                frm = self.random_person(self.random_domain())
                helo = rng.choice([f"[{ip}]", rng.choice(BOT_HELOS), f"mail.{self.random_domain()}"])
                if rng.random() < 0.75:
                    extra = None
                    if rng.random() < 0.3:
                        extra = f"warning: hostname {self.rdns(ip, 'static.' + self.random_domain())} does not resolve to address {ip}: Name or service not known"
                    reply = f"554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/{ip}"
                    self.reject_session(t, "unknown", ip, [(reply, frm, to)], helo, new=rng.random() < 0.7, extra=extra)
                else:
                    pid = self.long_pid("postscreen", t)
                    port = rng.randint(1024, 65535)
                    self.emit(t, f"postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to [{SERVER_IP}]:25")
                    self.emit(t + self.u(0.05, 0.5), f"postfix/postscreen[{pid}]: DNSBL rank {rng.randint(2, 6)} for [{ip}]:{port}")
                    t += self.u(6, 9)
                    self.emit(t, f"postfix/postscreen[{pid}]: NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 5.7.1 Service unavailable; client [{ip}] blocked using zen.spamhaus.org; from=<{frm}>, to=<{to}>, proto=ESMTP, helo=<{helo}>")
                    self.emit(t + self.u(0.1, 2), f"postfix/postscreen[{pid}]: DISCONNECT [{ip}]:{port}")
        # internet scanners
        with self.noise("scanner"):
            for _ in range(rng.randint(3, 8)):
                ip = self.new_ip(net=rng.choice(SCANNER_NETS))
                t = day0 + self.u(0, DAY)
                kind = rng.choice(["smtp", "smtp", "submission", "submission_auth", "imap", "imap_auth", "tls"])
                if kind == "smtp":
                    t = self.postscreen(t, ip, True)
                    pid = self.pid("smtpd", t)
                    self.connect(t, "smtpd", "unknown", ip, pid)
                    if rng.random() < 0.5:
                        self.emit(t + self.u(0.1, 2), f"postfix/smtpd[{pid}]: lost connection after {rng.choice(['CONNECT', 'EHLO'])} from unknown[{ip}]")
                        self.emit(t + self.u(2, 3), f"postfix/smtpd[{pid}]: disconnect from unknown[{ip}] {counters([('ehlo', 1, rng.randint(0, 1))])}")
                    else:
                        self.emit(t + self.u(0.5, 3), f"postfix/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 quit=1 commands=2")
                elif kind in ("submission", "tls"):
                    pid = self.pid("submission/smtpd", t, 3)
                    self.connect(t, "submission/smtpd", "unknown", ip, pid)
                    if kind == "tls":
                        self.emit(t + 0.3, f"postfix/submission/smtpd[{pid}]: SSL_accept error from unknown[{ip}]: -1")
                        self.emit(t + 0.31, f"postfix/submission/smtpd[{pid}]: warning: TLS library problem: error:0A00006C:SSL routines::bad key share:../ssl/statem/extensions_srvr.c:657:")
                        self.emit(t + 0.32, f"postfix/submission/smtpd[{pid}]: lost connection after STARTTLS from unknown[{ip}]")
                        self.emit(t + 0.33, f"postfix/submission/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 starttls=0/1 commands=1/2")
                    else:
                        self.emit(t + self.u(0.5, 4), f"postfix/submission/smtpd[{pid}]: lost connection after EHLO from unknown[{ip}]")
                        self.emit(t + 4.1, f"postfix/submission/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 commands=1")
                elif kind == "submission_auth":
                    pid = self.pid("submission/smtpd", t, 3)
                    self.connect(t, "submission/smtpd", "unknown", ip, pid)
                    tries = rng.randint(1, 2)
                    for k in range(tries):
                        t += self.u(1, 4)
                        self.dovecot_auth_fail(t, rng.choice(SPRAY_NAMES[:6]) + ("@" + DOMAIN if rng.random() < 0.5 else ""), ip, False)
                        self.emit(t + 0.02, f"postfix/submission/smtpd[{pid}]: warning: unknown[{ip}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6")
                    self.emit(t + self.u(0.5, 2), f"postfix/submission/smtpd[{pid}]: disconnect from unknown[{ip}] ehlo=1 auth=0/{tries} quit=1 commands=2/{2 + tries}")
                elif kind == "imap":
                    self.emit(t, f"dovecot: imap-login: Disconnected: Connection closed (no auth attempts in {rng.randint(0, 10)} secs): user=<>, rip={ip}, lip={SERVER_IP}, TLS handshaking: SSL_accept() failed: error:0A00006C:SSL routines::bad key share, session=<{self.dsess()}>")
                else:
                    self.imap_fail(t, rng.choice(SPRAY_NAMES[:6]) + "@" + DOMAIN, ip, rng.randint(1, 2), real=False)
        # mistyped or stale local addresses, and spam bots guessing once
        with self.noise("unknown_recipient"):
            for _ in range(rng.randint(0, 2) if weekend else rng.randint(1, 5)):
                t = day0 + (self.u(0, DAY) if rng.random() < 0.3 else min(20.0, max(6.0, rng.gauss(12.5, 3))) * 3600)
                if rng.random() < 0.6:
                    dom, host, ip = rng.choice(self.occasional)
                    frm = self.random_person(dom)
                    new = rng.random() < 0.5
                else:
                    host, ip = "unknown", self.new_ip(SPAM_OCTETS)
                    frm = self.random_person(self.random_domain())
                    new = True
                rej = []
                for _ in range(rng.randint(1, 2)):
                    local = rng.choice([f"{rng.choice(FIRST)}.{rng.choice(LAST)}", rng.choice(SPRAY_NAMES),
                                        rng.choice(self.users).name + rng.choice(["s", "1", "x"])])
                    rej.append((f"550 5.1.1 <{local}@{DOMAIN}>: Recipient address rejected: User unknown in virtual mailbox table",
                                frm, f"{local}@{DOMAIN}"))
                self.reject_session(t, host, ip, rej, host if host != "unknown" else rng.choice(BOT_HELOS), new=new)
        # a scanner testing for an open relay once
        with self.noise("relay_attempt"):
            for _ in range(rng.randint(0, 2)):
                ip = self.new_ip(net=rng.choice(SCANNER_NETS))
                t = day0 + self.u(0, DAY)
                victim = self.random_person(rng.choice(["gmail.com", "yahoo.com", "hotmail.com"]))
                self.reject_session(t, "unknown", ip, [(f"454 4.7.1 <{victim}>: Relay access denied", victim, victim)],
                                    rng.choice(BOT_HELOS), proto="SMTP")
        # postscreen PREGREET / HANGUP
        for _ in range(rng.randint(1, 6)):
            ip = self.new_ip(SPAM_OCTETS)
            t = day0 + self.u(0, DAY)
            pid = self.long_pid("postscreen", t)
            port = rng.randint(1024, 65535)
            if rng.random() < 0.5:
                with self.noise("pregreet"):
                    self.emit(t, f"postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to [{SERVER_IP}]:25")
                    el = self.u(0.05, 0.99)
                    self.emit(t + el, f"postfix/postscreen[{pid}]: PREGREET {rng.choice([11, 14, 19, 23])} after {el:.2f} from [{ip}]:{port}: EHLO {rng.choice(BOT_HELOS)}\\r\\n")
                    if rng.random() < 0.5:
                        self.emit(t + 6.5, f"postfix/postscreen[{pid}]: NOQUEUE: reject: RCPT from [{ip}]:{port}: 550 5.5.1 Protocol error; from=<{self.random_person()}>, to=<{rng.choice(self.users).addr}>, proto=ESMTP, helo=<{rng.choice(BOT_HELOS)}>")
                    self.emit(t + 7, f"postfix/postscreen[{pid}]: DISCONNECT [{ip}]:{port}")
            else:
                with self.noise("hangup"):
                    self.emit(t, f"postfix/postscreen[{pid}]: CONNECT from [{ip}]:{port} to [{SERVER_IP}]:25")
                    el = self.u(0.1, 5.9)
                    self.emit(t + el, f"postfix/postscreen[{pid}]: HANGUP after {el:.2g} from [{ip}]:{port} in tests before SMTP handshake")
                    self.emit(t + el + 0.001, f"postfix/postscreen[{pid}]: DISCONNECT [{ip}]:{port}")
        # a newsletter or mailing of one user
        if not weekend and rng.random() < 0.3:
            u = rng.choice(self.users)
            with self.noise("newsletter"):
                n = rng.randint(30, 50)
                rcpts = list(u.corr)
                while len(rcpts) < n:
                    p = rng.choice(self.partners)
                    a = f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{p['domain']}"
                    if a not in rcpts:
                        rcpts.append(a)
                rcpts = rng.sample(rcpts, n)
                host, ip = self.offices[u.office]
                t = self.hour_in(u, u.start, u.end, day0)
                plans, _ = self.plans_for(t, rcpts)
                self.submission(t, host, ip, u.addr, [(u.addr, rcpts, self.size(11, 0.5), self.msgid(u.client), plans)])

    def day_system(self, d):
        rng = self.rng
        day0 = d * DAY
        # cron.daily and logwatch to root
        for hh, subj in ((6.42, "cron"), (6.45, "logwatch")):
            t = day0 + hh * 3600 + self.u(0, 120)
            self.pickup(t, 0, "root", [f"root@{FQDN}"], self.size(8.5, 0.6))
        # developers' crontabs
        for u in self.shell_users:
            t = day0 + self.u(2, 4) * 3600
            self.pickup(t, u.uid, u.login, [f"{u.login}@{FQDN}"], self.size(7.5, 0.5))
        # the website's contact form
        for _ in range(rng.randint(0, 4)):
            t = day0 + min(23.0, max(0.5, rng.gauss(13, 4))) * 3600
            self.pickup(t, 33, "www-data", [f"info@{DOMAIN}"], self.size(8, 0.4))
        # postscreen cache clean-up
        for hh in (rng.uniform(0, 12), rng.uniform(12, 24)):
            t = day0 + hh * 3600
            self.emit(t, f"postfix/postscreen[{self.long_pid('postscreen', t)}]: cache btree:/var/lib/postfix/postscreen_cache full cleanup: retained={rng.randint(150, 600)} dropped={rng.randint(0, 60)} entries")
        # certificate renewal
        for r in self.reloads:
            if day0 <= r < day0 + DAY:
                self.emit(r - 0.3, f"postfix/postfix-script[{self.pid('script', r, 1)}]: refreshing the Postfix mail system")
                self.emit(r, f"postfix/master[{self.master_pid}]: reload -- version {POSTFIX_VERSION}, configuration /etc/postfix")

    def pickup(self, t, uid, login, rcpts, size, plans=None, dsn=True):
        qid = self.qid()
        self.emit(t, f"postfix/pickup[{self.long_pid('pickup', t)}]: {qid}: uid={uid} from=<{login}>")
        t += self.u(0.002, 0.02)
        return self.deliver(t, qid, f"{login}@{FQDN}", size, rcpts, self.msgid("postfix", t=t, qid=qid), plans, dsn)

    def anvil(self):
        """Every ten minutes with connections, anvil names the busiest client."""
        buckets = {}
        for t, svc, ip, label in self.connects:
            buckets.setdefault(int(t // 600), []).append((t, svc, ip, label))
        for b in sorted(buckets):
            items = buckets[b]
            per = {}
            for t, svc, ip, label in items:
                per.setdefault((svc, ip), []).append((t, label))
            best, best_rate = None, 0
            for key, evs in per.items():
                mins = Counter(int(t // 60) for t, _ in evs)
                rate = max(mins.values())
                if rate > best_rate:
                    best, best_rate = key, rate
            t_end = (b + 1) * 600 + self.u(0, 30)
            evs = per[best]
            at = self.anvil_at(evs[0][0])
            pid = self.long_pid("anvil", t_end)
            with self.labelled(evs[0][1] if evs[0][1][0] != "normal" else NORMAL):
                self.emit(t_end, f"postfix/anvil[{pid}]: statistics: max connection rate {best_rate}/60s for ({best[0]}:{best[1]}) at {at}")
                self.emit(t_end + 0.001, f"postfix/anvil[{pid}]: statistics: max connection count {min(best_rate, self.rng.randint(1, 3))} for ({best[0]}:{best[1]}) at {at}")
            self.emit(t_end + 0.002, f"postfix/anvil[{pid}]: statistics: max cache size {len(per)} at {self.anvil_at(items[-1][0])}")

    def normal(self):
        rng = self.rng
        self.master_pid = 1000 + rng.randint(0, 200)
        for d in range(self.days):
            weekend = d % 7 >= 5
            traveller = None
            if rng.random() < (0.1 if weekend else 0.5):
                traveller = rng.choice(self.users)
            for u in self.users:
                if u is traveller:
                    with self.noise("travel_login"):
                        self.user_day(d, u, travel=self.new_ip(TRAVEL_OCTETS))
                else:
                    self.user_day(d, u)
            self.day_noise(d)
            self.day_system(d)

    # ---------------------------------------------------------------- attacks
    def attacks(self):
        rng = self.rng
        a0 = self.train_days * DAY
        if a0 >= self.end:
            return
        for name in ATTACKS:
            n = rng.randint(8, 12)
            fn = getattr(self, "atk_" + name)
            slot = (self.end - a0) / n
            for k in range(n):
                dur = fn(None, None, plan=True)
                s = a0 + k * slot + self.u(0, slot)
                s = min(s, self.end - dur - 600)
                s = max(s, a0)
                self.episodes[name] += 1
                with self.labelled((name, f"{name}-{k + 1}", "")):
                    fn(s, self.new_ip(ATTACK_OCTETS), plan=False)

    # Each atk_* returns its duration when plan=True (drawn afresh for the episode,
    # remembered in self._dur) and generates the episode otherwise.
    def _plan(self, lo, hi, slack=0.0):
        """Draws the episode's active duration; returns it plus the tail (retries) it needs to fit."""
        self._dur = self.u(lo, hi)
        return self._dur + slack

    def atk_sasl_brute_force(self, t, ip, plan):
        if plan:
            return self._plan(600, 3600)
        rng = self.rng
        end = t + self._dur
        attempts = rng.randint(40, 400)
        targets = rng.sample(self.users, rng.randint(1, 3))
        logins = [v.addr if rng.random() < 0.7 else v.name for v in targets]
        method = rng.choice(["LOGIN", "PLAIN"])
        tls = rng.random() < 0.5
        host = "unknown"
        gap = self._dur / attempts
        done = 0
        while done < attempts and t < end:
            pid = self.pid("submission/smtpd", t, 3)
            self.connect(t, "submission/smtpd", host, ip, pid)
            t += self.u(0.1, 0.5)
            if tls:
                self.emit(t, f"postfix/submission/smtpd[{pid}]: Anonymous TLS connection established from {host}[{ip}]: {TLS_IN_12}")
            k = min(attempts - done, rng.randint(1, 3))
            for _ in range(k):
                t += self.u(0.3, 2.5)
                self.dovecot_auth_fail(t, rng.choice(logins), ip, True)
                why = "UGFzc3dvcmQ6" if method == "LOGIN" else ""
                self.emit(t + 0.01, f"postfix/submission/smtpd[{pid}]: warning: {host}[{ip}]: SASL {method} authentication failed: {why}")
            done += k
            t += self.u(0.05, 0.5)
            if rng.random() < 0.15:
                self.emit(t, f"postfix/submission/smtpd[{pid}]: lost connection after AUTH from {host}[{ip}]")
                c = counters([("ehlo", 1 + tls, 1 + tls), ("starttls", int(tls), int(tls)), ("auth", 0, k)])
            else:
                c = counters([("ehlo", 1 + tls, 1 + tls), ("starttls", int(tls), int(tls)), ("auth", 0, k), ("quit", 1, 1)])
            self.emit(t + 0.001, f"postfix/submission/smtpd[{pid}]: disconnect from {host}[{ip}] {c}")
            t += max(0.2, rng.gauss(gap * k, gap * k / 3))

    def atk_password_spraying(self, t, ip, plan):
        if plan:
            return self._plan(6 * 3600, 24 * 3600)
        rng = self.rng
        end = t + self._dur
        channel = rng.choice(["imap", "webmail", "both"])
        names = [(f"{n}@{DOMAIN}" if rng.random() < 0.7 else n, False) for n in SPRAY_NAMES]
        names += [(v.addr, True) for v in rng.sample(self.users, min(len(self.users), rng.randint(5, 20)))]
        rng.shuffle(names)
        i = 0
        while t < end:
            user, real = names[i % len(names)]
            i += 1
            ch = channel if channel != "both" else rng.choice(["imap", "webmail"])
            if ch == "imap":
                self.imap_fail(t, user, ip, 1, real=real)
            else:
                sess = self.rcsess()
                self.imap_fail(t, user, "127.0.0.1", 1, real=real, webmail=True, secs=2)
                self.rc(t + 2.3, sess, f"Failed login for {user} from {ip} in session {sess} (error: 0)")
            t += self.u(240, 1200)

    def atk_compromised_account(self, t, ip, plan):
        if plan:
            return self._plan(3600, 3 * 3600, slack=3600)
        rng = self.rng
        dur = self._dur
        u = rng.choice(self.users)
        host = "unknown" if rng.random() < 0.7 else f"{rng.choice(['vps', 'srv', 'host'])}{rng.randint(1, 999)}.{self.random_domain()}"
        if rng.random() < 0.35:  # the attacker checks the stolen credentials in webmail first
            self.webmail_login(t, u, ip, self.u(60, 400))
            t += self.u(300, 900)
        if rng.random() < 0.3:
            self.imap_login(t, u.addr, ip, self.u(20, 300))
            t += self.u(60, 600)
        n = rng.randint(100, 800)
        end = t + dur
        gap = dur / n
        bad = rng.uniform(0.15, 0.45)
        defer = rng.uniform(0.03, 0.15)
        domains = [self.random_domain() for _ in range(rng.randint(20, 80))] + FREEMAIL[:6]
        nohost = set(domains[:3])
        sent = 0
        while sent < n and t < end:
            per = min(n - sent, rng.randint(1, 5))
            msgs = []
            for _ in range(per):
                rc = []
                for _ in range(rng.randint(1, 10)):
                    a = self.random_person(rng.choice(domains))
                    if a not in self.corr_all and a not in rc:
                        rc.append(a)
                if not rc:
                    continue
                plans = {}
                for a in rc:
                    x = rng.random()
                    dom = a.split("@", 1)[1]
                    if dom in nohost:
                        plans[a] = ["bounce_nohost"]
                    elif x < bad:
                        plans[a] = ["bounce_unknown"] if rng.random() < 0.8 else ["bounce_spam"]
                    elif x < bad + defer:
                        plans[a] = rng.choice([["defer_rate", "sent"], ["defer_rate", "defer_rate", "bounce_spam"],
                                               ["defer_grey", "sent"], ["defer_busy", "sent"]])
                msgs.append((u.addr, rc, self.size(8.6, 0.4), self.msgid("x", DOMAIN), plans))
            self.submission(t, host, ip, u.addr, msgs)
            sent += per
            t += max(1.0, rng.gauss(gap * per, gap * per / 3))
        if rng.random() < 0.5:  # the admin notices, purges the queue and changes the password
            t += self.u(300, 1800)
            self.emit(t, f"postfix/postsuper[{self.pid('postsuper', t, 1)}]: Deleted: {rng.randint(20, 300)} messages")
            for _ in range(rng.randint(3, 20)):
                t += self.u(20, 300)
                pid = self.pid("submission/smtpd", t, 3)
                self.connect(t, "submission/smtpd", host, ip, pid)
                self.dovecot_auth_fail(t + 0.5, u.addr, ip, True)
                self.emit(t + 0.52, f"postfix/submission/smtpd[{pid}]: warning: {host}[{ip}]: SASL PLAIN authentication failed: ")
                self.emit(t + 0.7, f"postfix/submission/smtpd[{pid}]: disconnect from {host}[{ip}] ehlo=2 starttls=1 auth=0/1 quit=1 commands=4/5")

    def atk_directory_harvest(self, t, ip, plan):
        if plan:
            return self._plan(300, 2400)
        rng = self.rng
        end = t + self._dur
        n = rng.randint(50, 500)
        guesses = []
        pool = SPRAY_NAMES + FIRST + [f"{f}.{l}" for f in FIRST[:20] for l in LAST[:10]] + \
            [f"{f[0]}{l}" for f in FIRST[:20] for l in LAST[:10]] + WORDS
        rng.shuffle(pool)
        existing = {v.name for v in self.users} | set(ALIASES)
        guesses = pool[:n]
        frm = self.random_person(self.random_domain())
        helo = rng.choice(BOT_HELOS + [f"mail.{self.random_domain()}"])
        gap = self._dur / n
        i = 0
        first = True
        while i < n and t < end:
            k = min(n - i, rng.randint(3, 18))
            batch = guesses[i:i + k]
            i += k
            rej = [(f"550 5.1.1 <{g}@{DOMAIN}>: Recipient address rejected: User unknown in virtual mailbox table", frm, f"{g}@{DOMAIN}")
                   for g in batch if g not in existing]
            acc = len(batch) - len(rej)
            t2 = self.reject_session(t, "unknown", ip, rej, helo, new=first, accepted=acc)
            first = False
            t = max(t2, t + gap * k * self.u(0.6, 1.4))

    def atk_open_relay_probe(self, t, ip, plan):
        if plan:
            return self._plan(60, 1800)
        rng = self.rng
        n = rng.randint(5, 40)
        gap = self._dur / n
        helo = rng.choice([f"[{SERVER_IP}]", SERVER_IP, "ylmf-pc", "User", FQDN, ip])
        i = 0
        first = True
        while i < n:
            k = min(n - i, rng.randint(1, 4))
            rej = []
            for _ in range(k):
                victim = self.random_person(rng.choice(["gmail.com", "yahoo.com", "hotmail.com", "aol.com", "mail.ru"]))
                frm = rng.choice([f"test@{DOMAIN}", f"admin@{DOMAIN}", f"test@{self.random_domain()}", victim,
                                  f"relaytest@{self.random_domain()}"])
                rej.append((f"454 4.7.1 <{victim}>: Relay access denied", frm, victim))
            i += k
            extra = None
            x = rng.random()
            if x < 0.15:
                extra = "warning: non-SMTP command from unknown[%s]: %s" % (ip, rng.choice(
                    ["GET / HTTP/1.1", "CONNECT 1.1.1.1:25 HTTP/1.0", "POST / HTTP/1.0", "\\x16\\x03\\x01\\x00\\xf8\\x01"]))
            elif x < 0.3:
                extra = f"improper command pipelining after HELO from unknown[{ip}]: MAIL FROM:<{rej[0][1]}>\\r\\nRCPT TO:<{rej[0][2]}>\\r\\n"
            t2 = self.reject_session(t, "unknown", ip, rej, helo, proto="SMTP", new=first, extra=extra)
            first = False
            t = max(t2, t + gap * k * self.u(0.5, 1.5))

    def atk_backscatter(self, t, ip, plan):
        if plan:
            return self._plan(1800, 7200)
        rng = self.rng
        n = rng.randint(100, 1000)
        gap = self._dur / n
        real_ratio = rng.uniform(0.1, 0.8)
        victims = rng.sample(self.users, min(len(self.users), rng.randint(1, 5)))
        i = 0
        while i < n:
            mta_ip = self.new_ip(BACKSCATTER_OCTETS)
            dom = self.random_domain()
            host = rng.choice([f"mail.{dom}", f"mx{rng.randint(1, 9)}.{dom}", f"smtp.{dom}", "unknown"])
            helo = host if host != "unknown" else f"mail.{dom}"
            first = True
            for _ in range(min(n - i, rng.randint(1, 5))):
                i += 1
                if rng.random() < real_ratio:
                    to = rng.choice(victims).addr
                    msgid = self.msgid("postfix", t=t, qid=self.qid()).replace(FQDN, host if host != "unknown" else helo)
                    self.inbound(t, host, mta_ip, "", [to], msgid, self.size(8.8, 0.5), new=first, tls=rng.random() < 0.6)
                else:
                    local = rng.choice([self.random_person(DOMAIN).split("@")[0],
                                        "%s%d" % (rng.choice(WORDS), rng.randint(1, 9999)),
                                        "%x" % rng.getrandbits(32)])
                    to = f"{local}@{DOMAIN}"
                    reply = f"550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table"
                    self.reject_session(t, host, mta_ip, [(reply, "", to)], helo, new=first, tls=rng.random() < 0.5)
                first = False
                t += max(0.5, rng.expovariate(1 / gap))

    def atk_webmail_credential_stuffing(self, t, ip, plan):
        if plan:
            return self._plan(600, 3600)
        rng = self.rng
        ips = [ip] + [self.new_ip(ATTACK_OCTETS) for _ in range(rng.randint(0, 2))]
        n = rng.randint(50, 400)
        gap = self._dur / n
        wins = rng.choice([0, 0, 1, 1, 2])
        win_at = sorted(rng.sample(range(n), wins))
        reals = rng.sample(self.users, min(len(self.users), rng.randint(2, 8)))
        for k in range(n):
            src = rng.choice(ips)
            sess = self.rcsess()
            if k in win_at:
                v = rng.choice(reals)
                self.webmail_login(t, v, src, self.u(30, 300))
            else:
                x = rng.random()
                if x < 0.12:
                    user, real = rng.choice(reals).addr, True
                elif x < 0.2:
                    user, real = f"{rng.choice(FIRST)}.{rng.choice(LAST)}@{DOMAIN}", False
                else:
                    user, real = self.random_person(), False
                self.imap_fail(t, user, "127.0.0.1", 1, real=real, webmail=True, secs=rng.randint(0, 2))
                self.rc(t + 2.1, sess, f"Failed login for {user} from {src} in session {sess} (error: 0)")
            t += max(0.3, rng.expovariate(1 / gap))

    def atk_imap_brute_force(self, t, ip, plan):
        if plan:
            return self._plan(600, 3600)
        rng = self.rng
        n = rng.randint(50, 500)
        gap = self._dur / n
        targets = [v.addr for v in rng.sample(self.users, rng.randint(1, 3))]
        done = 0
        while done < n:
            k = min(n - done, rng.randint(1, 3))
            user = rng.choice(targets)
            secs = k * rng.randint(2, 5)
            self.imap_fail(t, user, ip, k, real=True, secs=secs)
            done += k
            t += max(secs + 0.2, rng.gauss(gap * k, gap * k / 3))

    def atk_runaway_script(self, t, ip, plan):
        if plan:
            return self._plan(1200, 5400, slack=1200)
        rng = self.rng
        dur = self._dur
        n = rng.randint(300, 3000)
        gap = dur / n
        if rng.random() < 0.6:
            uid, login = 33, "www-data"
        else:
            v = rng.choice(self.shell_users)
            uid, login = v.uid, v.login
        mode = rng.choice(["contact_form", "root", "external_many", "external_one"])
        ext = [self.random_person(self.random_domain()) for _ in range(rng.randint(50, 400))]
        one = self.random_person(rng.choice(FREEMAIL[:5]))
        warned = n < 1500
        for k in range(n):
            if mode == "contact_form":
                rc = [f"{rng.choice(['info', 'info', 'sales'])}@{DOMAIN}"]
            elif mode == "root":
                rc = [f"root@{FQDN}"] if login == "www-data" else [f"{login}@{FQDN}"]
            elif mode == "external_many":
                rc = [rng.choice(ext)]
            else:
                rc = [one]
            plans = {}
            if mode.startswith("external"):
                x = rng.random()
                if x < 0.1 + 0.2 * (k / n) and mode == "external_one":
                    plans[rc[0]] = ["defer_rate", "sent"]
                elif x < 0.08 and mode == "external_many":
                    plans[rc[0]] = ["bounce_unknown"]
                elif x < 0.15 and mode == "external_many":
                    plans[rc[0]] = ["defer_rate", "sent"]
            self.pickup(t, uid, login, rc, self.size(8.2, 0.3), plans)
            if not warned and k > n * 0.7:
                warned = True
                self.emit(t + 0.5, f"postfix/qmgr[{self.long_pid('qmgr', t)}]: warning: mail for [{rc[0].split('@')[1]}] is using up {rng.randint(2001, 20000)} of 20000 active queue entries")
            t += max(0.05, rng.expovariate(1 / gap))

    def atk_daemon_errors(self, t, ip, plan):
        if plan:
            return self._plan(1, 120)
        rng = self.rng
        mp = self.master_pid
        sb = "/usr/lib/postfix/sbin"
        p = self.pid("err", t, 1) + rng.randint(100, 900)
        kind = rng.randrange(9)
        lines = []
        if kind == 0:
            lines = [f"postfix/cleanup[{p}]: fatal: open database /etc/postfix/header_checks.db: No such file or directory",
                     f"postfix/master[{mp}]: warning: process {sb}/cleanup pid {p} exit status 1",
                     f"postfix/master[{mp}]: warning: {sb}/cleanup: bad command startup -- throttling"]
        elif kind == 1:
            lines = [f"postfix/master[{mp}]: warning: process {sb}/smtpd pid {p} killed by signal 11"]
            if rng.random() < 0.5:
                lines.append(f"postfix/master[{mp}]: warning: {sb}/smtpd: bad command startup -- throttling")
        elif kind == 2:
            lines = [f"postfix/qmgr[{p}]: panic: myfree: corrupt or unallocated memory block",
                     f"postfix/master[{mp}]: warning: process {sb}/qmgr pid {p} killed by signal 6"]
        elif kind == 3:
            lines = [f"postfix/submission/smtpd[{p}]: warning: SASL: Connect to private/auth failed: No such file or directory",
                     f"postfix/submission/smtpd[{p}]: fatal: no SASL authentication mechanisms",
                     f"postfix/master[{mp}]: warning: process {sb}/smtpd pid {p} exit status 1",
                     f"postfix/master[{mp}]: warning: {sb}/smtpd: bad command startup -- throttling"]
        elif kind == 4:
            lines = [f"postfix/trivial-rewrite[{p}]: fatal: proxymap service is not configured for table \"mysql:/etc/postfix/mysql-virtual.cf\"",
                     f"postfix/master[{mp}]: warning: process {sb}/trivial-rewrite pid {p} exit status 1"]
        elif kind == 5:
            lines = [f"postfix/cleanup[{p}]: error: open database /etc/postfix/sender_canonical.db: No such file or directory"]
            if rng.random() < 0.5:
                lines.append(f"postfix/cleanup[{p}]: error: {rng.choice(['unable to open', 'cannot read'])} /etc/postfix/sender_canonical.db: Permission denied")
        elif kind == 6:
            lines = [f"postfix/smtpd[{p}]: panic: vstream_fdopen: bad file {rng.randint(0, 9)}",
                     f"postfix/master[{mp}]: warning: process {sb}/smtpd pid {p} killed by signal 6"]
        elif kind == 7:
            lines = [f"postfix/qmgr[{p}]: fatal: scan_dir_push: open directory deferred/{rng.choice('0123456789ABCDEF')}: Permission denied",
                     f"postfix/master[{mp}]: warning: process {sb}/qmgr pid {p} exit status 1",
                     f"postfix/master[{mp}]: warning: {sb}/qmgr: bad command startup -- throttling"]
        else:
            lines = [f"postfix/smtp[{p}]: fatal: unknown service: smtp/tcp",
                     f"postfix/master[{mp}]: warning: process {sb}/smtp pid {p} exit status 1",
                     f"postfix/master[{mp}]: warning: {sb}/smtp: bad command startup -- throttling"]
        lines = lines[:rng.randint(1, 5)] if len(lines) > 1 and rng.random() < 0.2 else lines
        for line in lines:
            self.emit(t, line)
            t += self.u(0.001, self._dur / max(1, len(lines)))

    # ---------------------------------------------------------------- writing
    def write(self, out):
        os.makedirs(out, exist_ok=True)
        self.lines.sort(key=lambda x: x[0])
        end_us = int(self.end * 1e6)
        dates, rcdates = [], []
        for d in range(self.days + 2):
            day = START + dt.timedelta(days=d)
            dates.append(day.strftime("%Y-%m-%d"))
            rcdates.append(day.strftime("%d-%b-%Y"))
        per_scen = Counter()
        per_day = Counter()
        n = 0
        with open(os.path.join(out, "traffic.log"), "w") as log, open(os.path.join(out, "labels.csv"), "w") as lab:
            lab.write("line,scenario,episode,day,noise\n")
            for us, is_rc, text, label in self.lines:
                if us < 0 or us >= end_us:
                    continue
                secs, frac = divmod(us, 1_000_000)
                day, sod = divmod(secs, 86400)
                h, rem = divmod(sod, 3600)
                m, s = divmod(rem, 60)
                if is_rc:
                    log.write(f"[{rcdates[day]} {h:02d}:{m:02d}:{s:02d} +0000]: {text}\n")
                else:
                    log.write(f"{dates[day]}T{h:02d}:{m:02d}:{s:02d}.{frac:06d}+00:00 {HOST} {text}\n")
                n += 1
                lab.write(f"{n},{label[0]},{label[1]},{day},{label[2]}\n")
                per_scen[label[0]] += 1
                per_day[day] += 1
        return n, per_scen, per_day


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=21)
    ap.add_argument("--train-days", type=int, default=14)
    ap.add_argument("--users", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.days < 1 or args.users < 4 or args.train_days < 0:
        ap.error("need --days >= 1, --users >= 4, --train-days >= 0")
    sim = Sim(args.days, args.train_days, args.users, args.seed)
    sim.normal()
    sim.attacks()
    sim.anvil()
    n, per_scen, per_day = sim.write(args.out)
    scen = " ".join(f"{k}={per_scen[k]}" for k in ["normal"] + ATTACKS)
    eps = " ".join(f"{k}={sim.episodes[k]}" for k in ATTACKS)
    print(f"simulate: {n} lines over {args.days} days ({args.train_days} attack-free) in {args.out}; "
          f"lines: {scen}; episodes: {eps}", file=sys.stderr)


if __name__ == "__main__":
    main()
