//! Progress: weighted stages, sub-step progress inside a stage, subsets scaled to 100.
//!
//! ```
//! use queue_core::Stages;
//!
//! let book = Stages::new([
//!     ("text_extraction", 20), ("segmentation", 15), ("topic_analysis", 20),
//!     ("vocabulary", 20), ("audio_generation", 25),
//! ]).unwrap();
//! assert_eq!(book.percent("segmentation", 0.0), Some(20));
//! assert_eq!(book.percent("segmentation", 0.5), Some(27));
//! // A job type that runs two stages scales their weights to 100.
//! let vocab = book.subset(["text_extraction", "vocabulary"]).unwrap();
//! assert_eq!(vocab.percent("vocabulary", 0.0), Some(50));
//! assert_eq!(vocab.percent("vocabulary", 1.0), Some(100));
//! ```

use crate::{Error, Result};

/// Named stages with weights, in the order they run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stages {
    stages: Vec<(String, u32)>,
    total: u64,
}

impl Stages {
    /// Stages in run order with their weights. Names must be unique and the total weight
    /// positive; weights need not sum to 100 (they are scaled).
    pub fn new<I, S>(stages: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, u32)>,
        S: Into<String>,
    {
        let stages: Vec<(String, u32)> = stages.into_iter().map(|(n, w)| (n.into(), w)).collect();
        for (i, (name, _)) in stages.iter().enumerate() {
            if stages[..i].iter().any(|(other, _)| other == name) {
                return Err(Error::invalid(format!("stage `{name}` is listed twice")));
            }
        }
        let total: u64 = stages.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(Error::invalid("stages have no weight"));
        }
        Ok(Self { stages, total })
    }

    /// The stages named in `names`, in this model's order, scaled to 100.
    pub fn subset<I, S>(&self, names: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let wanted: Vec<String> = names.into_iter().map(|n| n.as_ref().to_owned()).collect();
        if let Some(unknown) = wanted.iter().find(|n| self.weight(n).is_none()) {
            return Err(Error::invalid(format!("unknown stage `{unknown}`")));
        }
        Self::new(
            self.stages
                .iter()
                .filter(|(name, _)| wanted.contains(name))
                .cloned(),
        )
    }

    /// Stage names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|(n, _)| n.as_str())
    }

    /// A stage's weight, if it is part of this model.
    pub fn weight(&self, stage: &str) -> Option<u32> {
        self.stages
            .iter()
            .find(|(n, _)| n == stage)
            .map(|(_, w)| *w)
    }

    /// Overall percent when `stage` is `fraction` (0.0-1.0, clamped) done and every
    /// earlier stage is done. Rounds down, so 100 means every stage is complete.
    pub fn percent(&self, stage: &str, fraction: f64) -> Option<u8> {
        let index = self.stages.iter().position(|(n, _)| n == stage)?;
        let before: u64 = self.stages[..index]
            .iter()
            .map(|(_, w)| u64::from(*w))
            .sum();
        let weight = f64::from(self.stages[index].1);
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let done = before as f64 + weight * fraction;
        let pct = (done * 100.0 / self.total as f64 + 1e-9).floor();
        Some(pct.clamp(0.0, 100.0) as u8)
    }
}

/// Refuses a progress above 100 (every backend's `Broker::progress` calls this).
pub fn check_progress(progress: u8) -> crate::Result<()> {
    if progress > 100 {
        return Err(Error::invalid(format!("progress {progress} is above 100")));
    }
    Ok(())
}

/// Keeps progress from going backwards within an attempt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Monotonic(u8);

impl Monotonic {
    /// Starts at `start`.
    pub fn new(start: u8) -> Self {
        Self(start.min(100))
    }

    /// Offers a value: returns the value to store, which is never below an earlier one.
    pub fn offer(&mut self, value: u8) -> u8 {
        self.0 = self.0.max(value.min(100));
        self.0
    }

    /// The current value.
    pub fn get(self) -> u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Stages {
        Stages::new([
            ("text_extraction", 20),
            ("segmentation", 15),
            ("topic_analysis", 20),
            ("vocabulary", 20),
            ("audio_generation", 25),
        ])
        .unwrap()
    }

    #[test]
    fn weights_accumulate_across_stages() {
        let s = book();
        assert_eq!(s.percent("text_extraction", 0.0), Some(0));
        assert_eq!(s.percent("text_extraction", 1.0), Some(20));
        assert_eq!(s.percent("topic_analysis", 0.0), Some(35));
        assert_eq!(s.percent("vocabulary", 0.0), Some(55));
        assert_eq!(s.percent("audio_generation", 0.0), Some(75));
        assert_eq!(s.percent("audio_generation", 1.0), Some(100));
        assert_eq!(s.percent("audio_generation", 7.0), Some(100));
        assert_eq!(s.percent("nope", 0.5), None);
    }

    #[test]
    fn subsets_scale_to_100_and_keep_order() {
        let s = book()
            .subset(["audio_generation", "text_extraction"])
            .unwrap();
        assert_eq!(
            s.names().collect::<Vec<_>>(),
            ["text_extraction", "audio_generation"]
        );
        assert_eq!(s.percent("text_extraction", 1.0), Some(44)); // 20 / 45
        assert_eq!(s.percent("audio_generation", 1.0), Some(100));
        assert!(book().subset(["nope"]).is_err());
        assert!(Stages::new([("a", 1), ("a", 2)]).is_err());
        assert!(Stages::new([("a", 0)]).is_err());
    }

    #[test]
    fn monotonic_never_goes_back() {
        let mut m = Monotonic::default();
        assert_eq!(m.offer(40), 40);
        assert_eq!(m.offer(10), 40);
        assert_eq!(m.offer(250), 100);
    }
}
