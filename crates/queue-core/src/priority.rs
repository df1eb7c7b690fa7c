//! Job priority: strict order between levels, FIFO within one.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::Error;

/// How urgent a job is. `High` jobs always run before `Normal`, `Normal` before `Low`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Admin re-processing, urgent work.
    High,
    /// Standard work (the default).
    #[default]
    Normal,
    /// Bulk or batch work.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Self::High, Self::Normal, Self::Low];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }

    /// The band index: 0 runs first.
    pub fn band(self) -> u8 {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }

    /// The priority of a band index.
    pub fn from_band(band: u8) -> Option<Self> {
        Self::ALL.get(usize::from(band)).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Self::High),
            "normal" => Ok(Self::Normal),
            "low" => Ok(Self::Low),
            _ => Err(Error::invalid(format!(
                "unknown priority `{s}` (expected high, normal or low)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_order_and_parse() {
        assert!(Priority::High.band() < Priority::Normal.band());
        for p in Priority::ALL {
            assert_eq!(Priority::from_band(p.band()), Some(p));
            assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        }
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(Priority::default(), Priority::Normal);
    }
}
