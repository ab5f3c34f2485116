//! A site's live status for its visitors: online (an agent is online), away (open, but no agent
//! is online) or closed (outside business hours, with the next opening).
//!
//! One function decides it ([`status_of`]), so the widget settings, the `site_status` frame at
//! connect and the frames pushed on a change always agree. [`run_watcher`] pushes a change to the
//! connected visitors of a site: it wakes when an agent's presence changes (the router signals,
//! and tells which sites that agent serves, so only those are looked at again), when a site is
//! edited (the directory signals), and at the site's next opening or closing time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::chat::delivery::Hub;
use crate::protocol::{NextOpeningView, ServerFrame, SiteAvailability, SiteStatusView};
use crate::routing::{AvailabilityChanges, Router};
use crate::sites::{Site, SiteDirectory};

/// The longest the watcher sleeps without a signal: it looks again anyway, so a missed signal
/// (or a clock that jumped) costs at most this much delay.
const RECHECK_INTERVAL: Duration = Duration::from_secs(60);

/// How long after an opening or closing time the watcher wakes, so that the clock it reads then
/// is surely past it (a sleep's clock and the wall clock are not the same clock).
const BOUNDARY_MARGIN: Duration = Duration::from_millis(200);

/// The status of `site` at `now`, given whether one of its agents is online.
pub fn status_of(site: &Site, now: Timestamp, agent_online: bool) -> SiteStatusView {
    let hours = &site.business_hours;
    if !hours.is_open(now) {
        let next_open = hours.next_opening(now).map(|zoned| NextOpeningView {
            at: zoned.timestamp().as_millisecond(),
            local_time: zoned.strftime("%H:%M").to_string(),
            local_date: zoned.date().to_string(),
            time_zone: hours.time_zone.clone(),
        });
        return SiteStatusView { status: SiteAvailability::Closed, next_open };
    }
    let status = if agent_online { SiteAvailability::Online } else { SiteAvailability::Away };
    SiteStatusView { status, next_open: None }
}

/// The status of `site` now, as the router sees its agents.
pub fn current(site: &Site, router: &Router) -> SiteStatusView {
    status_of(site, Timestamp::now(), router.site_has_online_agent(&site.key))
}

/// The last status each site's visitors were told, to push only changes.
#[derive(Default)]
pub struct StatusWatcher {
    told: HashMap<String, SiteStatusView>,
}

impl StatusWatcher {
    /// Recomputes the status of every site of `all` with a visitor connected at `now`, pushes a
    /// `site_status` frame to the visitors of each site whose status changed, and returns the
    /// next instant any site opens or closes (any: a site's first visitor may come before then).
    pub fn recheck(&mut self, hub: &Hub, router: &Router, all: &[Site], now: Timestamp) -> Option<Timestamp> {
        let watched = hub.sites_with_visitors();
        self.told.retain(|key, _| watched.contains(key));
        let mut next_change: Option<Timestamp> = None;
        for site in all {
            if let Some(change) = site.business_hours.next_change(now) {
                next_change = Some(next_change.map_or(change, |earliest| earliest.min(change)));
            }
            if watched.contains(&site.key) {
                self.tell(hub, router, site, now);
            }
        }
        next_change
    }

    /// Recomputes the status of the sites whose online agents changed (`changes`), among those
    /// with a visitor connected, and pushes the changed ones; the other sites' status did not move.
    pub async fn recheck_availability(
        &mut self,
        hub: &Hub,
        router: &Router,
        sites: &SiteDirectory,
        changes: AvailabilityChanges,
        now: Timestamp,
    ) {
        let watched = hub.sites_with_visitors();
        for key in watched.iter().filter(|key| changes.every_site || changes.sites.contains(*key)) {
            match sites.get(key).await {
                Ok(Some(site)) => self.tell(hub, router, &site.site, now),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, site = %key, "reading a site for its status failed"),
            }
        }
    }

    /// Pushes `site`'s status to its visitors if it is not what they were told last.
    fn tell(&mut self, hub: &Hub, router: &Router, site: &Site, now: Timestamp) {
        let status = status_of(site, now, router.site_has_online_agent(&site.key));
        // A site seen for the first time is told too: a visitor who connected before a
        // change that this look is the first to see must not keep the old status.
        if self.told.get(&site.key) != Some(&status) {
            tracing::debug!(site = %site.key, status = ?status.status, "site status changed");
            hub.broadcast_to_site_visitors(&site.key, || ServerFrame::SiteStatus(&status).encode());
            self.told.insert(site.key.clone(), status);
        }
    }
}

/// Pushes status changes to visitors until shutdown (see the module documentation). A change of
/// an agent's presence looks at the sites that agent serves; an edit of a site, an opening or
/// closing time and the periodic look go over every site.
pub async fn run_watcher(hub: Arc<Hub>, sites: SiteDirectory, router: Router, shutdown: CancellationToken) {
    let mut watcher = StatusWatcher::default();
    let presence_changed = router.availability_signal();
    let site_changed = sites.change_signal();
    let mut next_change: Option<Timestamp> = None;
    let mut every_site = true;
    loop {
        let now = Timestamp::now();
        let changes = router.take_availability_changes();
        // An opening or closing time passed while only presence was looked at.
        every_site |= next_change.is_some_and(|change| change <= now);
        if every_site {
            next_change = match sites.all().await {
                Ok(all) => watcher.recheck(&hub, &router, &all, now),
                Err(error) => {
                    tracing::warn!(%error, "reading the sites for their status failed");
                    None
                }
            };
        } else {
            watcher.recheck_availability(&hub, &router, &sites, changes, now).await;
        }
        let until_change = next_change
            .and_then(|change| Duration::try_from(change.duration_since(now)).ok())
            .map(|wait| wait + BOUNDARY_MARGIN);
        let wait = until_change.map_or(RECHECK_INTERVAL, |wait| wait.min(RECHECK_INTERVAL));
        every_site = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = presence_changed.notified() => false,
            _ = site_changed.notified() => true,
            _ = tokio::time::sleep(wait) => true,
        };
    }
}
