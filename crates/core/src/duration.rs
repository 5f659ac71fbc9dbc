//! Durations as configured: a whole number and one unit (`ms`, `s`, `m`, `h`, `d`), e.g. `"15s"`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a duration: use a whole number and one unit (ms, s, m, h, d), e.g. \"15s\"")]
pub struct DurationError(String);

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let err = || DurationError(s.to_owned());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let n: u64 = num.parse().map_err(|_| err())?;
        let ms_per = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err()),
        };
        let ms = n.checked_mul(ms_per).ok_or_else(err)?;
        Ok(Self(Duration::from_millis(ms)))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, per) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(per) {
                return write!(f, "{}{unit}", ms / per);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        let p = |s: &str| s.parse::<HumanDuration>().map(|d| d.0);
        assert_eq!(p("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(p("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(p("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(p("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(p("5d"), Ok(Duration::from_secs(432_000)));
        for bad in [
            "",
            "s",
            "15",
            "1.5s",
            "15 s",
            "-1s",
            "3w",
            "99999999999999999999d",
        ] {
            assert!(p(bad).is_err(), "{bad} should be refused");
        }
        assert_eq!(HumanDuration(Duration::from_secs(300)).to_string(), "5m");
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }
}
