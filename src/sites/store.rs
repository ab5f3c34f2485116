//! The sites' storage boundary: what the admin pages and the connections need of sites, in
//! domain terms, so a second backend (the cluster's PostgreSQL, `cluster::sites`) implements
//! these calls and not redb's tables. [`Store`] implements it with this module's functions.

use std::future::Future;

use futures_util::future::BoxFuture;

use crate::sites::{self, NewSite, Site, SiteError};
use crate::storage::{StorageError, Store};

pub trait SiteStore: Send + Sync {
    /// The site with `key`, if there is one.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Site>, StorageError>> + Send;

    /// Every site, in key order.
    fn list(&self) -> impl Future<Output = Result<Vec<Site>, StorageError>> + Send;

    /// Every site, by name as the admin pages list them ([`sites::sort_by_name`]).
    fn list_by_name(&self) -> impl Future<Output = Result<Vec<Site>, StorageError>> + Send {
        async move {
            let mut sites = self.list().await?;
            sites::sort_by_name(&mut sites);
            Ok(sites)
        }
    }

    /// Stores a new site ([`sites::new_record`]: a new key and secret, validated).
    fn create(&self, new_site: NewSite) -> impl Future<Output = Result<Site, SiteError>> + Send;

    /// Replaces a site's settings (the key must exist, the settings be valid, and every team it
    /// routes to be its own); its secret and creation time stay as stored.
    fn save(&self, site: Site) -> impl Future<Output = Result<Site, SiteError>> + Send;

    /// Gives a site a new secret.
    fn rotate_secret(&self, key: &str) -> impl Future<Output = Result<Site, SiteError>> + Send;

    /// Deletes a site with what is only the site's ([`sites::delete`] says what).
    fn delete(&self, key: &str) -> impl Future<Output = Result<Site, SiteError>> + Send;
}

impl SiteStore for Store {
    async fn get(&self, key: &str) -> Result<Option<Site>, StorageError> {
        let key = key.to_owned();
        self.read(move |transaction| sites::get(transaction, &key)).await
    }

    async fn list(&self) -> Result<Vec<Site>, StorageError> {
        self.read(sites::list).await
    }

    async fn create(&self, new_site: NewSite) -> Result<Site, SiteError> {
        sites::create(self, new_site).await
    }

    async fn save(&self, site: Site) -> Result<Site, SiteError> {
        sites::save(self, site).await
    }

    async fn rotate_secret(&self, key: &str) -> Result<Site, SiteError> {
        sites::rotate_secret(self, key).await
    }

    async fn delete(&self, key: &str) -> Result<Site, SiteError> {
        sites::delete(self, key).await
    }
}

/// What `SiteDirectory` reads sites from: any [`SiteStore`], behind a pointer.
pub trait SiteSource: Send + Sync {
    fn get_site<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Site>, StorageError>>;
    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StorageError>>;
}

impl<T: SiteStore> SiteSource for T {
    fn get_site<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Site>, StorageError>> {
        Box::pin(self.get(key))
    }

    fn list_sites(&self) -> BoxFuture<'_, Result<Vec<Site>, StorageError>> {
        Box::pin(self.list())
    }
}
