//! Retry policy: how long a failed try waits before the next one.

use std::time::Duration;

use crate::spec::TaskSpec;

/// Airflow's ceiling for exponential back-off when a task sets none.
pub const DEFAULT_MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Delay before the try after `failed_try` (1-based: the first try is 1).
///
/// Fixed `retry_delay`, or with exponential back-off `retry_delay * 2^(failed_try - 1)`, capped
/// at `max_retry_delay`.
pub fn retry_delay(task: &TaskSpec, failed_try: u32) -> Duration {
    let base = Duration::from_millis(task.retry_delay_ms);
    if !task.retry_exponential_backoff {
        return base;
    }
    let cap = task
        .max_retry_delay_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_MAX_RETRY_DELAY);
    let exp = failed_try.saturating_sub(1).min(30);
    base.saturating_mul(1u32 << exp).min(cap)
}

/// Whether a task that failed on try `try_number` (1-based) gets another try.
pub fn has_tries_left(task: &TaskSpec, try_number: u32) -> bool {
    try_number <= task.retries
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TaskKind;

    #[test]
    fn fixed_and_exponential_delays() {
        let mut t = TaskSpec::new("t", TaskKind::Empty);
        t.retries = 3;
        t.retry_delay_ms = 10_000;
        assert_eq!(retry_delay(&t, 1), Duration::from_secs(10));
        assert_eq!(retry_delay(&t, 3), Duration::from_secs(10));
        t.retry_exponential_backoff = true;
        assert_eq!(retry_delay(&t, 1), Duration::from_secs(10));
        assert_eq!(retry_delay(&t, 2), Duration::from_secs(20));
        assert_eq!(retry_delay(&t, 3), Duration::from_secs(40));
        t.max_retry_delay_ms = Some(25_000);
        assert_eq!(retry_delay(&t, 3), Duration::from_secs(25));
        assert!(has_tries_left(&t, 3));
        assert!(!has_tries_left(&t, 4));
    }
}
