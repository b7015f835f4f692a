//! Lines where a Postfix or Dovecot process says it failed: `fatal:` (the
//! process stops) and `panic:` (a bug stopped it). pflogsumm lists every one
//! of them, and an admin wants to hear of every one, however often the
//! training window had them: a server whose delivery to Dovecot fails every
//! few hours has trained on that failure, and it is still mail not
//! delivered. So the severity of such a line is at least a configured floor,
//! whatever the model scores (`anomaly.failures`).

use pf_config::Failures;
use pf_record::severity::{severity_rank, severity_word};
use pf_record::view::lenient_str;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;

/// Postfix's commands: their failures are printed to whoever ran them as
/// well (an admin at the console, a script's cron mail), unlike a daemon's.
const COMMANDS: &[&str] = &[
    "mailq",
    "newaliases",
    "postalias",
    "postcat",
    "postconf",
    "postdrop",
    "postfix",
    "postfix-script",
    "postfix-wrapper",
    "postkick",
    "postlock",
    "postlog",
    "postmap",
    "postmulti",
    "postqueue",
    "postsuper",
    "post-install",
    "sendmail",
];

/// Who failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A daemon (postfix/smtpd, postfix/master, dovecot, ...): mail stops
    /// flowing and nobody sees it but the log.
    Daemon,
    /// One of Postfix's commands (sendmail, postfix, postqueue, ...).
    Command,
}

impl Failure {
    /// How a record reports that it failed: its `program` and
    /// `fields.level` (Postfix writes `fatal`, Dovecot `Fatal`).
    pub fn of(program: Option<&str>, level: Option<&str>) -> Option<Failure> {
        let level = level?;
        if !(level.eq_ignore_ascii_case("fatal") || level.eq_ignore_ascii_case("panic")) {
            return None;
        }
        let program = program.unwrap_or_default();
        let name = program.rsplit('/').next().unwrap_or(program);
        Some(match COMMANDS.contains(&name) {
            true => Failure::Command,
            false => Failure::Daemon,
        })
    }

    /// What `detection.severity_floor` says when the floor decided.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Daemon => "daemon_failure",
            Failure::Command => "command_failure",
        }
    }
}

/// The least severity of each failure, from `anomaly.failures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Floors {
    pub daemon: &'static str,
    pub command: &'static str,
}

impl From<&Failures> for Floors {
    fn from(config: &Failures) -> Floors {
        Floors {
            daemon: severity_word(&config.daemon),
            command: severity_word(&config.command),
        }
    }
}

impl Floors {
    /// The severity of a line the model graded `graded`, and the failure
    /// when the floor raised it.
    pub fn apply(
        &self,
        failure: Option<Failure>,
        graded: &'static str,
    ) -> (&'static str, Option<Failure>) {
        let Some(failure) = failure else {
            return (graded, None);
        };
        let floor = match failure {
            Failure::Daemon => self.daemon,
            Failure::Command => self.command,
        };
        match severity_rank(floor) > severity_rank(graded) {
            true => (floor, Some(failure)),
            false => (graded, None),
        }
    }
}

/// `fields.level`, read from whatever `fields` is (a record whose `fields`
/// is not an object is still scored, as before).
pub(crate) struct LevelOf<'a>(pub Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for LevelOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LevelVisitor)
    }
}

/// A string read leniently: anything else is `None`.
#[derive(Deserialize)]
pub(crate) struct LenientStr<'a>(
    #[serde(borrow, deserialize_with = "lenient_str")] pub Option<Cow<'a, str>>,
);

struct LevelVisitor;

impl<'de> Visitor<'de> for LevelVisitor {
    type Value = LevelOf<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut level = None;
        while let Some(pf_model::Key(key)) = map.next_key::<pf_model::Key<'de>>()? {
            match key.as_ref() {
                "level" => level = map.next_value::<LenientStr>()?.0,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(LevelOf(level))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LevelOf(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(LevelOf(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(LevelOf(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(LevelOf(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(LevelOf(None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(LevelOf(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(LevelOf(None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_and_commands_are_told_apart() {
        let of = |p, l| Failure::of(Some(p), Some(l));
        assert_eq!(of("postfix/smtpd", "fatal"), Some(Failure::Daemon));
        assert_eq!(of("postfix/master", "panic"), Some(Failure::Daemon));
        assert_eq!(of("dovecot", "Fatal"), Some(Failure::Daemon));
        assert_eq!(of("postfix/sendmail", "fatal"), Some(Failure::Command));
        assert_eq!(
            of("postfix/postfix-script", "fatal"),
            Some(Failure::Command)
        );
        assert_eq!(of("postfix", "fatal"), Some(Failure::Command));
        assert_eq!(of("postfix/smtpd", "warning"), None);
        assert_eq!(of("postfix/smtpd", "error"), None);
        assert_eq!(Failure::of(Some("postfix/smtpd"), None), None);
    }

    #[test]
    fn the_floor_only_raises() {
        let floors = Floors {
            daemon: "high",
            command: "low",
        };
        let daemon = Some(Failure::Daemon);
        assert_eq!(floors.apply(daemon, "none"), ("high", daemon));
        assert_eq!(floors.apply(daemon, "medium"), ("high", daemon));
        assert_eq!(floors.apply(daemon, "high"), ("high", None));
        let command = Some(Failure::Command);
        assert_eq!(floors.apply(command, "none"), ("low", command));
        assert_eq!(floors.apply(command, "medium"), ("medium", None));
        assert_eq!(floors.apply(None, "none"), ("none", None));
        let off = Floors {
            daemon: "none",
            command: "none",
        };
        assert_eq!(off.apply(daemon, "none"), ("none", None));
    }
}
