//! Content scans on both directions of a governed call: what agents write
//! into tool arguments and what tools (and resources) return to agents.
//!
//! A scan is a [`Detector`]: a plain function from text to [`Hit`]s, each
//! with a kind (`aws_access_key_id`, `email`, `instruction_override`...).
//! What happens to a hit is configuration, not the detector's business:
//! [`Settings`] say, per scan and direction, `block`, `mask`, `flag`, `log`
//! or `off`, layered from built-in defaults, the policy files' `[scans]`,
//! the manifest (upstream, then tool) and the deciding grant. The engine
//! (`walk`) applies them to JSON values, tool results and resource contents
//! and records every [`Finding`] (never the text it found) for the audit.
//!
//! Adding a scan: write its `find` function (with its table of cases), give
//! it a `Detector` impl and add it to [`DETECTORS`]. Its configuration key
//! (`[scans.<name>]`), the audit, `explain` and the pipeline take it from
//! there. `output` (size, content types, links) and `describe` (tool
//! descriptions at catalog time) are policies of another shape and have
//! their own entry points.

pub mod describe;
mod detector;
mod envelope;
mod finding;
pub mod injection;
pub mod output;
pub mod pii;
mod registry;
pub mod secrets;
pub mod settings;
mod walk;

pub use detector::{Action, Detector, Direction, Hit, entropy, pointer_segment};
pub use envelope::closing;
pub use finding::{CallScan, Finding};
pub use registry::{DETECTORS, detector};
pub use settings::{DescriptionAction, Layer, Place, Settings};
pub use walk::{arguments, contents, error_message, prompt, result};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_are_stable_within_a_call_and_numbered_per_kind() {
        let mut c = CallScan::new("t");
        assert_eq!(c.mask("EMAIL", "a@x.io"), "[EMAIL_1]");
        assert_eq!(c.mask("EMAIL", "b@x.io"), "[EMAIL_2]");
        assert_eq!(c.mask("PHONE", "+1 415 555 0100"), "[PHONE_1]");
        assert_eq!(c.mask("EMAIL", "a@x.io"), "[EMAIL_1]");
    }

    #[test]
    fn entropy_separates_random_from_repetitive() {
        assert!(entropy("q8Zr2LmX7vN4tKp9Wc3s") > 4.0);
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy("changemechangeme") < 3.0);
    }

    #[test]
    fn every_detector_has_a_unique_name_and_kinds() {
        let mut names: Vec<&str> = DETECTORS.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DETECTORS.len());
        for d in DETECTORS {
            assert!(!d.kinds().is_empty(), "{}", d.name());
            for dir in [Direction::Arguments, Direction::Results] {
                let a = d.default_action(dir);
                assert!(a == Action::Off || a == Action::Log || d.actions(dir).contains(&a), "{} {dir:?}", d.name());
            }
        }
    }
}
