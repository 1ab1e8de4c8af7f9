//! Every text scan tollgate runs, in order.

use super::detector::Detector;
use super::{injection, pii, secrets};

/// Every text scan, in the order they run (and are listed by `explain`).
pub static DETECTORS: [&dyn Detector; 3] = [&secrets::Secrets, &pii::Pii, &injection::Injection];

/// The detector configured under `name`.
pub fn detector(name: &str) -> Option<(usize, &'static dyn Detector)> {
    DETECTORS.iter().enumerate().find(|(_, d)| d.name() == name).map(|(i, d)| (i, *d))
}
