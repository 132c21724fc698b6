//! Events an application publishes directly (`POST /v1/events`): replicated state that arrives this way gets the
//! checks of its own write path (push URLs and the per-account cap, the breadth of a block; there is no `force`
//! here), everything else goes to the bus as it is. Unlike the blocked-IP and push-subscription writes, the caller
//! does not wait for the event to be applied: it is accepted once the coordinator queued it.

use agora::event::PushSubscription;
use agora::{Coordinator, Event, PublishError};

use super::block_list::{BlockError, BlockList};
use super::blocked_ips::canonical;
use super::error::{ErrorKind, ServiceError};
use super::push_subscriptions::{PushSubscriptions, SubscriptionError};

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// A push subscription that its own endpoint would refuse.
    #[error(transparent)]
    Subscription(#[from] SubscriptionError),
    /// A block that its own endpoint would refuse.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The coordinator refused the event.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl ServiceError for IntakeError {
    fn kind(&self) -> ErrorKind {
        match self {
            IntakeError::Subscription(e) => e.kind(),
            IntakeError::Block(e) => e.kind(),
            IntakeError::Publish(e) => e.kind(),
        }
    }
}

/// Where directly published events enter the node. Cheap to clone.
#[derive(Clone)]
pub struct EventIntake {
    coordinator: Coordinator,
    blocked_ips: BlockList,
    push_subscriptions: PushSubscriptions,
}

impl EventIntake {
    /// The intake, checking replicated state with the rules of `blocked_ips` and `push_subscriptions`.
    pub fn new(coordinator: Coordinator, blocked_ips: BlockList, push_subscriptions: PushSubscriptions) -> Self {
        EventIntake {
            coordinator,
            blocked_ips,
            push_subscriptions,
        }
    }

    /// Checks `event` and publishes it.
    pub async fn publish(&self, event: Event) -> Result<(), IntakeError> {
        match &event {
            Event::PushSubscriptionSet(subscription) => {
                self.push_subscriptions
                    .check(subscription.account_id, &subscription.url, Some(&subscription.id))?;
                // Published as an event, a subscription could skip the verification gate or the key checks.
                if **subscription
                    != PushSubscription::webhook(
                        subscription.id.clone(),
                        subscription.account_id,
                        subscription.url.clone(),
                        subscription.types,
                    )
                {
                    return Err(SubscriptionError::NotAWebhook.into());
                }
            }
            Event::BlockedIp { network, .. } => {
                let network = canonical(*network);
                self.blocked_ips.check_breadth(network, &network.to_string())?;
            }
            _ => {}
        }
        self.coordinator.publish(event).await?;
        Ok(())
    }
}
