//! The write path of the blocked-IP list: the rules a block or unblock must pass (syntax, breadth, TTL), its
//! replication (published, then applied here before the caller hears back), and the reads. The HTTP handlers only
//! parse a request and call one method here, so every rule is testable without HTTP.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use agora::event::parse_network;
use agora::{Coordinator, Event};
use ipnet::IpNet;
use serde::Deserialize;

use super::blocked_ips::{canonical, BlockRule};
use crate::services::error::{ErrorKind, ServiceError};
use crate::services::local_writes::{LocalWrites, WriteError};
use crate::services::lww::PageIndex;
use crate::services::state::NodeState;

/// Shortest TTL accepted: a rule that expires before it reaches the other nodes would never be in force.
const MIN_TTL: Duration = Duration::from_secs(1);

/// Longest accepted TTL: anything longer is a permanent block in practice; say so with no TTL.
const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A request to block a network, as a caller sends it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    /// An address or a network in CIDR notation.
    #[schema(examples("203.0.113.7", "203.0.113.0/24", "2001:db8::/48"))]
    pub network: String,
    /// How long the block lasts (humantime, e.g. `30m`); none blocks until an unblock.
    #[schema(examples("30m", "1h"))]
    pub ttl: Option<String>,
    /// Free text for operators.
    pub reason: Option<String>,
    /// Needed to block a network broader than `[http] min-block-prefix-v4/-v6`.
    #[serde(default)]
    pub force: bool,
}

/// Why a block, an unblock or a lookup was refused.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The network is not an address or a CIDR network.
    #[error("{0}")]
    InvalidNetwork(String),
    /// The address to look up is not an IP address.
    #[error("invalid IP address {0:?}")]
    InvalidAddress(String),
    /// Broader than `[http] min-block-prefix-v4/-v6`, without `force`.
    #[error(
        "refusing to block {network} (stored form of {as_given:?}): it is broader than /{min}, which would block a \
         large part of the internet on every node; send \"force\": true to POST /v1/blocked-ips if that is really \
         meant"
    )]
    TooBroad {
        /// The network as it would be stored.
        network: IpNet,
        /// The network as the request wrote it.
        as_given: String,
        /// The shortest prefix allowed without `force`.
        min: u8,
    },
    /// The TTL is not a duration.
    #[error("invalid ttl {text:?}: {reason}; use e.g. \"30m\" or \"1h\"")]
    InvalidTtl {
        /// The TTL as given.
        text: String,
        /// What humantime reported.
        reason: String,
    },
    /// The TTL is shorter than a second or longer than 10 years.
    #[error("ttl {0:?} out of range: at least 1s and at most 10 years (omit ttl for a permanent block)")]
    TtlOutOfRange(String),
    /// An unblock of the same network, applied at the same time, won over this block.
    #[error("{0} was unblocked at the same time as this block, and the unblock wins")]
    LostToUnblock(IpNet),
    /// The event was not published or not applied here in time.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ServiceError for BlockError {
    fn kind(&self) -> ErrorKind {
        match self {
            BlockError::InvalidNetwork(_)
            | BlockError::InvalidAddress(_)
            | BlockError::TooBroad { .. }
            | BlockError::InvalidTtl { .. }
            | BlockError::TtlOutOfRange(_) => ErrorKind::Invalid,
            BlockError::LostToUnblock(_) => ErrorKind::Conflict,
            BlockError::Write(e) => e.kind(),
        }
    }
}

/// The replicated blocked-IP list as callers use it. Cheap to clone.
#[derive(Clone)]
pub struct BlockList {
    coordinator: Coordinator,
    state: Arc<NodeState>,
    local_writes: Arc<LocalWrites>,
    /// `[http] min-block-prefix-v4/-v6`: broader blocks need `force`.
    min_prefix: (u8, u8),
    /// The sorted networks, shared by every reader of the list while the rule set is unchanged.
    list_index: Arc<PageIndex<IpNet>>,
}

impl BlockList {
    /// The list over this node's replicated state.
    pub fn new(
        coordinator: Coordinator,
        state: Arc<NodeState>,
        local_writes: Arc<LocalWrites>,
        min_prefix: (u8, u8),
    ) -> Self {
        BlockList {
            coordinator,
            state,
            local_writes,
            min_prefix,
            list_index: Arc::default(),
        }
    }

    /// Publishes the block and returns, once this node applied it, the rule as stored (canonical network, origin,
    /// expiry), so that a lookup right after sees it.
    pub async fn block(&self, request: BlockRequest) -> Result<BlockRule, BlockError> {
        // Checked as it will be stored: `::ffff:0:0/96` is the IPv4 network 0.0.0.0/0.
        let network = canonical(parse_network(&request.network).map_err(BlockError::InvalidNetwork)?);
        if !request.force {
            self.check_breadth(network, &request.network)?;
        }
        let expires_at_ms = match request.ttl.as_deref() {
            None => None,
            Some(text) => Some(agora::clock::now_ms().saturating_add(ttl_ms(text)?)),
        };
        let event = Event::BlockedIp {
            network,
            expires_at_ms,
            reason: request.reason,
        };
        self.local_writes.publish(&self.coordinator, event).await?;
        // What is stored now: this write, or a greater one for the same network that won meanwhile.
        let stored = self.state.blocked().get(&network).cloned();
        stored.ok_or(BlockError::LostToUnblock(network))
    }

    /// Publishes an unblock. Always broadcast, even if this node has no such rule: it may have missed the block
    /// that others hold, and the unblock's tombstone makes repeating it harmless (deleting is idempotent).
    pub async fn unblock(&self, target: &str) -> Result<(), BlockError> {
        let network = parse_network(target).map_err(BlockError::InvalidNetwork)?;
        self.local_writes
            .publish(&self.coordinator, Event::UnblockedIp { network })
            .await?;
        Ok(())
    }

    /// The rule in force for `target` (an IP address), if any: the lookup a mail server makes per connection.
    pub fn lookup(&self, target: &str) -> Result<Option<BlockRule>, BlockError> {
        let ip: IpAddr = target
            .parse()
            .map_err(|_| BlockError::InvalidAddress(target.to_string()))?;
        Ok(self.state.blocked().lookup(ip, agora::clock::now_ms()).cloned())
    }

    /// One page of the list, in network order: the rules in force among the (at most) `max` stored after `after`,
    /// and the cursor for the next page (`None` once the list is done). Readers go page by page, so that a reader
    /// holds one page at a time however long the list and however slow the reader.
    pub fn page(&self, after: Option<&IpNet>, max: usize) -> (Vec<BlockRule>, Option<IpNet>) {
        let now = agora::clock::now_ms();
        let registry = self.state.blocked();
        let stored = registry.rules_after(&self.list_index, after, max);
        let next = stored.last().map(|rule| rule.network);
        let in_force = stored.into_iter().filter(|rule| rule.is_active(now)).cloned().collect();
        (in_force, next)
    }

    /// Refuses a block broader than `[http] min-block-prefix-v4/-v6` (`as_given` is how the request wrote it); the
    /// caller decides whether `force` lifts this.
    pub fn check_breadth(&self, network: IpNet, as_given: &str) -> Result<(), BlockError> {
        let (min_v4, min_v6) = self.min_prefix;
        let min = if network.addr().is_ipv4() { min_v4 } else { min_v6 };
        // An IPv6 network that holds all of `::ffff:0:0/96` (e.g. `::ffff:0:0/95`) covers every IPv4 address
        // (mapped): as broad as `0.0.0.0/0`, whatever its IPv6 prefix.
        let covers_all_ipv4 = matches!(network, IpNet::V6(_)) && network.contains(&all_ipv4_mapped());
        if covers_all_ipv4 && min_v4 > 0 {
            return Err(BlockError::TooBroad {
                network,
                as_given: as_given.to_string(),
                min: min_v4,
            });
        }
        if network.prefix_len() < min {
            return Err(BlockError::TooBroad {
                network,
                as_given: as_given.to_string(),
                min,
            });
        }
        Ok(())
    }
}

/// `::ffff:0:0/96`: every IPv4 address, IPv4-mapped.
fn all_ipv4_mapped() -> IpNet {
    IpNet::V6(ipnet::Ipv6Net::new(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96).unwrap_or_default())
}

/// A TTL in milliseconds, from 1 s to 10 years.
fn ttl_ms(text: &str) -> Result<u64, BlockError> {
    let ttl = humantime::parse_duration(text).map_err(|e| BlockError::InvalidTtl {
        text: text.to_string(),
        reason: e.to_string(),
    })?;
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(BlockError::TtlOutOfRange(text.to_string()));
    }
    Ok(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn list(min_prefix: (u8, u8)) -> (BlockList, tokio_util::sync::CancellationToken) {
        let config = agora::config::Config::default();
        let (coordinator, subscription) = Coordinator::start_subscribed(&config, agora::StartOptions::default())
            .await
            .expect("single-node coordinator");
        let shared = crate::services::sync::Shared::default();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let delivery = crate::services::push_delivery::PushDelivery::new(
            shared.metrics.clone(),
            &shared.push,
            coordinator.clone(),
            shutdown.clone(),
        );
        crate::services::sync::start(
            coordinator.clone(),
            subscription,
            shared.clone(),
            delivery,
            Duration::from_secs(1),
            shutdown.clone(),
        )
        .await
        .expect("services");
        (
            BlockList::new(coordinator, shared.state, shared.local_writes, min_prefix),
            shutdown,
        )
    }

    fn request(network: &str, ttl: Option<&str>, force: bool) -> BlockRequest {
        BlockRequest {
            network: network.to_string(),
            ttl: ttl.map(str::to_string),
            reason: Some("test".into()),
            force,
        }
    }

    #[tokio::test]
    async fn a_block_is_applied_before_it_returns_and_found_by_lookup() {
        let (list, _stop) = list((8, 32)).await;
        let rule = list
            .block(request("192.0.2.7", Some("1h"), false))
            .await
            .expect("blocked");
        assert_eq!(rule.network.to_string(), "192.0.2.7/32");
        assert!(rule.expires_at_ms.is_some());
        let found = list.lookup("192.0.2.7").expect("an address").expect("in force");
        assert_eq!(found.network, rule.network);
        assert!(list.lookup("192.0.2.8").expect("an address").is_none());
        list.unblock("192.0.2.7").await.expect("unblocked");
        assert!(list.lookup("192.0.2.7").expect("an address").is_none());
    }

    #[tokio::test]
    async fn the_list_pages_through_every_rule_in_force_in_network_order() {
        let (list, _stop) = list((8, 32)).await;
        // Applied as the service task would apply replicated events: 25,000 rules, every tenth already expired.
        let now = agora::clock::now_ms();
        for i in 0..25_000u32 {
            let network = IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)));
            let expires_at_ms = (i % 10 == 0).then_some(now - 1);
            list.state.apply(&agora::Delivery {
                origin: agora::Origin::Agora(agora::NodeId::new(1).expect("id")),
                time_us: agora::clock::now_us(),
                event: Event::BlockedIp {
                    network,
                    expires_at_ms,
                    reason: None,
                },
            });
        }
        let (mut seen, mut after, mut pages) = (Vec::new(), None, 0);
        loop {
            let (rules, next) = list.page(after.as_ref(), 1000);
            assert!(rules.len() <= 1000);
            seen.extend(rules.into_iter().map(|r| r.network));
            pages += 1;
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen.len(), 22_500, "every rule in force, none expired, none twice");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "in network order");
        assert!(pages >= 25, "page by page: {pages}");
    }

    #[tokio::test]
    async fn a_broad_block_needs_force_and_a_mapped_network_counts_as_ipv4() {
        let (list, _stop) = list((8, 32)).await;
        let refused = list.block(request("::ffff:0:0/96", None, false)).await;
        assert!(
            matches!(&refused, Err(BlockError::TooBroad { min: 8, .. })),
            "{refused:?}"
        );
        assert_eq!(
            refused.as_ref().map_err(ServiceError::kind).err(),
            Some(ErrorKind::Invalid)
        );
        // Broader in IPv6 terms than the IPv4-mapped range: it covers all of IPv4, so it needs force too.
        let refused = list.block(request("::ffff:0:0/95", None, false)).await;
        assert!(matches!(&refused, Err(BlockError::TooBroad { .. })), "{refused:?}");
        let forced = list.block(request("10.0.0.0/7", None, true)).await.expect("forced");
        assert_eq!(forced.network.to_string(), "10.0.0.0/7");
    }

    #[tokio::test]
    async fn ttls_outside_one_second_to_ten_years_are_refused_by_name() {
        let (list, _stop) = list((8, 32)).await;
        for (ttl, expected) in [
            ("500ms", "out of range"),
            ("11years", "out of range"),
            ("soon", "invalid ttl"),
        ] {
            let refused = list.block(request("192.0.2.1", Some(ttl), false)).await;
            let message = refused.expect_err("refused").to_string();
            assert!(message.contains(expected) && message.contains(ttl), "{ttl}: {message}");
        }
        assert!(matches!(list.lookup("not-an-ip"), Err(BlockError::InvalidAddress(_))));
        assert!(matches!(
            list.unblock("300.1.1.1").await,
            Err(BlockError::InvalidNetwork(_))
        ));
    }
}
