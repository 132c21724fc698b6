//! The Stalwart release whose bus format agora speaks (`[stalwart] version`).

use std::fmt;
use std::str::FromStr;

/// A Stalwart release, `0.15.x` or `0.16.x`: the bus formats agora knows. Ordered, so that features that appeared
/// inside 0.16.x can be gated with a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StalwartVersion {
    /// Always 0 for the known releases.
    pub major: u16,
    /// 15 or 16.
    pub minor: u16,
    /// The patch release; `0.16` alone means `0.16.0`, the oldest (and so the most conservative) 0.16 format.
    pub patch: u16,
}

impl StalwartVersion {
    /// Stalwart 0.15.x (tags 0-8 of the 0.15 catalogue; the codec did not change from 0.15.0 to 0.15.5).
    pub const fn v0_15(patch: u16) -> Self {
        StalwartVersion {
            major: 0,
            minor: 15,
            patch,
        }
    }

    /// Stalwart 0.16.x.
    pub const fn v0_16(patch: u16) -> Self {
        StalwartVersion {
            major: 0,
            minor: 16,
            patch,
        }
    }

    /// True for the 0.15 catalogue, false for 0.16.
    pub const fn is_0_15(self) -> bool {
        self.minor == 15
    }

    /// Whether this release decodes the `EmailNegative` cache marker (10): from 0.16.10.
    pub const fn has_email_negative(self) -> bool {
        self.minor == 16 && self.patch >= 10
    }

    /// Whether this release decodes the `QueueRefresh` event (tag 12): from 0.16.12.
    pub const fn has_queue_refresh(self) -> bool {
        self.minor == 16 && self.patch >= 12
    }

    /// Whether this release decodes the `DomainNegative` cache marker (11): from 0.16.18.
    pub const fn has_domain_negative(self) -> bool {
        self.minor == 16 && self.patch >= 18
    }
}

impl fmt::Display for StalwartVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A `[stalwart] version` (or `--stalwart`) value that is not a release agora can speak to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not a Stalwart release agora speaks: expected 0.15.x or 0.16.x, e.g. \"0.16.18\" or \"0.15\"")]
pub struct VersionError {
    /// The text given.
    pub given: String,
}

impl FromStr for StalwartVersion {
    type Err = VersionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || VersionError {
            given: text.to_string(),
        };
        let trimmed = text.trim().strip_prefix('v').unwrap_or(text.trim());
        let mut parts = trimmed.split('.');
        let mut number = || -> Result<Option<u16>, VersionError> {
            match parts.next() {
                None => Ok(None),
                Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map(Some).map_err(|_| error())
                }
                Some(_) => Err(error()),
            }
        };
        let (major, minor, patch) = (number()?, number()?, number()?);
        if number()?.is_some() {
            return Err(error());
        }
        match (major, minor, patch) {
            (Some(0), Some(minor @ (15 | 16)), patch) => Ok(StalwartVersion {
                major: 0,
                minor,
                patch: patch.unwrap_or(0),
            }),
            _ => Err(error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_gate_the_0_16_changes() {
        let v: StalwartVersion = "0.16.18".parse().expect("valid");
        assert_eq!(v, StalwartVersion::v0_16(18));
        assert!(v.has_domain_negative() && v.has_queue_refresh() && v.has_email_negative());
        let v11: StalwartVersion = "0.16.11".parse().expect("valid");
        assert!(v11.has_email_negative() && !v11.has_queue_refresh() && !v11.has_domain_negative());
        assert_eq!("0.15".parse::<StalwartVersion>(), Ok(StalwartVersion::v0_15(0)));
        assert!("v0.15.5".parse::<StalwartVersion>().expect("valid").is_0_15());
        assert_eq!("0.16".parse::<StalwartVersion>().expect("valid").to_string(), "0.16.0");
        for bad in ["", "0.14.2", "1.0", "0.16.x", "0.16.1.2", "0..16", "0.17"] {
            assert!(bad.parse::<StalwartVersion>().is_err(), "{bad:?}");
        }
    }
}
