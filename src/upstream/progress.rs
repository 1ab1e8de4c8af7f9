//! Routes upstream progress notifications to the call they belong to.
//!
//! rmcp picks the progress token when it sends a request, so a notification
//! can arrive before the forwarding code has subscribed. rmcp's own
//! dispatcher drops such early notifications; this one keeps a small buffer
//! per unclaimed token and hands it over on subscription.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::sync::Locked;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use tokio::sync::mpsc;

const MAX_UNCLAIMED_TOKENS: usize = 256;
const MAX_BUFFERED_PER_TOKEN: usize = 32;

enum Slot {
    Claimed(mpsc::UnboundedSender<ProgressNotificationParam>),
    Unclaimed(Vec<ProgressNotificationParam>),
}

#[derive(Clone, Default)]
pub struct Progress {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    slots: HashMap<ProgressToken, Slot>,
    unclaimed_order: VecDeque<ProgressToken>,
}

impl Progress {
    pub fn dispatch(&self, n: ProgressNotificationParam) {
        let mut st = self.inner.locked();
        match st.slots.get_mut(&n.progress_token) {
            Some(Slot::Claimed(tx)) => {
                let _ = tx.send(n);
            }
            Some(Slot::Unclaimed(buf)) => {
                if buf.len() < MAX_BUFFERED_PER_TOKEN {
                    buf.push(n);
                }
            }
            None => {
                if st.unclaimed_order.len() >= MAX_UNCLAIMED_TOKENS
                    && let Some(old) = st.unclaimed_order.pop_front()
                    && matches!(st.slots.get(&old), Some(Slot::Unclaimed(_)))
                {
                    st.slots.remove(&old);
                }
                st.unclaimed_order.push_back(n.progress_token.clone());
                st.slots.insert(n.progress_token.clone(), Slot::Unclaimed(vec![n]));
            }
        }
    }

    /// Receives every notification for `token`, including any that arrived
    /// before this call. Dropping the guard unsubscribes.
    pub fn subscribe(
        &self,
        token: ProgressToken,
    ) -> (Subscription, mpsc::UnboundedReceiver<ProgressNotificationParam>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.inner.locked();
        if let Some(Slot::Unclaimed(buf)) = st.slots.remove(&token) {
            for n in buf {
                let _ = tx.send(n);
            }
            st.unclaimed_order.retain(|t| *t != token);
        }
        st.slots.insert(token.clone(), Slot::Claimed(tx));
        (Subscription { progress: self.clone(), token }, rx)
    }
}

pub struct Subscription {
    progress: Progress,
    token: ProgressToken,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self.progress.inner.locked();
        st.slots.remove(&self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::NumberOrString;

    fn note(token: u32, p: f64) -> ProgressNotificationParam {
        ProgressNotificationParam::new(ProgressToken(NumberOrString::Number(token.into())), p)
    }

    #[test]
    fn notifications_before_subscription_are_delivered() {
        let progress = Progress::default();
        progress.dispatch(note(1, 1.0));
        let (_guard, mut rx) = progress.subscribe(ProgressToken(NumberOrString::Number(1)));
        progress.dispatch(note(1, 2.0));
        assert_eq!(rx.try_recv().unwrap().progress, 1.0);
        assert_eq!(rx.try_recv().unwrap().progress, 2.0);
    }

    #[test]
    fn unclaimed_tokens_are_bounded() {
        let progress = Progress::default();
        for i in 0..(MAX_UNCLAIMED_TOKENS as u32 + 10) {
            progress.dispatch(note(i, 1.0));
        }
        assert!(progress.inner.lock().unwrap().slots.len() <= MAX_UNCLAIMED_TOKENS);
    }
}
