//! Background work repeated on a fixed period until shutdown (sweepers,
//! expiry, feeds). A run that overruns delays the next one instead of
//! bunching them up.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `work` every `period`, the first time at once, until `shutdown`.
/// `work` makes each run's future (owning what it uses, so the loop can be
/// spawned).
pub async fn every<F>(period: Duration, shutdown: CancellationToken, mut work: impl FnMut() -> F)
where
    F: std::future::Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        work().await;
    }
}
