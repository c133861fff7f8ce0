//! Live logs kept in the database for logs that go to an object store: chunks while a try
//! runs, shipping once it has ended (never while a sensor's try goes on), back-off after a
//! failed upload, and nothing left once shipped.

use std::time::Duration;

use tern_core::TaskState;
use tern_store::live_logs::LiveLog;
use tern_store::{ManualClock, Store};
use tern_testkit::{dag, task};

use crate::suite::{fail, new_run, not_yet, ok, queues, sensor_task, setup, LEASE};

const HOLD: Duration = Duration::from_secs(60);

pub async fn live_logs_grow_while_tries_run_and_ship_once_they_end(store: Store) {
    let clock = ManualClock::at(chrono::Utc::now());
    let store = store.with_clock(clock.clone());
    let mut work = task("work", &["wait"]);
    work.retries = 1;
    work.retry_delay_ms = 0;
    let v = setup(
        &store,
        dag("lg", vec![sensor_task("wait", &[], 3_600_000, false), work]),
    )
    .await;
    let (run, _) = store.create_run(&new_run("lg", "r1"), v).await.unwrap();

    // First poke: chunks in order, a resent chunk written once, NUL made storable.
    let poke1 = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    let path = store
        .log_path_of_attempt(poke1.ti.id, &poke1.attempt)
        .await
        .unwrap()
        .unwrap();
    for (seq, text) in [(0, "a\n"), (0, "a\n"), (1, "bé\0\n")] {
        assert!(store
            .append_log_chunk(poke1.ti.id, &poke1.attempt, seq, text)
            .await
            .unwrap());
    }
    let all = store.live_log_from(&path, 0).await.unwrap();
    assert_eq!(
        all,
        LiveLog {
            live: true,
            chunks: vec![(0, "a\n".into()), (2, "bé\u{FFFD}\n".into())]
        }
    );
    assert_eq!(store.live_log_len(&path).await.unwrap(), Some(9));
    // From an offset: only the chunks that end after it.
    assert_eq!(store.live_log_from(&path, 2).await.unwrap().chunks.len(), 1);
    assert!(store
        .live_log_from(&path, 9)
        .await
        .unwrap()
        .chunks
        .is_empty());
    assert!(store.live_log_from(&path, 9).await.unwrap().live);
    assert!(
        store.claim_logs_to_ship(10, HOLD).await.unwrap().is_empty(),
        "the try runs"
    );

    // Between pokes the sensor's try goes on: its log stays, and grows on the next poke.
    store
        .complete(poke1.ti.id, &poke1.attempt, &not_yet(10))
        .await
        .unwrap();
    assert!(
        store.claim_logs_to_ship(10, HOLD).await.unwrap().is_empty(),
        "rescheduled"
    );
    clock.advance(Duration::from_millis(20));
    assert!(store.promote_and_admit().await.unwrap());
    assert!(
        store.claim_logs_to_ship(10, HOLD).await.unwrap().is_empty(),
        "queued poke"
    );
    let poke2 = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(poke2.ti.try_number, 1);
    assert!(
        !store
            .append_log_chunk(poke1.ti.id, &poke1.attempt, 2, "late\n")
            .await
            .unwrap(),
        "an ended attempt writes nothing"
    );
    assert!(store
        .append_log_chunk(poke2.ti.id, &poke2.attempt, 0, "c\n")
        .await
        .unwrap());
    assert_eq!(store.live_log_len(&path).await.unwrap(), Some(11));
    store
        .complete(poke2.ti.id, &poke2.attempt, &ok())
        .await
        .unwrap();

    // Ended: one server claims it (a second claim within the hold gets nothing).
    let claimed = store.claim_logs_to_ship(10, HOLD).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].path.as_str(), claimed[0].failures),
        (path.as_str(), 0)
    );
    assert!(store.claim_logs_to_ship(10, HOLD).await.unwrap().is_empty());
    let whole: String = store
        .live_log_from(&path, 0)
        .await
        .unwrap()
        .chunks
        .into_iter()
        .map(|(_, text)| text)
        .collect();
    assert_eq!(whole, "a\nbé\u{FFFD}\nc\n");

    // The store was down: the log stays, readable, and is tried again after the wait.
    store
        .log_ship_failed(&path, Duration::from_secs(5), "store down")
        .await
        .unwrap();
    assert_eq!(
        store.logs_waiting_to_ship().await.unwrap(),
        (1, Some("store down".into()))
    );
    assert!(store.claim_logs_to_ship(10, HOLD).await.unwrap().is_empty());
    assert!(store.live_log_from(&path, 0).await.unwrap().live);
    clock.advance(Duration::from_secs(5));
    let again = store.claim_logs_to_ship(10, HOLD).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].failures, 1);

    // Shipped: nothing of it is left in the database.
    store.log_shipped(&path, 11).await.unwrap();
    assert_eq!(
        store.live_log_from(&path, 0).await.unwrap(),
        LiveLog {
            live: false,
            chunks: vec![]
        }
    );
    assert_eq!(store.live_log_len(&path).await.unwrap(), None);
    assert_eq!(store.logs_waiting_to_ship().await.unwrap(), (0, None));

    // A failed try waiting for its retry has ended: its log ships.
    let w = store.claim(&queues(), "w", LEASE).await.unwrap().unwrap();
    assert_eq!(w.ti.task_id, "work");
    assert!(store
        .append_log_chunk(w.ti.id, &w.attempt, 0, "boom\n")
        .await
        .unwrap());
    store
        .complete(w.ti.id, &w.attempt, &fail(true))
        .await
        .unwrap();
    let ti = store.task_instance(run.pk, "work").await.unwrap();
    assert!(
        matches!(
            ti.state,
            TaskState::UpForRetry | TaskState::Scheduled | TaskState::Queued
        ),
        "{:?}",
        ti.state
    );
    let work_path = store
        .log_path_of_attempt(w.ti.id, &w.attempt)
        .await
        .unwrap()
        .unwrap();
    let claimed = store.claim_logs_to_ship(10, HOLD).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].path, work_path);
}

/// On PostgreSQL, work queued by any connection is heard at once by a listener, with its
/// queue; a running task's heartbeat says nothing. SQLite has no listener.
pub async fn queued_work_is_heard_by_listeners_on_postgres(store: Store) {
    use tern_store::listen::Heard;
    let Some(mut listener) = store.listen_for_queued().await.unwrap() else {
        assert_eq!(store.backend(), tern_store::Backend::Sqlite);
        return;
    };
    let mut t = task("t", &[]);
    t.queue = "site:lab".into();
    let v = setup(&store, dag("heard", vec![t])).await;
    store.create_run(&new_run("heard", "r1"), v).await.unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(10), listener.next())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(heard, Heard::Queued(vec!["site:lab".into()]));
    let c = store
        .claim(&["site:lab".to_string()], "w", LEASE)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .heartbeat(c.ti.id, &c.attempt, "w", LEASE)
        .await
        .unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), listener.next())
            .await
            .is_err(),
        "claims and heartbeats queue nothing"
    );
}
