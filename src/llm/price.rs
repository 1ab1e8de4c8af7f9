//! Token estimates and prices, in integers.
//!
//! The estimate is deliberately high (one token per three bytes of UTF-8,
//! plus per-message framing), because it is what a call holds before the
//! provider says what it used: a hold that is too low would let concurrent
//! calls spend past a budget. Settling uses the provider's own count.

use crate::money::Micros;

use super::chat::Chat;

/// Tokens a provider adds around each message (role markers).
const PER_MESSAGE: i64 = 4;
/// Tokens around the whole prompt (the reply's priming).
const PER_PROMPT: i64 = 8;

/// A high estimate of the tokens of `text`.
pub fn tokens_of(text: &str) -> i64 {
    i64::try_from(text.len().div_ceil(3)).unwrap_or(i64::MAX)
}

/// A high estimate of the input tokens of `chat`.
pub fn input_tokens(chat: &Chat) -> i64 {
    let system = chat.system.as_deref().map_or(0, |s| tokens_of(s) + PER_MESSAGE);
    chat.messages.iter().map(|m| tokens_of(&m.content) + PER_MESSAGE).fold(PER_PROMPT + system, i64::saturating_add)
}

/// The price of `tokens` at `per_mtok` per million, rounded up to the micro-unit.
pub fn cost(tokens: i64, per_mtok: Micros) -> i64 {
    let n = i128::from(tokens.max(0)) * i128::from(per_mtok.0.max(0));
    i64::try_from((n + 999_999) / 1_000_000).unwrap_or(i64::MAX)
}

/// Input and output tokens as used or estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
}

impl Usage {
    pub fn total(self) -> i64 {
        self.input.saturating_add(self.output)
    }

    pub fn cost(self, input_per_mtok: Micros, output_per_mtok: Micros) -> i64 {
        cost(self.input, input_per_mtok).saturating_add(cost(self.output, output_per_mtok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::chat::{Message, Role};

    #[test]
    fn cost_rounds_up_to_the_micro_unit() {
        // 1 token at 0.15 per million is 0.00000015: charged as 0.000001.
        assert_eq!(cost(1, Micros(150_000)), 1);
        assert_eq!(cost(1_000_000, Micros(150_000)), 150_000);
        assert_eq!(cost(0, Micros(150_000)), 0);
        assert_eq!(cost(2_000, Micros(3_000_000)), 6_000);
        assert_eq!(cost(i64::MAX, Micros(i64::MAX)), i64::MAX);
    }

    #[test]
    fn estimate_is_above_common_tokenizers() {
        // English runs near four characters per token; the estimate allows three.
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let chat = Chat {
            model: "m".into(),
            system: None,
            messages: vec![Message { role: Role::User, content: text.clone() }],
            max_tokens: 1,
            temperature: None,
            stop: vec![],
        };
        assert!(input_tokens(&chat) >= i64::try_from(text.len() / 4).unwrap() + PER_MESSAGE);
        assert_eq!(tokens_of(""), 0);
        assert_eq!(tokens_of("abcd"), 2);
    }
}
