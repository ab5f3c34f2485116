//! Who is on a site right now: visitors with an open connection, their current page, referrer,
//! browser and address, kept in memory and announced to the site's agents as `visitor` frames.
//!
//! The record lives as long as the visitor has a connection; it is bounded by the connection
//! limit. Nothing here is stored: a restart starts with nobody online, and visitors reappear as
//! their widgets reconnect.

use std::net::IpAddr;

use dashmap::DashMap;

use crate::chat::delivery::Hub;
use crate::people::visitors::{self, Visitor};
use crate::protocol::PageView;
use crate::protocol::{OnlineVisitorView, ServerFrame};

struct OnlineVisitor {
    view: OnlineVisitorView,
    n_connections: u32,
}

/// The visitors online, by id. The entries are boxed: the map's table then holds two words per
/// slot, and its spare slots (a hash table keeps up to half of them empty) cost little.
#[derive(Default)]
pub struct OnlineVisitors {
    visitors: DashMap<u64, Box<OnlineVisitor>>,
}

impl OnlineVisitors {
    pub fn new() -> OnlineVisitors {
        OnlineVisitors::default()
    }

    /// A connection of `visitor` started.
    pub fn connected(&self, hub: &Hub, visitor: &Visitor, ip: Option<IpAddr>, user_agent: &str) {
        let now = crate::base::clock::now_millis();
        let frame = {
            let mut entry = self.visitors.entry(visitor.id).or_insert_with(|| {
                let page = visitor.last_page.clone().unwrap_or_default();
                Box::new(OnlineVisitor {
                    view: OnlineVisitorView {
                        visitor_id: visitor.id,
                        site: visitor.site.clone(),
                        name: visitors::display_name(visitor),
                        url: page.url,
                        title: page.title,
                        referrer: page.referrer,
                        browser: browser_of(user_agent),
                        ip: ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        returning: visitor.n_sessions > 1,
                        online_since: now,
                        page_since: now,
                    },
                    n_connections: 0,
                })
            });
            entry.n_connections += 1;
            (entry.n_connections == 1).then(|| ServerFrame::Visitor { event: "online", visitor: &entry.view }.encode())
        };
        if let Some(frame) = frame {
            hub.broadcast_to_site_agents(&visitor.site, || frame);
        }
    }

    /// The visitor viewed a page.
    pub fn page_view(&self, hub: &Hub, visitor_id: u64, page: PageView) {
        let announced = self.visitors.get_mut(&visitor_id).map(|mut entry| {
            entry.view.url = page.url;
            entry.view.title = page.title;
            if !page.referrer.is_empty() {
                entry.view.referrer = page.referrer;
            }
            entry.view.page_since = crate::base::clock::now_millis();
            (entry.view.site.clone(), ServerFrame::Visitor { event: "page", visitor: &entry.view }.encode())
        });
        if let Some((site, frame)) = announced {
            hub.broadcast_to_site_agents(&site, || frame);
        }
    }

    /// A connection of the visitor ended.
    pub fn disconnected(&self, hub: &Hub, visitor_id: u64) {
        let gone = {
            let Some(mut entry) = self.visitors.get_mut(&visitor_id) else {
                return;
            };
            entry.n_connections = entry.n_connections.saturating_sub(1);
            entry.n_connections == 0
        };
        if gone {
            if let Some((_, entry)) = self.visitors.remove_if(&visitor_id, |_, entry| entry.n_connections == 0) {
                let frame = ServerFrame::Visitor { event: "offline", visitor: &entry.view }.encode();
                hub.broadcast_to_site_agents(&entry.view.site, || frame);
            }
        }
    }

    /// The visitors online on the sites `serves` accepts, longest online first.
    pub fn list(&self, serves: impl Fn(&str) -> bool) -> Vec<OnlineVisitorView> {
        let mut found: Vec<OnlineVisitorView> =
            self.visitors.iter().filter(|entry| serves(&entry.view.site)).map(|entry| entry.view.clone()).collect();
        found.sort_by_key(|view| (view.online_since, view.visitor_id));
        found
    }

    pub fn get(&self, visitor_id: u64) -> Option<OnlineVisitorView> {
        self.visitors.get(&visitor_id).map(|entry| entry.view.clone())
    }

    /// Visitors of `site` online from address `ip`.
    pub fn at_address(&self, site: &str, ip: &str) -> Vec<u64> {
        self.visitors
            .iter()
            .filter(|entry| entry.view.site == site && entry.view.ip == ip)
            .map(|entry| entry.view.visitor_id)
            .collect()
    }

    pub fn n_online(&self) -> usize {
        self.visitors.len()
    }
}

/// A short browser and system name from a User-Agent header ("Chrome 120 on Windows").
pub fn browser_of(user_agent: &str) -> String {
    let version_after = |marker: &str| {
        user_agent.split(marker).nth(1).map(|rest| rest.split(['.', ' ', ';', ')']).next().unwrap_or_default())
    };
    let browser = [("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome")]
        .iter()
        .find_map(|(marker, name)| version_after(marker).map(|version| format!("{name} {version}")))
        .or_else(|| {
            user_agent.contains("Safari/").then(|| match version_after("Version/") {
                Some(version) => format!("Safari {version}"),
                None => "Safari".to_owned(),
            })
        });
    let system = [
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Android", "Android"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(marker, _)| user_agent.contains(marker))
    .map(|(_, name)| *name);
    match (browser, system) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(browser), None) => browser,
        (None, Some(system)) => system.to_owned(),
        (None, None) => user_agent.chars().take(40).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::browser_of;

    #[test]
    fn browsers_are_named() {
        let chrome =
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        assert_eq!(browser_of(chrome), "Chrome 120 on Linux");
        let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        assert_eq!(browser_of(safari), "Safari 17 on iOS");
        assert_eq!(browser_of(""), "");
    }
}
