//! API tokens behind their storage boundary (`ApiTokenStore`) on both backends, the appliance's
//! redb and the cluster's PostgreSQL 15 (support/postgres.rs): the same calls give the same
//! answers (bad names and unknown sites refused with nothing stored, a new token authenticating
//! by its digest, its use recorded, a revoked token refused at once and still listed, a second
//! revocation and unknown ids refused).
//!
//! The PostgreSQL test prints one line and passes when PostgreSQL is not installed.

use kefu::base::secrets::token_digest;
use kefu::cluster::api_tokens::PostgresApiTokens;
use kefu::cluster::sites::PostgresSites;
use kefu::people::api_tokens::{ApiTokenError, ApiTokenStore, NewApiToken, TOKEN_PREFIX};
use kefu::sites::NewSite;
use kefu::sites::store::SiteStore;

use crate::support::TestServer;
use crate::support::postgres::database;

fn request(name: &str, site: &str) -> NewApiToken {
    NewApiToken { name: name.into(), site: site.into(), read_only: true, created_by: "admin@shop.example".into() }
}

async fn behaves_as_a_token_store(tokens: &impl ApiTokenStore, sites: &impl SiteStore) {
    let site = sites.create(NewSite { name: "店".into(), ..NewSite::default() }).await.unwrap().key;
    let before = tokens.tokens().await.unwrap().len();
    let bad_name = tokens.create_token(request("  ", &site)).await;
    assert!(
        matches!(bad_name, Err(ApiTokenError::Invalid(ref error)) if error.to_string().contains("name")),
        "{:?}",
        bad_name.as_ref().err()
    );
    let bad_site = tokens.create_token(request("CRM", "no-such-site")).await;
    assert!(
        matches!(bad_site, Err(ApiTokenError::Invalid(ref error)) if error.to_string().contains("site")),
        "{:?}",
        bad_site.as_ref().err()
    );
    assert_eq!(tokens.tokens().await.unwrap().len(), before, "refused tokens are not stored");

    let created = tokens.create_token(request(" CRM 同步 ", &site)).await.expect("create");
    assert!(created.secret.starts_with(TOKEN_PREFIX));
    assert_eq!((created.token.name.as_str(), created.token.read_only), ("CRM 同步", true));
    let digest = token_digest(&created.secret);
    let found = tokens.authenticate_token(&digest).await.unwrap().expect("the token authenticates");
    assert_eq!(found.id, created.token.id);
    assert!(tokens.authenticate_token(&token_digest("k1.forged")).await.unwrap().is_none());
    tokens.record_use(created.token.id).await.unwrap();
    let used = tokens.token(created.token.id).await.unwrap().unwrap();
    assert!(used.last_used_at.is_some());

    let revoked = tokens.revoke_token(created.token.id).await.expect("revoke");
    assert!(revoked.revoked_at.is_some());
    assert!(tokens.authenticate_token(&digest).await.unwrap().is_none(), "refused at once");
    assert!(matches!(tokens.revoke_token(created.token.id).await, Err(ApiTokenError::AlreadyRevoked)));
    assert!(matches!(tokens.revoke_token(u64::MAX).await, Err(ApiTokenError::NotFound)));
    tokens.record_use(created.token.id).await.unwrap();
    tokens.record_use(u64::MAX).await.unwrap();
    let listed = tokens.tokens().await.unwrap();
    let kept = listed.iter().find(|token| token.id == created.token.id).expect("still listed");
    assert_eq!((kept.revoked_at, kept.last_used_at), (revoked.revoked_at, used.last_used_at));
}

#[tokio::test]
async fn the_appliance_and_postgresql_behave_alike() {
    let server = TestServer::start().await;
    let store = server.store().clone();
    behaves_as_a_token_store(&store, &store).await;

    let Some(url) = database("tokens_alike").await else { return };
    let (tokens, sites) = (PostgresApiTokens::open(&url).await.unwrap(), PostgresSites::open(&url).await.unwrap());
    behaves_as_a_token_store(&tokens, &sites).await;
}
