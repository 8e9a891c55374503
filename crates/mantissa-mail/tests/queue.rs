//! The outbound queue against a real SMTP peer on loopback (the testkit's
//! sink, told to answer 451 or 550): what `send` accepts is in the site
//! store at once, delivered exactly once after temporary refusals, given up
//! at once on a permanent one, and each attempt is recorded on the message.

use std::time::Duration;

use mantissa_mail::{
    MailError, MailQueue, MailState, Mailer, OutgoingMail, QueueRun, QueueSettings, QueuedMail,
    SmtpRelay, admin,
};
use mantissa_store::{Site, Timestamp};
use mantissa_testkit::SmtpSink;

fn mail(to: &str, subject: &str) -> OutgoingMail {
    OutgoingMail {
        from: "site@example.org".into(),
        to: vec![to.into()],
        subject: subject.into(),
        text: format!("about {subject}\n"),
        html: None,
        unsubscribe: None,
    }
}

fn settings() -> QueueSettings {
    QueueSettings {
        first_retry: Duration::from_secs(60),
        ..QueueSettings::default()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    site: Site,
    queue: MailQueue,
}

fn setup(port: u16, settings: QueueSettings) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let site = mantissa_store::testing::open_site(&dir.path().join("site")).unwrap();
    let queue = MailQueue::new(
        site.clone(),
        SmtpRelay::new("127.0.0.1", port, false),
        settings,
    );
    Setup {
        _dir: dir,
        site,
        queue,
    }
}

async fn only(site: &Site) -> QueuedMail {
    let all = admin::list(site, true).await.unwrap();
    assert_eq!(all.len(), 1, "one message in the queue: {all:?}");
    all.into_iter().next().unwrap().into_inner()
}

fn later(secs: u64) -> Timestamp {
    Timestamp::now().plus(Duration::from_secs(secs))
}

#[tokio::test]
async fn send_returns_once_the_message_is_queued_and_the_queue_delivers_it() {
    let sink = SmtpSink::start();
    let s = setup(sink.addr.port(), settings());
    s.queue
        .send(mail("ann@example.org", "hello"))
        .await
        .unwrap();
    // Queued, not yet sent: nothing has run the queue.
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Queued);
    assert_eq!(m.attempts, 0);
    assert!(sink.messages().is_empty());
    let run = s.queue.run_due(Timestamp::now()).await.unwrap();
    assert_eq!(run.delivered, 1);
    let got = sink.wait_for(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].to, ["ann@example.org"]);
    assert!(got[0].data.contains("Subject: hello"), "{}", got[0].data);
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Delivered);
    assert_eq!(m.attempts, 1);
    assert!(m.finished_at.is_some() && m.next_try.is_none() && m.last_error.is_none());
}

#[tokio::test]
async fn a_451_is_retried_with_backoff_and_the_message_delivered_exactly_once() {
    let sink = SmtpSink::start();
    sink.answer_next([451, 451]);
    let s = setup(sink.addr.port(), settings());
    s.queue
        .send(mail("ann@example.org", "retried"))
        .await
        .unwrap();
    let start = Timestamp::now();
    let run = s.queue.run_due(start).await.unwrap();
    assert_eq!((run.delivered, run.deferred), (0, 1));
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Queued);
    assert_eq!(m.attempts, 1);
    assert!(m.last_error.as_deref().unwrap().starts_with("451"), "{m:?}");
    assert_eq!(m.next_try, Some(start.plus(Duration::from_secs(60))));
    // Not due before its time.
    assert_eq!(
        s.queue.run_due(later(30)).await.unwrap(),
        QueueRun::default()
    );
    // Second failure: the wait doubles.
    let second = start.plus(Duration::from_secs(61));
    assert_eq!(s.queue.run_due(second).await.unwrap().deferred, 1);
    let m = only(&s.site).await;
    assert_eq!(m.attempts, 2);
    assert_eq!(m.next_try, Some(second.plus(Duration::from_secs(120))));
    // Third try: the sink takes it.
    let third = second.plus(Duration::from_secs(121));
    assert_eq!(s.queue.run_due(third).await.unwrap().delivered, 1);
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Delivered);
    assert_eq!(m.attempts, 3);
    assert_eq!(m.finished_at, Some(third));
    assert_eq!(m.last_error, None);
    // Nothing is sent again, however much later the queue runs.
    assert_eq!(
        s.queue.run_due(later(30 * 86400)).await.unwrap(),
        QueueRun::default()
    );
    assert_eq!(sink.refused(), 2);
    assert_eq!(sink.wait_for(1).len(), 1);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sink.messages().len(), 1, "delivered exactly once");
}

#[tokio::test]
async fn a_550_gives_up_at_once_and_records_why() {
    let sink = SmtpSink::start();
    sink.answer_next([550]);
    let s = setup(sink.addr.port(), settings());
    s.queue
        .send(mail("nobody@example.org", "refused"))
        .await
        .unwrap();
    let now = Timestamp::now();
    let run = s.queue.run_due(now).await.unwrap();
    assert_eq!((run.delivered, run.deferred, run.failed), (0, 0, 1));
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Failed);
    assert_eq!(m.attempts, 1);
    assert_eq!(m.next_try, None);
    assert_eq!(m.finished_at, Some(now));
    assert_eq!(m.last_error.as_deref(), Some("550 refused as told"));
    assert_eq!(
        s.queue.run_due(later(86400)).await.unwrap(),
        QueueRun::default()
    );
    assert!(sink.messages().is_empty());
    assert_eq!(sink.refused(), 1);
}

#[tokio::test]
async fn a_relay_that_is_down_is_retried_until_the_retry_time_is_over() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let s = setup(
        port,
        QueueSettings {
            give_up_after: Duration::from_secs(3 * 3600),
            ..settings()
        },
    );
    s.queue.send(mail("ann@example.org", "down")).await.unwrap();
    assert_eq!(s.queue.run_due(Timestamp::now()).await.unwrap().deferred, 1);
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Queued);
    assert!(
        m.last_error
            .as_deref()
            .unwrap()
            .starts_with("connecting to the relay"),
        "{m:?}"
    );
    // Two hours on, it is still worth a try (the next is within 3 hours).
    assert_eq!(s.queue.run_due(later(2 * 3600)).await.unwrap().deferred, 1);
    // Past the retry time, it is given up, saying why.
    assert_eq!(s.queue.run_due(later(4 * 3600)).await.unwrap().failed, 1);
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Failed);
    assert_eq!(m.attempts, 3);
    assert!(
        m.last_error
            .as_deref()
            .unwrap()
            .contains("given up after 0.125 days"),
        "{m:?}"
    );
}

#[tokio::test]
async fn messages_due_together_share_connections_within_the_destination_limit() {
    let sink = SmtpSink::start();
    let s = setup(
        sink.addr.port(),
        QueueSettings {
            per_destination: 2,
            ..settings()
        },
    );
    for i in 0..10 {
        s.queue
            .send(mail(
                &format!("user{i}@example.org"),
                &format!("number {i}"),
            ))
            .await
            .unwrap();
    }
    let run = s.queue.run_due(Timestamp::now()).await.unwrap();
    assert_eq!(run.delivered, 10);
    assert_eq!(sink.wait_for(10).len(), 10);
    assert_eq!(sink.connections(), 2, "two connections, five messages each");
}

#[tokio::test]
async fn a_refusal_in_the_middle_of_a_connection_leaves_the_others_delivered() {
    let sink = SmtpSink::start();
    sink.answer_next([250, 550, 451]);
    let s = setup(
        sink.addr.port(),
        QueueSettings {
            per_destination: 1,
            ..settings()
        },
    );
    for i in 0..4 {
        s.queue
            .send(mail(
                &format!("user{i}@example.org"),
                &format!("number {i}"),
            ))
            .await
            .unwrap();
    }
    let run = s.queue.run_due(Timestamp::now()).await.unwrap();
    assert_eq!((run.delivered, run.failed, run.deferred), (2, 1, 1));
    assert_eq!(sink.connections(), 1);
    let states: Vec<MailState> = admin::list(&s.site, true)
        .await
        .unwrap()
        .iter()
        .map(|m| m.mail_state())
        .collect();
    assert!(states.contains(&MailState::Queued) && states.contains(&MailState::Failed));
}

#[tokio::test]
async fn operators_retry_and_drop_queued_messages() {
    let sink = SmtpSink::start();
    sink.answer_next([550, 451]);
    // One connection, so that the sink's answers go to the messages in order.
    let s = setup(
        sink.addr.port(),
        QueueSettings {
            per_destination: 1,
            ..settings()
        },
    );
    let [failed] = s.queue.enqueue(mail("a@example.org", "a")).await.unwrap()[..] else {
        panic!("one recipient, one message")
    };
    let [deferred] = s.queue.enqueue(mail("b@example.org", "b")).await.unwrap()[..] else {
        panic!("one recipient, one message")
    };
    let run = s.queue.run_due(Timestamp::now()).await.unwrap();
    assert_eq!((run.failed, run.deferred), (1, 1));
    // Both are listed: the deferred one first, then the failed one.
    let listed = admin::list(&s.site, false).await.unwrap();
    let listed: Vec<_> = listed
        .iter()
        .map(|m| (m.id().id(), m.mail_state()))
        .collect();
    assert_eq!(
        listed,
        [(deferred, MailState::Queued), (failed, MailState::Failed)]
    );
    // Retrying makes both due now: the failed one's retries start again.
    assert_eq!(admin::retry_all(&s.site).await.unwrap(), 2);
    assert_eq!(
        s.queue.run_due(Timestamp::now()).await.unwrap().delivered,
        2
    );
    assert_eq!(sink.wait_for(2).len(), 2);
    // Delivered ones are history: listed only when asked for.
    assert!(admin::list(&s.site, false).await.unwrap().is_empty());
    assert_eq!(admin::list(&s.site, true).await.unwrap().len(), 2);
    assert!(matches!(
        admin::retry(&s.site, failed).await,
        Err(MailError::AlreadyDelivered { id }) if id == failed
    ));
    admin::drop_message(&s.site, deferred).await.unwrap();
    assert!(matches!(
        admin::drop_message(&s.site, deferred).await,
        Err(MailError::NoSuchMessage { .. })
    ));
    // Delivered ones are kept as history for a while, then forgotten.
    assert_eq!(s.queue.purge_delivered(later(86400)).await.unwrap(), 0);
    let after = Timestamp::now()
        .plus(mantissa_mail::KEEP_DELIVERED)
        .plus(Duration::from_secs(1));
    assert_eq!(s.queue.purge_delivered(after).await.unwrap(), 1);
    assert!(admin::list(&s.site, true).await.unwrap().is_empty());
    assert!(matches!(
        admin::retry(&s.site, 999).await,
        Err(MailError::NoSuchMessage { id: 999 })
    ));
}

#[tokio::test]
async fn the_runner_delivers_what_is_queued_without_waiting_for_its_tick() {
    let sink = SmtpSink::start();
    let s = setup(sink.addr.port(), settings());
    let runner = s.queue.spawn(Duration::from_secs(3600));
    s.queue.send(mail("ann@example.org", "now")).await.unwrap();
    let got = tokio::task::spawn_blocking(move || {
        let got = sink.wait_for(1);
        (got, sink)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(got.len(), 1);
    runner.stop().await;
}

#[test]
fn a_queue_thread_delivers_for_a_host_that_is_not_async_and_stops_when_dropped() {
    let sink = SmtpSink::start();
    let s = setup(sink.addr.port(), settings());
    let thread = s.queue.run_in_thread(Duration::from_secs(3600)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(s.queue.send(mail("ann@example.org", "threaded")))
        .unwrap();
    assert_eq!(sink.wait_for(1).len(), 1);
    assert_eq!(rt.block_on(admin::due_now(&s.site)).unwrap(), 0);
    drop(thread);
}

#[tokio::test]
async fn stopping_does_not_wait_for_a_relay_that_never_answers() {
    // Accepts connections and says nothing: a relay that hangs.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let s = setup(port, settings());
    let runner = s.queue.spawn(Duration::from_secs(3600));
    s.queue
        .send(mail("ann@example.org", "hangs"))
        .await
        .unwrap();
    // Claimed and being sent.
    let start = std::time::Instant::now();
    while only(&s.site).await.mail_state() != MailState::Sending {
        assert!(start.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = std::time::Instant::now();
    runner.stop().await;
    let took = start.elapsed();
    assert!(
        took < mantissa_mail::STOP_WAIT + Duration::from_secs(2),
        "stopped in {took:?}"
    );
    // Still in the store, to be tried again after its lease.
    let m = only(&s.site).await;
    assert_eq!(m.mail_state(), MailState::Sending);
    assert!(m.next_try.is_some());
}
