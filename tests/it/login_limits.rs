//! Login limits: an attempt is counted before its password is hashed, so a burst of concurrent
//! wrong passwords runs at most the limit's number of argon2 checks; failures from other client
//! addresses never refuse the right password from an address that has not failed; guesses
//! spread over addresses are slowed by the account's budget.

use std::net::IpAddr;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{PASSWORD, TestServer, http};

const ADMIN: &str = "root@shop.example";

/// A client whose connections come from `address` (any of 127.0.0.0/8 reaches the server).
fn client_from(address: &str) -> reqwest::Client {
    http();
    let address: IpAddr = address.parse().unwrap();
    reqwest::Client::builder().local_address(address).build().unwrap()
}

async fn login(server: &TestServer, client: &reqwest::Client, email: &str, password: &str) -> (StatusCode, Value) {
    let response = client
        .post(server.url("/api/v1/agent/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry_after >= 1);
    }
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn concurrent_wrong_passwords_run_at_most_the_limit_of_password_checks() {
    let server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let limit = u64::from(server.app().config.limits.login_attempts);
    let before = server.app().login_limiter.password_checks.n_run();
    let client = client_from("127.0.0.1");
    let attempts = (0..300).map(|_| login(&server, &client, ADMIN, "wrong password"));
    let outcomes = futures_util::future::join_all(attempts).await;

    let n_checks = server.app().login_limiter.password_checks.n_run() - before;
    assert!(n_checks <= limit, "{n_checks} password checks ran for a limit of {limit}");
    let n_refused = outcomes.iter().filter(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS).count();
    let n_wrong = outcomes.iter().filter(|(status, _)| *status == StatusCode::UNAUTHORIZED).count();
    assert_eq!(n_refused + n_wrong, 300, "every attempt is refused or wrong");
    assert!(n_wrong as u64 <= limit && n_refused >= 300 - limit as usize, "{n_wrong} wrong, {n_refused} refused");
    for (status, body) in &outcomes {
        if *status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
        }
    }

    // The owner, from an address that has not failed, still logs in.
    let (status, body) = login(&server, &client_from("127.0.0.2"), ADMIN, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn failures_from_other_addresses_never_lock_the_owner_out_but_spread_guesses_are_slowed() {
    let server = TestServer::start().await;
    server.create_admin(ADMIN).await;
    let limit = server.app().config.limits.login_attempts;

    // An attacker at one address uses up its attempts for the account.
    let attacker = client_from("127.0.0.2");
    for attempt in 0..limit {
        let (status, body) = login(&server, &attacker, ADMIN, "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}: {body}");
    }
    assert_eq!(login(&server, &attacker, ADMIN, "guess").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        login(&server, &attacker, ADMIN, PASSWORD).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "that address is refused for the account even with the right password"
    );

    // A second attacking address gets its first guess, then the account's spent budget slows it.
    let second = client_from("127.0.0.3");
    let mut n_guesses = 0;
    while login(&server, &second, ADMIN, "guess").await.0 == StatusCode::UNAUTHORIZED {
        n_guesses += 1;
        assert!(n_guesses <= 2, "a second address gets at most what is left of the account's budget");
    }

    // The owner, from their own address that has not failed, logs in at once.
    let (status, body) = login(&server, &client_from("127.0.0.4"), ADMIN, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent"]["email"], ADMIN);
}

#[tokio::test]
async fn one_address_failing_over_many_accounts_is_refused_for_every_account() {
    let server = TestServer::start_with(|config| config.limits.login_attempts_per_address = 3).await;
    server.create_admin(ADMIN).await;
    let sprayer = client_from("127.0.0.5");
    for number in 0..3 {
        let (status, body) = login(&server, &sprayer, &format!("nobody-{number}@shop.example"), "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let (status, body) = login(&server, &sprayer, ADMIN, PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = login(&server, &client_from("127.0.0.6"), ADMIN, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "another address is unaffected");
}
