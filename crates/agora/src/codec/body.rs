//! Record bodies: the per-tag field layouts, their exact sizes, writers and readers.
//!
//! Sizing (`body_len`) and writing (`write_body`) must agree byte for byte: the length prefix is written before the
//! body. The tests check them against each other for every variant.

use bytes::Bytes;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::RecordErrorKind;
use super::tags;
use super::varint::{self, Out, Reader};
use super::{Control, Heartbeat, Record};
use crate::event::{CacheKind, DataTypes, Event, PushKeys, PushSubscription, ReloadTarget};

/// A record to encode, borrowed, so events are not cloned into a [`Record`] to be written.
#[derive(Clone, Copy)]
pub(crate) enum RecordRef<'a> {
    Event(&'a Event),
    Control(&'a Control),
}

impl RecordRef<'_> {
    /// The record's tag.
    #[inline]
    pub(crate) fn tag(self) -> u16 {
        match self {
            RecordRef::Event(event) => event_tag(event),
            RecordRef::Control(Control::Heartbeat(_)) => tags::HEARTBEAT,
            RecordRef::Control(Control::Leave) => tags::LEAVE,
        }
    }

    /// The exact body length in bytes.
    #[inline]
    pub(crate) fn body_len(self) -> usize {
        match self {
            RecordRef::Event(event) => event_body_len(event),
            RecordRef::Control(Control::Heartbeat(hb)) => {
                varint::len(u64::from(hb.interval_ms))
                    + varint::len(hb.started_at_ms)
                    + opt_str_len(&hb.http)
                    + hb.stalwart_node_id.map_or(0, |id| 1 + varint::len(u64::from(id)))
            }
            RecordRef::Control(Control::Leave) => 0,
        }
    }

    /// Writes the body: exactly `body_len()` bytes.
    #[inline]
    pub(crate) fn write_body<O: Out>(self, out: &mut O) {
        match self {
            RecordRef::Event(event) => write_event_body(out, event),
            RecordRef::Control(Control::Heartbeat(hb)) => {
                varint::write(out, u64::from(hb.interval_ms));
                varint::write(out, hb.started_at_ms);
                write_opt_str(out, &hb.http);
                // Absent rather than a 0 presence byte when unset: byte-identical to what older nodes send.
                if let Some(id) = hb.stalwart_node_id {
                    out.put(1);
                    varint::write(out, u64::from(id));
                }
            }
            RecordRef::Control(Control::Leave) => {}
        }
    }
}

/// Longest heartbeat `http` field accepted (an address such as `[2001:db8::1]:7911` or a short URL).
pub(crate) const MAX_HTTP_FIELD: usize = 256;

/// The tag of an event.
#[inline]
pub(crate) fn event_tag(event: &Event) -> u16 {
    match event {
        Event::StateChange { .. } => tags::STATE_CHANGE,
        Event::EmailPush { .. } => tags::EMAIL_PUSH,
        Event::CalendarAlert { .. } => tags::CALENDAR_ALERT,
        Event::PushSubscriptionSet(_) => tags::PUSH_SUBSCRIPTION_SET,
        Event::PushSubscriptionRemoved { .. } => tags::PUSH_SUBSCRIPTION_REMOVED,
        Event::BlockedIp { .. } => tags::BLOCKED_IP,
        Event::UnblockedIp { .. } => tags::UNBLOCKED_IP,
        Event::Reload { .. } => tags::RELOAD,
        Event::CertificateRenewed { .. } => tags::CERTIFICATE_RENEWED,
        Event::CacheInvalidate { .. } => tags::CACHE_INVALIDATE,
        Event::CacheInvalidateAll {} => tags::CACHE_INVALIDATE_ALL,
        Event::QueuePaused {} => tags::QUEUE_PAUSED,
        Event::QueueResumed {} => tags::QUEUE_RESUMED,
        Event::QueueRefresh {} => tags::QUEUE_REFRESH,
        Event::Custom { .. } => tags::CUSTOM,
        Event::Stalwart(_) => tags::STALWART,
        Event::TokensRevoked { .. } => tags::TOKENS_REVOKED,
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Sizes

#[inline]
fn bytes_len(len: usize) -> usize {
    varint::len(len as u64) + len
}

#[inline]
fn opt_str_len(s: &Option<String>) -> usize {
    1 + s.as_ref().map_or(0, |s| bytes_len(s.len()))
}

#[inline]
fn network_len(net: &IpNet) -> usize {
    match net {
        IpNet::V4(_) => 2 + 4,
        IpNet::V6(_) => 2 + 16,
    }
}

/// The exact body length of an event.
#[inline]
pub(crate) fn event_body_len(event: &Event) -> usize {
    match event {
        Event::StateChange {
            account_id,
            change_id,
            types,
        } => varint::len(u64::from(*account_id)) + varint::len(*change_id) + varint::len(types.bits()),
        Event::EmailPush {
            account_id,
            email_id,
            change_id,
        } => varint::len(u64::from(*account_id)) + varint::len(u64::from(*email_id)) + varint::len(*change_id),
        Event::CalendarAlert {
            account_id,
            event_id,
            alert_id,
            recurrence_id,
        } => {
            varint::len(u64::from(*account_id))
                + varint::len(u64::from(*event_id))
                + bytes_len(alert_id.len())
                + 1
                + recurrence_id.map_or(0, |r| varint::len(varint::zigzag(r)))
        }
        Event::PushSubscriptionSet(sub) => {
            bytes_len(sub.id.len())
                + varint::len(u64::from(sub.account_id))
                + bytes_len(sub.url.len())
                + varint::len(sub.types.bits())
                + opt_str_len(&sub.device_client_id)
                + 1
                + sub
                    .keys
                    .as_ref()
                    .map_or(0, |k| bytes_len(k.p256dh.len()) + bytes_len(k.auth.len()))
                + 1
                + sub.expires_at_ms.map_or(0, varint::len)
                + opt_str_len(&sub.verification_code)
                + 1
        }
        Event::PushSubscriptionRemoved { id } => bytes_len(id.len()),
        Event::BlockedIp {
            network,
            expires_at_ms,
            reason,
        } => network_len(network) + 1 + expires_at_ms.map_or(0, varint::len) + opt_str_len(reason),
        Event::UnblockedIp { network } => network_len(network),
        Event::Reload { target } => varint::len(u64::from(target.code())),
        Event::CertificateRenewed { domains } => {
            varint::len(domains.len() as u64) + domains.iter().map(|d| bytes_len(d.len())).sum::<usize>()
        }
        Event::CacheInvalidate { cache, key } => varint::len(u64::from(cache.code())) + bytes_len(key.len()),
        Event::CacheInvalidateAll {} | Event::QueuePaused {} | Event::QueueResumed {} | Event::QueueRefresh {} => 0,
        Event::Custom { name, data } => bytes_len(name.len()) + bytes_len(data.len()),
        // Rare (registry and cache changes): measured by encoding rather than by a second length function.
        Event::Stalwart(event) => {
            let mut body = Vec::new();
            crate::stalwart::encode_canonical(event, &mut body);
            body.len()
        }
        Event::TokensRevoked {
            accounts,
            jti,
            revoked_at_ms,
            keep_until_ms,
        } => {
            varint::len(accounts.len() as u64)
                + accounts.iter().map(|a| varint::len(u64::from(*a))).sum::<usize>()
                + opt_str_len(jti)
                + varint::len(*revoked_at_ms)
                + varint::len(*keep_until_ms)
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Writers

#[inline]
fn write_bytes<O: Out>(out: &mut O, b: &[u8]) {
    varint::write(out, b.len() as u64);
    out.put_slice(b);
}

#[inline]
fn write_opt_str<O: Out>(out: &mut O, s: &Option<String>) {
    match s {
        None => out.put(0),
        Some(s) => {
            out.put(1);
            write_bytes(out, s.as_bytes());
        }
    }
}

#[inline]
fn write_network<O: Out>(out: &mut O, net: &IpNet) {
    match net {
        IpNet::V4(n) => {
            out.put(4);
            out.put(n.prefix_len());
            out.put_slice(&n.addr().octets());
        }
        IpNet::V6(n) => {
            out.put(6);
            out.put(n.prefix_len());
            out.put_slice(&n.addr().octets());
        }
    }
}

#[inline]
/// [`write_event_body`] for the codec's tests (old layouts are built by cutting a new body).
#[cfg(test)]
pub(crate) fn write_event_body_for_tests(out: &mut bytes::BytesMut, event: &Event) {
    write_event_body(out, event);
}

fn write_event_body<O: Out>(out: &mut O, event: &Event) {
    match event {
        Event::StateChange {
            account_id,
            change_id,
            types,
        } => {
            varint::write(out, u64::from(*account_id));
            varint::write(out, *change_id);
            varint::write(out, types.bits());
        }
        Event::EmailPush {
            account_id,
            email_id,
            change_id,
        } => {
            varint::write(out, u64::from(*account_id));
            varint::write(out, u64::from(*email_id));
            varint::write(out, *change_id);
        }
        Event::CalendarAlert {
            account_id,
            event_id,
            alert_id,
            recurrence_id,
        } => {
            varint::write(out, u64::from(*account_id));
            varint::write(out, u64::from(*event_id));
            write_bytes(out, alert_id.as_bytes());
            match recurrence_id {
                None => out.put(0),
                Some(r) => {
                    out.put(1);
                    varint::write(out, varint::zigzag(*r));
                }
            }
        }
        Event::PushSubscriptionSet(sub) => {
            write_bytes(out, sub.id.as_bytes());
            varint::write(out, u64::from(sub.account_id));
            write_bytes(out, sub.url.as_bytes());
            varint::write(out, sub.types.bits());
            // Appended in the third release: older nodes ignore these trailing fields.
            write_opt_str(out, &sub.device_client_id);
            match &sub.keys {
                None => out.put(0),
                Some(keys) => {
                    out.put(1);
                    write_bytes(out, keys.p256dh.as_bytes());
                    write_bytes(out, keys.auth.as_bytes());
                }
            }
            match sub.expires_at_ms {
                None => out.put(0),
                Some(at) => {
                    out.put(1);
                    varint::write(out, at);
                }
            }
            write_opt_str(out, &sub.verification_code);
            out.put(u8::from(sub.verified));
        }
        Event::PushSubscriptionRemoved { id } => write_bytes(out, id.as_bytes()),
        Event::BlockedIp {
            network,
            expires_at_ms,
            reason,
        } => {
            write_network(out, network);
            match expires_at_ms {
                None => out.put(0),
                Some(at) => {
                    out.put(1);
                    varint::write(out, *at);
                }
            }
            write_opt_str(out, reason);
        }
        Event::UnblockedIp { network } => write_network(out, network),
        Event::Reload { target } => varint::write(out, u64::from(target.code())),
        Event::CertificateRenewed { domains } => {
            varint::write(out, domains.len() as u64);
            for d in domains {
                write_bytes(out, d.as_bytes());
            }
        }
        Event::CacheInvalidate { cache, key } => {
            varint::write(out, u64::from(cache.code()));
            write_bytes(out, key.as_bytes());
        }
        Event::CacheInvalidateAll {} | Event::QueuePaused {} | Event::QueueResumed {} | Event::QueueRefresh {} => {}
        Event::Custom { name, data } => {
            write_bytes(out, name.as_bytes());
            write_bytes(out, data);
        }
        Event::Stalwart(event) => {
            let mut body = Vec::new();
            crate::stalwart::encode_canonical(event, &mut body);
            out.put_slice(&body);
        }
        Event::TokensRevoked {
            accounts,
            jti,
            revoked_at_ms,
            keep_until_ms,
        } => {
            varint::write(out, accounts.len() as u64);
            for account in accounts {
                varint::write(out, u64::from(*account));
            }
            write_opt_str(out, jti);
            varint::write(out, *revoked_at_ms);
            varint::write(out, *keep_until_ms);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// Readers

/// Reads the fields of one body. Each read names its field, which ends up in [`RecordErrorKind::Corrupt`].
struct Fields<'a>(Reader<'a>);

impl<'a> Fields<'a> {
    #[inline]
    fn u64(&mut self, field: &'static str) -> Result<u64, RecordErrorKind> {
        self.0.varint().map_err(|_| RecordErrorKind::Corrupt(field))
    }

    #[inline]
    fn u16(&mut self, field: &'static str) -> Result<u16, RecordErrorKind> {
        u16::try_from(self.u64(field)?).map_err(|_| RecordErrorKind::Corrupt(field))
    }

    /// Every byte not read yet (a body that is one encoded value).
    #[inline]
    fn rest(&mut self) -> &'a [u8] {
        self.0.take_rest()
    }

    /// True when the body has no more bytes: fields appended by a newer version are optional.
    #[inline]
    fn at_end(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    fn u32(&mut self, field: &'static str) -> Result<u32, RecordErrorKind> {
        u32::try_from(self.u64(field)?).map_err(|_| RecordErrorKind::Corrupt(field))
    }

    #[inline]
    fn u8(&mut self, field: &'static str) -> Result<u8, RecordErrorKind> {
        u8::try_from(self.u64(field)?).map_err(|_| RecordErrorKind::Corrupt(field))
    }

    #[inline]
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], RecordErrorKind> {
        let len = self.u64(field)?;
        usize::try_from(len)
            .ok()
            .and_then(|len| self.0.take(len))
            .ok_or(RecordErrorKind::Corrupt(field))
    }

    #[inline]
    fn str(&mut self, field: &'static str) -> Result<&'a str, RecordErrorKind> {
        std::str::from_utf8(self.bytes(field)?).map_err(|_| RecordErrorKind::Corrupt(field))
    }

    #[inline]
    fn string(&mut self, field: &'static str) -> Result<String, RecordErrorKind> {
        self.str(field).map(str::to_owned)
    }

    /// An optional string: a presence marker, then the string when present.
    fn optional_string(&mut self, field: &'static str) -> Result<Option<String>, RecordErrorKind> {
        if self.present(field)? {
            self.string(field).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads an option marker: `false` for absent, `true` when the value follows.
    #[inline]
    fn present(&mut self, field: &'static str) -> Result<bool, RecordErrorKind> {
        match self.0.byte() {
            Some(0) => Ok(false),
            Some(1) => Ok(true),
            _ => Err(RecordErrorKind::Corrupt(field)),
        }
    }

    fn network(&mut self, field: &'static str) -> Result<IpNet, RecordErrorKind> {
        let corrupt = RecordErrorKind::Corrupt(field);
        let family = self.0.byte().ok_or(corrupt)?;
        let prefix = self.0.byte().ok_or(corrupt)?;
        match family {
            4 => {
                let octets: [u8; 4] = self.0.take(4).and_then(|b| b.try_into().ok()).ok_or(corrupt)?;
                Ipv4Net::new(octets.into(), prefix).map(IpNet::V4).map_err(|_| corrupt)
            }
            6 => {
                let octets: [u8; 16] = self.0.take(16).and_then(|b| b.try_into().ok()).ok_or(corrupt)?;
                Ipv6Net::new(octets.into(), prefix).map(IpNet::V6).map_err(|_| corrupt)
            }
            _ => Err(corrupt),
        }
    }

    fn u32s(&mut self, field: &'static str) -> Result<Vec<u32>, RecordErrorKind> {
        self.list(field, Self::u32)
    }

    fn strings(&mut self, field: &'static str) -> Result<Vec<String>, RecordErrorKind> {
        self.list(field, Self::string)
    }

    /// A count, then that many items read by `item`. No preallocation from the untrusted count: every item takes at
    /// least one byte, so the loop is bounded by the body length anyway.
    fn list<T>(
        &mut self,
        field: &'static str,
        mut item: impl FnMut(&mut Self, &'static str) -> Result<T, RecordErrorKind>,
    ) -> Result<Vec<T>, RecordErrorKind> {
        let count = self.u32(field)?;
        let mut list = Vec::new();
        for _ in 0..count {
            list.push(item(self, field)?);
        }
        Ok(list)
    }
}

/// Decodes the body of a record with a known tag. Trailing bytes after the known fields are ignored: they are
/// optional fields appended by a newer version.
#[inline]
pub(crate) fn decode_body(tag: u16, body: &[u8]) -> Result<Record, RecordErrorKind> {
    let mut f = Fields(Reader::new(body));
    let event = match tag {
        tags::STATE_CHANGE => Event::StateChange {
            account_id: f.u32("account_id")?,
            change_id: f.u64("change_id")?,
            types: DataTypes::from_bits(f.u64("types")?),
        },
        tags::EMAIL_PUSH => Event::EmailPush {
            account_id: f.u32("account_id")?,
            email_id: f.u32("email_id")?,
            change_id: f.u64("change_id")?,
        },
        tags::CALENDAR_ALERT => Event::CalendarAlert {
            account_id: f.u32("account_id")?,
            event_id: f.u32("event_id")?,
            alert_id: f.string("alert_id")?,
            recurrence_id: if f.present("recurrence_id")? {
                Some(varint::unzigzag(f.u64("recurrence_id")?))
            } else {
                None
            },
        },
        tags::PUSH_SUBSCRIPTION_SET => {
            let mut sub = PushSubscription::webhook(
                f.string("id")?,
                f.u32("account_id")?,
                f.string("url")?,
                DataTypes::from_bits(f.u64("types")?),
            );
            // A record of a node before the third release ends here: a webhook.
            if !f.at_end() {
                sub.device_client_id = f.optional_string("device_client_id")?;
                sub.keys = if f.present("keys")? {
                    Some(PushKeys {
                        p256dh: f.string("keys.p256dh")?,
                        auth: f.string("keys.auth")?,
                    })
                } else {
                    None
                };
                sub.expires_at_ms = if f.present("expires_at_ms")? {
                    Some(f.u64("expires_at_ms")?)
                } else {
                    None
                };
                sub.verification_code = f.optional_string("verification_code")?;
                sub.verified = f.present("verified")?;
            }
            Event::PushSubscriptionSet(Box::new(sub))
        }
        tags::PUSH_SUBSCRIPTION_REMOVED => Event::PushSubscriptionRemoved { id: f.string("id")? },
        tags::BLOCKED_IP => Event::BlockedIp {
            network: f.network("network")?,
            expires_at_ms: if f.present("expires_at_ms")? {
                Some(f.u64("expires_at_ms")?)
            } else {
                None
            },
            reason: if f.present("reason")? {
                Some(f.string("reason")?)
            } else {
                None
            },
        },
        tags::UNBLOCKED_IP => Event::UnblockedIp {
            network: f.network("network")?,
        },
        tags::RELOAD => Event::Reload {
            target: ReloadTarget::from_code(f.u8("target")?).ok_or(RecordErrorKind::UnknownValue("target"))?,
        },
        tags::CERTIFICATE_RENEWED => Event::CertificateRenewed {
            domains: f.strings("domains")?,
        },
        tags::CACHE_INVALIDATE => Event::CacheInvalidate {
            cache: CacheKind::from_code(f.u8("cache")?).ok_or(RecordErrorKind::UnknownValue("cache"))?,
            key: f.string("key")?,
        },
        tags::CACHE_INVALIDATE_ALL => Event::CacheInvalidateAll {},
        tags::QUEUE_PAUSED => Event::QueuePaused {},
        tags::QUEUE_RESUMED => Event::QueueResumed {},
        tags::QUEUE_REFRESH => Event::QueueRefresh {},
        tags::CUSTOM => Event::Custom {
            name: f.string("name")?,
            data: Bytes::copy_from_slice(f.bytes("data")?),
        },
        // The whole body is the canonical encoding; events that map to agora's own become them.
        // Bytes after the event are ignored, like fields a newer version appends to any other record.
        tags::STALWART => crate::event::stalwart_mapping::to_agora(
            crate::stalwart::decode_canonical_prefix(f.rest())
                .map(|(event, _)| event)
                .map_err(|_| RecordErrorKind::Corrupt("stalwart"))?,
        ),
        tags::TOKENS_REVOKED => Event::TokensRevoked {
            accounts: f.u32s("accounts")?,
            jti: f.optional_string("jti")?,
            revoked_at_ms: f.u64("revoked_at_ms")?,
            keep_until_ms: f.u64("keep_until_ms")?,
        },
        tags::HEARTBEAT => {
            return Ok(Record::Control(Control::Heartbeat(Heartbeat {
                interval_ms: f.u32("interval_ms")?,
                started_at_ms: f.u64("started_at_ms")?,
                http: if f.present("http")? {
                    let http = f.string("http")?;
                    // A host:port or URL; anything longer is not one, and would cost every receiver memory.
                    if http.len() > MAX_HTTP_FIELD {
                        return Err(RecordErrorKind::Corrupt("http"));
                    }
                    Some(http)
                } else {
                    None
                },
                stalwart_node_id: if !f.at_end() && f.present("stalwart_node_id")? {
                    Some(f.u16("stalwart_node_id")?)
                } else {
                    None
                },
            })));
        }
        tags::LEAVE => return Ok(Record::Control(Control::Leave)),
        _ => return Err(RecordErrorKind::UnknownTag),
    };
    Ok(Record::Event(event))
}
