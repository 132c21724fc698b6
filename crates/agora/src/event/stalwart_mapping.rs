//! Stalwart events as agora events and back (the mapping table of `docs/stalwart.md`).
//!
//! It lives with agora's events, not in [`crate::stalwart`]: the event type carries Stalwart events
//! ([`Event::Stalwart`]), so the Stalwart module sits below it and cannot name it.
//!
//! Five Stalwart events have an agora counterpart and become it, so applications see one `state_change` whatever
//! bus it came from; every other Stalwart event is the agora event `stalwart`, carried as is.

use super::{DataTypes, Event};
use crate::stalwart::StalwartEvent;

/// The agora event a Stalwart event is.
pub fn to_agora(event: StalwartEvent) -> Event {
    match event {
        StalwartEvent::StateChange {
            account_id,
            change_id,
            types,
        } => Event::StateChange {
            account_id,
            change_id,
            types: DataTypes::from_bits(types),
        },
        StalwartEvent::EmailPush {
            account_id,
            email_id,
            change_id,
        } => Event::EmailPush {
            account_id,
            email_id,
            change_id,
        },
        StalwartEvent::CacheInvalidateAll => Event::CacheInvalidateAll {},
        StalwartEvent::MtaQueueStatus { running: false } => Event::QueuePaused {},
        StalwartEvent::MtaQueueStatus { running: true } => Event::QueueResumed {},
        StalwartEvent::QueueRefresh => Event::QueueRefresh {},
        other => Event::Stalwart(other),
    }
}

/// The Stalwart event an agora event is, if it has a Stalwart form (the types [`crate::config::FORWARDABLE`] lists).
pub fn from_agora(event: &Event) -> Option<StalwartEvent> {
    Some(match event {
        Event::StateChange {
            account_id,
            change_id,
            types,
        } => StalwartEvent::StateChange {
            account_id: *account_id,
            change_id: *change_id,
            types: types.bits(),
        },
        Event::EmailPush {
            account_id,
            email_id,
            change_id,
        } => StalwartEvent::EmailPush {
            account_id: *account_id,
            email_id: *email_id,
            change_id: *change_id,
        },
        Event::CacheInvalidateAll {} => StalwartEvent::CacheInvalidateAll,
        Event::QueuePaused {} => StalwartEvent::MtaQueueStatus { running: false },
        Event::QueueResumed {} => StalwartEvent::MtaQueueStatus { running: true },
        Event::QueueRefresh {} => StalwartEvent::QueueRefresh,
        Event::Stalwart(event) => event.clone(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FORWARDABLE;
    use crate::stalwart::ObjectType;

    #[test]
    fn the_mapped_kinds_round_trip_and_the_rest_travel_as_stalwart_events() {
        let cases = [
            StalwartEvent::StateChange {
                account_id: u32::MAX,
                change_id: u64::MAX,
                types: u64::MAX,
            },
            StalwartEvent::EmailPush {
                account_id: 1,
                email_id: 2,
                change_id: 3,
            },
            StalwartEvent::CacheInvalidateAll,
            StalwartEvent::MtaQueueStatus { running: false },
            StalwartEvent::MtaQueueStatus { running: true },
            StalwartEvent::QueueRefresh,
            StalwartEvent::RegistryDelete {
                object: ObjectType(17),
                id: 1 << 60,
            },
            StalwartEvent::ReloadSpamFilter,
        ];
        for stalwart in cases {
            let agora = to_agora(stalwart.clone());
            assert!(FORWARDABLE.contains(&agora.type_name()), "{agora:?}");
            assert_eq!(from_agora(&agora), Some(stalwart), "lossless both ways");
        }
        assert!(matches!(to_agora(StalwartEvent::ReloadSettings), Event::Stalwart(_)));
        assert_eq!(
            from_agora(&Event::Reload {
                target: crate::event::ReloadTarget::Settings
            }),
            None
        );
    }
}
