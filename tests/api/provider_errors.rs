//! The failure statuses every provider answers alike, as one table run against the Stream,
//! Sendbird and Ethora adapters talking to their fakes: each failure is classified at the
//! adapter edge into the same [`ProviderError`] class, transient ones are retried, and a slow
//! answer times out. What differs per provider (Stream's JSON errors and reset header,
//! Sendbird's 400 codes and `X-RateLimit-RetryAfter`, Ethora's 422) stays in `provider_*.rs`.

use std::time::{Duration, Instant};

use caregraph::providers::{
    chat::{ChannelRef, ChatUser, ProviderError},
    http::Resilience,
};
use serde_json::{Map, json};

use crate::{
    fakes::{self, FakeProvider, Fault},
    helpers::quick_resilience,
};

/// A running fake of each HTTP provider.
async fn every_fake() -> Vec<Box<dyn FakeProvider>> {
    vec![
        Box::new(fakes::stream::start().await),
        Box::new(fakes::sendbird::start().await),
        Box::new(fakes::ethora::start().await),
    ]
}

fn channel() -> ChannelRef {
    ChannelRef {
        channel_type: "messaging".into(),
        channel_id: "errors-1".into(),
    }
}

/// Answers the next request with `status`, `body` and `headers`.
pub fn respond(status: u16, body: &str, headers: &[(&str, &str)]) -> Fault {
    Fault::Respond {
        status,
        body: body.to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        count: 1,
    }
}

#[tokio::test]
async fn every_adapter_classifies_the_shared_failure_statuses_alike() {
    let set: Map<String, serde_json::Value> =
        json!({ "topic": "x" }).as_object().expect("object").clone();
    for fake in every_fake().await {
        let adapter = fake.adapter(quick_resilience(1));
        let name = adapter.name();
        let cases = [
            (respond(404, "", &[]), "not_found", None),
            (respond(500, "boom", &[]), "unavailable", None),
            (respond(502, "", &[]), "unavailable", None),
            (respond(503, "", &[]), "unavailable", None),
            (
                respond(429, "", &[("Retry-After", "7")]),
                "rate_limited",
                Some(Duration::from_secs(7)),
            ),
            (respond(429, "", &[]), "rate_limited", None),
        ];
        for (fault, class, wait) in cases {
            let shown = format!("{name}: {fault:?}");
            fake.control().inject(fault);
            let err = adapter
                .update_metadata(&channel(), &set, &[])
                .await
                .expect_err(&shown);
            assert_eq!(err.class(), class, "{shown}: {err:?}");
            assert_eq!(err.retry_after(), wait, "{shown}: {err:?}");
            assert_eq!(err.is_transient(), class != "not_found", "{shown}: {err:?}");
            fake.control().heal();
        }
    }
}

#[tokio::test]
async fn every_adapter_retries_a_503_and_then_succeeds() {
    for fake in every_fake().await {
        let adapter = fake.adapter(quick_resilience(3));
        fake.control().fail(503, "", 1);
        adapter
            .upsert_users(&[ChatUser {
                id: "u-retry".into(),
                name: "Retry".into(),
                image: None,
            }])
            .await
            .unwrap_or_else(|e| panic!("{}: the retry succeeds: {e:?}", adapter.name()));
    }
}

#[tokio::test]
async fn every_adapter_times_out_a_slow_answer_as_unavailable() {
    for fake in every_fake().await {
        let adapter = fake.adapter(Resilience {
            timeout: Duration::from_millis(100),
            ..quick_resilience(1)
        });
        fake.control().inject(Fault::Delay {
            by: Duration::from_millis(600),
            count: 1,
        });
        let started = Instant::now();
        let err = adapter
            .delete_channel(&channel())
            .await
            .expect_err("a timeout");
        assert_eq!(
            err,
            ProviderError::Unavailable("timed out".to_owned()),
            "{}",
            adapter.name()
        );
        assert!(
            started.elapsed() < Duration::from_millis(550),
            "{}",
            adapter.name()
        );
    }
}
