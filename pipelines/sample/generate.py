#!/usr/bin/env python3
"""Writes the bundled sample: two days of a small mail domain's logs.

    pipelines/sample/generate.py [--seed N] [--out DIR]

mail.log (Postfix + Dovecot, rsyslog's RFC 3339 format) and roundcube.log (Roundcube's
errors/userlogins format) for example.org on mx1: users reading mail over
IMAP and webmail, sending through submission, inbound mail from
correspondents, greylisting deferrals, RBL rejects, bounces, a mistyped
password now and then. The last evening holds a few things an admin wants
to see: a SASL password brute force, a webmail credential-stuffing run and
a Postfix fatal error. Deterministic for a given seed; only the standard
library. The default model in models/ is trained from this output
(pipelines/sample/build-default-model.sh).
"""
import argparse
import datetime as dt
import os
import random

DOMAIN = "example.org"
HOST = "mx1"
TZ = dt.timezone.utc
START = dt.datetime(2026, 3, 2, 0, 0, 0, tzinfo=TZ)  # a Monday
DAYS = 2
USERS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
         "ivan", "judy", "mallory", "niaj", "olivia", "peggy", "rupert", "sybil"]
PARTNERS = [("mail.partner.example", "198.51.100.23"), ("mx.supplier.example", "198.51.100.40"),
            ("smtp.bank.example", "203.0.113.15"), ("out.newsletter.example", "203.0.113.77"),
            ("mail.university.example", "198.51.100.91")]
SPAMMERS = ["192.0.2.66", "192.0.2.67", "203.0.113.201", "203.0.113.202"]


class Log:
    def __init__(self, rng):
        self.rng = rng
        self.mail = []       # (time, line)
        self.webmail = []
        self.pid = 2000

    def next_pid(self):
        self.pid += self.rng.randint(1, 7)
        return self.pid

    def qid(self):
        return "%010X" % self.rng.getrandbits(40)

    def syslog(self, t, program, pid, message):
        # rsyslog's default on Debian 12 and later: RFC 3339 with microseconds.
        stamp = t.isoformat(timespec="microseconds")
        self.mail.append((t, f"{stamp} {HOST} {program}[{pid}]: {message}"))

    def roundcube(self, t, message):
        stamp = t.strftime("[%d-%b-%Y %H:%M:%S %z]")
        session = "%08x" % self.rng.getrandbits(32)
        self.webmail.append((t, f"{stamp}: <{session}> {message}"))


def later(t, rng, low=0.2, high=2.5):
    return t + dt.timedelta(seconds=rng.uniform(low, high))


def inbound(log, t, rng):
    host, ip = rng.choice(PARTNERS)
    user = rng.choice(USERS)
    sender = f"{rng.choice(['info', 'news', 'support', 'jane', 'tom'])}@{host.split('.', 1)[1]}"
    pid, q = log.next_pid(), log.qid()
    log.syslog(t, "postfix/postscreen", pid, f"CONNECT from [{ip}]:{rng.randint(30000, 60000)} to [192.0.2.10]:25")
    log.syslog(t, "postfix/postscreen", pid, f"PASS OLD [{ip}]:{rng.randint(30000, 60000)}")
    spid = log.next_pid()
    t = later(t, rng)
    log.syslog(t, "postfix/smtpd", spid, f"connect from {host}[{ip}]")
    log.syslog(t, "postfix/smtpd", spid, f"Anonymous TLS connection established from {host}[{ip}]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
    t = later(t, rng)
    log.syslog(t, "postfix/smtpd", spid, f"{q}: client={host}[{ip}]")
    log.syslog(t, "postfix/cleanup", log.next_pid(), f"{q}: message-id=<{rng.getrandbits(40):x}@{host}>")
    size = int(rng.lognormvariate(9, 1.2))
    log.syslog(t, "postfix/qmgr", 1100, f"{q}: from=<{sender}>, size={size}, nrcpt=1 (queue active)")
    t = later(t, rng)
    log.syslog(t, "postfix/smtpd", spid, f"disconnect from {host}[{ip}] ehlo=2 starttls=1 mail=1 rcpt=1 data=1 quit=1 commands=7")
    log.syslog(t, "postfix/lmtp", log.next_pid(), f"{q}: to=<{user}@{DOMAIN}>, relay=mail.{DOMAIN}[private/dovecot-lmtp], delay=0.{rng.randint(10, 99)}, delays=0.1/0/0.01/0.05, dsn=2.0.0, status=sent (250 2.0.0 <{user}@{DOMAIN}> Saved)")
    log.syslog(t, "postfix/qmgr", 1100, f"{q}: removed")


def outbound(log, t, rng, user=None):
    user = user or rng.choice(USERS)
    ip = f"198.51.100.{100 + USERS.index(user)}"
    pid, q = log.next_pid(), log.qid()
    log.syslog(t, "postfix/submission/smtpd", pid, f"connect from client{USERS.index(user)}.isp.example[{ip}]")
    t = later(t, rng)
    log.syslog(t, "postfix/submission/smtpd", pid, f"{q}: client=client{USERS.index(user)}.isp.example[{ip}], sasl_method=PLAIN, sasl_username={user}@{DOMAIN}")
    log.syslog(t, "postfix/cleanup", log.next_pid(), f"{q}: message-id=<{rng.getrandbits(40):x}@{DOMAIN}>")
    rcpt_host, _ = rng.choice(PARTNERS)
    rcpt = f"{rng.choice(['jane', 'tom', 'orders', 'office'])}@{rcpt_host.split('.', 1)[1]}"
    log.syslog(t, "postfix/qmgr", 1100, f"{q}: from=<{user}@{DOMAIN}>, size={int(rng.lognormvariate(8.5, 1))}, nrcpt=1 (queue active)")
    t = later(t, rng)
    log.syslog(t, "postfix/submission/smtpd", pid, f"disconnect from client{USERS.index(user)}.isp.example[{ip}] ehlo=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=6")
    if rng.random() < 0.06:
        log.syslog(t, "postfix/smtp", log.next_pid(), f"{q}: to=<{rcpt}>, relay={rcpt_host}[{rng.choice(PARTNERS)[1]}]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=4.7.1, status=deferred (host {rcpt_host} said: 450 4.7.1 Greylisted, please try again later)")
        t = t + dt.timedelta(minutes=rng.randint(5, 15))
    log.syslog(t, "postfix/smtp", log.next_pid(), f"{q}: to=<{rcpt}>, relay={rcpt_host}[{rng.choice(PARTNERS)[1]}]:25, delay=0.9, delays=0.1/0/0.4/0.4, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)")
    log.syslog(t, "postfix/qmgr", 1100, f"{q}: removed")


def imap_login(log, t, rng, user=None, ip=None, ok=True):
    user = user or rng.choice(USERS)
    ip = ip or f"198.51.100.{100 + USERS.index(user)}"
    if ok:
        log.syslog(t, "dovecot", log.next_pid(), f"imap-login: Login: user=<{user}@{DOMAIN}>, method=PLAIN, rip={ip}, lip=192.0.2.10, mpid={log.next_pid()}, TLS, session=<{rng.getrandbits(48):x}>")
    else:
        log.syslog(t, "dovecot", log.next_pid(), f"auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser={user}@{DOMAIN} rhost={ip}")
        log.syslog(t, "dovecot", log.next_pid(), f"imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{user}@{DOMAIN}>, method=PLAIN, rip={ip}, lip=192.0.2.10, TLS, session=<{rng.getrandbits(48):x}>")


def webmail_login(log, t, rng, user=None, ip=None, ok=True):
    user = user or rng.choice(USERS)
    ip = ip or f"198.51.100.{100 + USERS.index(user)}"
    if ok:
        log.roundcube(t, f"Successful login for {user}@{DOMAIN} (ID: {USERS.index(user) + 1}) from {ip} in session {rng.getrandbits(64):016x} (error: 0)")
    else:
        log.roundcube(t, f"IMAP Error: Login failed for {user}@{DOMAIN} against localhost from {ip}. AUTHENTICATE PLAIN: Authentication failed. in /usr/share/roundcube/program/lib/Roundcube/rcube_imap.php on line 200 (POST /?_task=login&_action=login)")


def rbl_reject(log, t, rng):
    ip = rng.choice(SPAMMERS)
    pid = log.next_pid()
    log.syslog(t, "postfix/postscreen", pid, f"CONNECT from [{ip}]:{rng.randint(30000, 60000)} to [192.0.2.10]:25")
    log.syslog(t, "postfix/postscreen", pid, f"DNSBL rank 3 for [{ip}]:{rng.randint(30000, 60000)}")
    log.syslog(t, "postfix/postscreen", pid, f"NOQUEUE: reject: RCPT from [{ip}]:{rng.randint(30000, 60000)}: 550 5.7.1 Service unavailable; client [{ip}] blocked using zen.spamhaus.org; from=<promo@cheap.example>, to=<{rng.choice(USERS)}@{DOMAIN}>, proto=ESMTP, helo=<{ip}>")
    log.syslog(t, "postfix/postscreen", pid, f"DISCONNECT [{ip}]:{rng.randint(30000, 60000)}")


def activity(hour, weekday):
    """Relative activity: office hours, quiet nights."""
    base = 0.15 if hour < 7 or hour >= 21 else (1.0 if 8 <= hour < 18 else 0.5)
    return base * (0.4 if weekday >= 5 else 1.0)


def generate(seed):
    rng = random.Random(seed)
    log = Log(rng)
    for minute in range(DAYS * 24 * 60):
        t = START + dt.timedelta(minutes=minute)
        a = activity(t.hour, t.weekday())
        for event, rate in ((inbound, 0.16), (outbound, 0.08), (imap_login, 0.15), (webmail_login, 0.05),
                            (rbl_reject, 0.015)):
            if rng.random() < rate * a:
                event(log, t + dt.timedelta(seconds=rng.uniform(0, 59)), rng)
        if rng.random() < 0.006 * a:  # a mistyped password, then the right one
            s = t + dt.timedelta(seconds=rng.uniform(0, 50))
            user = rng.choice(USERS)
            if rng.random() < 0.5:
                imap_login(log, s, rng, user=user, ok=False)
                imap_login(log, later(s, rng, 3, 8), rng, user=user)
            else:
                webmail_login(log, s, rng, user=user, ok=False)
                webmail_login(log, later(s, rng, 3, 8), rng, user=user)

    # The last evening: what an admin wants the detector to show.
    attack = START + dt.timedelta(days=DAYS - 1, hours=22, minutes=13)
    for i in range(40):  # SASL brute force against submission
        s = attack + dt.timedelta(seconds=2 * i)
        pid = log.next_pid()
        log.syslog(s, "postfix/submission/smtpd", pid, "connect from unknown[203.0.113.250]")
        log.syslog(s, "postfix/submission/smtpd", pid, "warning: unknown[203.0.113.250]: SASL LOGIN authentication failed: UGFzc3dvcmQ6")
        log.syslog(later(s, rng, 0.1, 0.5), "postfix/submission/smtpd", pid, "disconnect from unknown[203.0.113.250] ehlo=1 auth=0/1 quit=1 commands=2/3")
    stuffing = START + dt.timedelta(days=DAYS - 1, hours=23, minutes=2)
    for i, user in enumerate(USERS * 2):  # webmail credential stuffing
        webmail_login(log, stuffing + dt.timedelta(seconds=3 * i), rng, user=user, ip="192.0.2.201", ok=False)
    crash = START + dt.timedelta(days=DAYS - 1, hours=23, minutes=41, seconds=7)
    log.syslog(crash, "postfix/cleanup", log.next_pid(), "fatal: open database /etc/postfix/header_checks.db: No such file or directory")
    log.syslog(later(crash, rng), "postfix/master", 1000, "warning: process /usr/lib/postfix/sbin/cleanup pid 9181 exit status 1")
    log.syslog(later(crash, rng, 1, 2), "postfix/master", 1000, "warning: /usr/lib/postfix/sbin/cleanup: bad command startup -- throttling")
    return log


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=20260302)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    args = ap.parse_args()
    log = generate(args.seed)
    for name, lines in (("mail.log", log.mail), ("roundcube.log", log.webmail)):
        lines.sort(key=lambda x: x[0])
        with open(os.path.join(args.out, name), "w") as f:
            for _, line in lines:
                f.write(line + "\n")
        print(f"{name}: {len(lines)} lines")


if __name__ == "__main__":
    main()
