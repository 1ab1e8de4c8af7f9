//! Which MCP era a peer speaks.

use rmcp::model::ProtocolVersion;

/// True for 2026-07-28 and later: stateless, no server-to-client requests,
/// questions asked with `input_required`. Dated versions compare as strings.
pub fn is_modern(version: &ProtocolVersion) -> bool {
    version.as_str() >= ProtocolVersion::V_2026_07_28.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_order_the_eras() {
        assert!(is_modern(&ProtocolVersion::V_2026_07_28));
        assert!(!is_modern(&ProtocolVersion::V_2025_11_25));
        assert!(!is_modern(&ProtocolVersion::V_2024_11_05));
    }
}
