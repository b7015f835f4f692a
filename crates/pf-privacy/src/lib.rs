//! Keyed pseudonyms for the personal data in pf records.
//!
//! Detection needs the real values (a user's usual networks, the /24 of an
//! address), so records are pseudonymised only on their way out, where
//! people read them: the output files, alerts and the tuning report. The
//! same value always gives the same pseudonym under the same key, so an
//! admin can still follow one user or address through the outputs; without
//! the key the pseudonym cannot be reversed or recomputed (HMAC-SHA-256).
//!
//! | value | pseudonym |
//! |---|---|
//! | user name | `u-3f9a0c1d2e4b` |
//! | e-mail address | `u-3f9a0c1d2e4b@d-77a0b1c2d3e4.invalid` (local part and domain apart, so a domain's mail still groups) |
//! | IP address | `ip-5be0c6a1f2d3` (loopback and unspecified kept) |
//! | client host name, HELO | `h-0c1d2e3f4a5b.invalid` (`unknown` kept) |
//!
//! Values are lower-cased first, so `Bob@Example.org` and `bob@example.org`
//! are one person.

use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use regex::Regex;
use serde_json::{Map, Value};
use sha2::Sha256;
use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;

/// Fewer key bytes than this are refused: a short key can be guessed.
pub const MIN_KEY_BYTES: usize = 16;
/// Hex digits kept of each HMAC (48 bits: collisions only past millions of values).
const DIGITS: usize = 12;

/// `fields` keys holding a user name.
const USER_KEYS: [&str; 2] = ["user", "sasl_username"];
/// `fields` keys holding an e-mail address.
const EMAIL_KEYS: [&str; 4] = ["from", "to", "orig_to", "sasl_sender"];
/// `fields` keys holding a client's address.
const IP_KEYS: [&str; 2] = ["client_ip", "proxy_ip"];
/// `fields` keys holding a client's host name.
const HOST_KEYS: [&str; 2] = ["client_host", "helo"];

pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
    email: Regex,
    ipv4: Regex,
    ipv6: Regex,
}

/// What a pseudonym stands for; hashed in, so a user and a host of the
/// same name get different pseudonyms.
#[derive(Clone, Copy)]
enum Class {
    User = 1,
    Domain = 2,
    Ip = 3,
    Host = 4,
}

impl Pseudonymiser {
    pub fn new(key: &[u8]) -> Result<Pseudonymiser> {
        if key.len() < MIN_KEY_BYTES {
            bail!(
                "the pseudonymisation key has {} bytes; at least {MIN_KEY_BYTES} are needed \
                 (make one with `head -c 32 /dev/urandom > FILE`)",
                key.len()
            );
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).context("HMAC key")?;
        Ok(Pseudonymiser {
            mac,
            email: Regex::new(
                r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
            )
            .expect("valid regex"),
            ipv4: Regex::new(r"\b\d{1,3}(?:\.\d{1,3}){3}\b").expect("valid regex"),
            ipv6: Regex::new(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.\d{1,3}){0,3}")
                .expect("valid regex"),
        })
    }

    /// Reads the key from `path`, which must not be readable by every user.
    pub fn from_key_file(path: &Path) -> Result<Pseudonymiser> {
        use std::os::unix::fs::MetadataExt;
        let key = std::fs::read(path)
            .with_context(|| format!("cannot read the pseudonymisation key {}", path.display()))?;
        let mode = std::fs::metadata(path)?.mode();
        if mode & 0o004 != 0 {
            bail!(
                "the pseudonymisation key {} is readable by every user (mode {:04o}): run `chmod 0640 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            );
        }
        Pseudonymiser::new(&key).with_context(|| path.display().to_string())
    }

    fn digest(&self, class: Class, value: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(&[class as u8]);
        mac.update(value.to_lowercase().as_bytes());
        let bytes = mac.finalize().into_bytes();
        let mut hex = String::with_capacity(DIGITS);
        for b in bytes.iter().take(DIGITS / 2) {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }

    pub fn user(&self, name: &str) -> String {
        format!("u-{}", self.digest(Class::User, name))
    }

    /// An address's local part and domain apart; a value without `@` is a user name.
    pub fn email(&self, address: &str) -> String {
        match address.rsplit_once('@') {
            Some((local, domain)) if !domain.is_empty() => format!(
                "{}@d-{}.invalid",
                self.user(local),
                self.digest(Class::Domain, domain)
            ),
            _ if address.is_empty() => String::new(),
            _ => self.user(address),
        }
    }

    /// Loopback and unspecified addresses say nothing about a person and are kept.
    pub fn ip(&self, ip: IpAddr) -> String {
        if ip.is_loopback() || ip.is_unspecified() {
            ip.to_string()
        } else {
            format!("ip-{}", self.digest(Class::Ip, &ip.to_string()))
        }
    }

    pub fn host(&self, name: &str) -> String {
        if name.eq_ignore_ascii_case("unknown") || name.is_empty() {
            name.to_string()
        } else {
            format!("h-{}.invalid", self.digest(Class::Host, name))
        }
    }

    /// Replaces e-mail addresses, IP addresses and the given literal values
    /// (user and host names known from the record's fields, with their
    /// pseudonyms) wherever they stand as whole tokens in free text.
    pub fn text<'a>(&self, text: &'a str, literals: &[(String, String)]) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        if text.contains('@') {
            if let Cow::Owned(s) = self.email.replace_all(&out, |c: &regex::Captures<'_>| {
                // `sasl_username=bob@example.org`: the key is not part of the address.
                let m = &c[0];
                match m.split_once('=') {
                    Some((key, address))
                        if !key.is_empty()
                            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                    {
                        format!("{key}={}", self.email(address))
                    }
                    _ => self.email(m),
                }
            }) {
                out = Cow::Owned(s);
            }
        }
        if let Cow::Owned(s) = self.ipv4.replace_all(&out, |c: &regex::Captures<'_>| {
            match c[0].parse::<IpAddr>() {
                Ok(ip) => self.ip(ip),
                Err(_) => c[0].to_string(),
            }
        }) {
            out = Cow::Owned(s);
        }
        if out.contains("::") || out.matches(':').count() >= 7 {
            if let Cow::Owned(s) = self.ipv6.replace_all(&out, |c: &regex::Captures<'_>| {
                match c[0].parse::<IpAddr>() {
                    Ok(ip @ IpAddr::V6(_)) => self.ip(ip),
                    _ => c[0].to_string(),
                }
            }) {
                out = Cow::Owned(s);
            }
        }
        for (value, pseudonym) in literals {
            if let Some(replaced) = replace_tokens(&out, value, pseudonym) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// Pseudonymises a record in place: the personal `fields` by what they
    /// hold, every other string of `fields` and `raw` as free text.
    /// Timestamps, kinds, features and detections are left alone.
    pub fn record(&self, record: &mut Map<String, Value>) {
        let mut literals: Vec<(String, String)> = Vec::new();
        if let Some(Value::Object(fields)) = record.get_mut("fields") {
            for (key, value) in fields.iter_mut() {
                let Value::String(s) = value else { continue };
                let key = key.as_str();
                let pseudonym = if USER_KEYS.contains(&key) && !s.contains('@') {
                    self.user(s)
                } else if USER_KEYS.contains(&key) || EMAIL_KEYS.contains(&key) {
                    self.email(s)
                } else if IP_KEYS.contains(&key) {
                    match s.parse::<IpAddr>() {
                        Ok(ip) => self.ip(ip),
                        Err(_) => self.text(s, &[]).into_owned(),
                    }
                } else if HOST_KEYS.contains(&key) {
                    self.host(s)
                } else {
                    continue;
                };
                // Addresses and IPs are found in text anyway; names need listing.
                if (USER_KEYS.contains(&key) || HOST_KEYS.contains(&key)) && *s != pseudonym {
                    literals.push((s.clone(), pseudonym.clone()));
                }
                *s = pseudonym;
            }
            // Longer names first, so a name inside a longer one is not replaced first.
            literals.sort_by_key(|l| std::cmp::Reverse(l.0.len()));
            for (key, value) in fields.iter_mut() {
                let key = key.as_str();
                if USER_KEYS.contains(&key)
                    || EMAIL_KEYS.contains(&key)
                    || IP_KEYS.contains(&key)
                    || HOST_KEYS.contains(&key)
                {
                    continue;
                }
                self.value(value, &literals);
            }
        }
        if let Some(raw) = record.get_mut("raw") {
            self.value(raw, &literals);
        }
    }

    fn value(&self, value: &mut Value, literals: &[(String, String)]) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(new) = self.text(s, literals) {
                    *s = new;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v, literals)),
            Value::Object(map) => map.values_mut().for_each(|v| self.value(v, literals)),
            _ => {}
        }
    }

    /// [`record`](Self::record) for one NDJSON line; text that is not a
    /// JSON object comes back unchanged.
    pub fn record_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match serde_json::from_str::<Map<String, Value>>(text) {
            Ok(mut record) => {
                self.record(&mut record);
                Cow::Owned(Value::Object(record).to_string())
            }
            Err(_) => Cow::Borrowed(text),
        }
    }
}

/// Replaces `value` in `text` where it stands as a whole token (not inside
/// a longer name or address); `None` when it does not occur.
fn replace_tokens(text: &str, value: &str, pseudonym: &str) -> Option<String> {
    if value.is_empty() || !text.contains(value) {
        return None;
    }
    let part_of_name = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut replaced = false;
    while let Some(at) = rest.find(value) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + value.len()..].chars().next();
        out.push_str(&rest[..at]);
        let whole = !before.is_some_and(part_of_name)
            && !after.is_some_and(|c| part_of_name(c) && c != '.');
        if whole {
            out.push_str(pseudonym);
            replaced = true;
        } else {
            out.push_str(value);
        }
        rest = &rest[at + value.len()..];
    }
    out.push_str(rest);
    replaced.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p() -> Pseudonymiser {
        Pseudonymiser::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    #[test]
    fn stable_keyed_and_case_blind() {
        let a = p();
        let b = Pseudonymiser::new(b"another key, also long enough!!").unwrap();
        assert_eq!(a.user("bob"), a.user("Bob"));
        assert_ne!(a.user("bob"), b.user("bob"), "the key matters");
        assert_ne!(a.user("bob"), a.host("bob"), "classes are apart");
        assert!(a.user("bob").starts_with("u-") && a.user("bob").len() == 2 + DIGITS);
        let mail = a.email("Bob@Example.org");
        assert_eq!(mail, a.email("bob@example.org"));
        assert!(
            mail.starts_with(&a.user("bob")) && mail.ends_with(".invalid"),
            "{mail}"
        );
        assert_eq!(
            a.email("alice@example.org").split('@').nth(1),
            mail.split('@').nth(1),
            "one domain, one pseudonym"
        );
        assert_eq!(a.ip("127.0.0.1".parse().unwrap()), "127.0.0.1");
        assert!(a.ip("192.0.2.7".parse().unwrap()).starts_with("ip-"));
        assert_eq!(a.host("unknown"), "unknown");
        assert!(Pseudonymiser::new(b"short").is_err());
    }

    #[test]
    fn a_record_keeps_nothing_personal() {
        let a = p();
        let mut r = json!({
            "raw": "Mar  2 08:15:03 mx1 postfix/smtpd[1]: 4BCD: client=home.bob.example[192.0.2.7], sasl_method=PLAIN, sasl_username=bob@example.org",
            "ts": "2026-03-02T08:15:03+00:00",
            "kind": "smtpd.client",
            "fields": {"queue_id": "4BCD", "client_host": "home.bob.example", "client_ip": "192.0.2.7",
                       "sasl_username": "bob@example.org", "message": "from 2001:db8::1 and 10.1.2.3: user bob@example.org"},
            "features": {"hour": 8}
        });
        let map = r.as_object_mut().unwrap();
        a.record(map);
        let text = Value::Object(map.clone()).to_string();
        for secret in ["bob", "192.0.2.7", "2001:db8::1", "10.1.2.3", "example.org"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert!(text.contains("08:15:03"), "times are not addresses: {text}");
        assert!(text.contains("4BCD") && text.contains("\"hour\":8"));
        assert_eq!(
            map["fields"]["client_ip"],
            a.ip("192.0.2.7".parse().unwrap())
        );
        assert!(map["raw"]
            .as_str()
            .unwrap()
            .contains(&format!("sasl_username={}", a.email("bob@example.org"))));
        assert_eq!(map["fields"]["sasl_username"], a.email("bob@example.org"));
    }

    #[test]
    fn dovecot_and_roundcube_user_names_in_text() {
        let a = p();
        let mut r = json!({
            "raw": "imap-login: Login: user=<bob>, method=PLAIN, rip=198.51.100.4, lip=127.0.0.1, bobby=1",
            "fields": {"user": "bob", "client_ip": "198.51.100.4"}
        });
        a.record(r.as_object_mut().unwrap());
        let raw = r["raw"].as_str().unwrap();
        assert!(raw.contains(&format!("user=<{}>", a.user("bob"))), "{raw}");
        assert!(
            raw.contains("bobby=1"),
            "a longer word is not the name: {raw}"
        );
        assert!(raw.contains("lip=127.0.0.1"), "{raw}");
        assert!(!raw.contains("198.51.100.4"), "{raw}");
    }
}
