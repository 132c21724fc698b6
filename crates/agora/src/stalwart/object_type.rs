//! Stalwart 0.16's registry object types, as the bus carries them in `RegistryChange` events.

use std::fmt;

/// A Stalwart registry object type id (`ObjectType::to_id()` in Stalwart 0.16), as a `u16` on the bus.
///
/// An open newtype rather than an enum: a later Stalwart release may add object types, and agora must still be able to
/// hold, show and forward such an id. Stalwart 0.16.x knows ids `0..=116` (the same in every 0.16 release) and fails
/// the decode of any other, so [`super::decode_batch`] rejects them and [`super::encode_batch`] never writes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectType(pub u16);

impl ObjectType {
    /// How many object types Stalwart 0.16.x knows: ids `0..COUNT`.
    pub const COUNT: u16 = 117;

    /// The names of the known object types, indexed by id: Stalwart's own variant names, so that logs and the JSON
    /// form read the same as Stalwart's.
    pub const NAMES: [&'static str; 117] = [
        "Account",
        "AccountPassword",
        "AccountSettings",
        "AcmeProvider",
        "Action",
        "AddressBook",
        "AiModel",
        "Alert",
        "AllowedIp",
        "ApiKey",
        "AppPassword",
        "Application",
        "ArchivedItem",
        "ArfExternalReport",
        "Asn",
        "Authentication",
        "BlobStore",
        "BlockedIp",
        "Bootstrap",
        "Cache",
        "Calendar",
        "CalendarAlarm",
        "CalendarScheduling",
        "Certificate",
        "ClusterNode",
        "ClusterRole",
        "Coordinator",
        "DataRetention",
        "DataStore",
        "Directory",
        "DkimReportSettings",
        "DkimSignature",
        "DmarcExternalReport",
        "DmarcInternalReport",
        "DmarcReportSettings",
        "DnsResolver",
        "DnsServer",
        "Domain",
        "DsnReportSettings",
        "Email",
        "Enterprise",
        "EventTracingLevel",
        "FileStorage",
        "Http",
        "HttpForm",
        "HttpLookup",
        "Imap",
        "InMemoryStore",
        "Jmap",
        "Log",
        "MailingList",
        "MaskedEmail",
        "MemoryLookupKey",
        "MemoryLookupKeyValue",
        "Metric",
        "Metrics",
        "MetricsStore",
        "MtaConnectionStrategy",
        "MtaDeliverySchedule",
        "MtaExtensions",
        "MtaHook",
        "MtaInboundSession",
        "MtaInboundThrottle",
        "MtaMilter",
        "MtaOutboundStrategy",
        "MtaOutboundThrottle",
        "MtaQueueQuota",
        "MtaRoute",
        "MtaStageAuth",
        "MtaStageConnect",
        "MtaStageData",
        "MtaStageEhlo",
        "MtaStageMail",
        "MtaStageRcpt",
        "MtaSts",
        "MtaTlsStrategy",
        "MtaVirtualQueue",
        "NetworkListener",
        "OAuthClient",
        "OidcProvider",
        "PublicKey",
        "QueuedMessage",
        "ReportSettings",
        "Role",
        "Search",
        "SearchStore",
        "Security",
        "SenderAuth",
        "Sharing",
        "SieveSystemInterpreter",
        "SieveSystemScript",
        "SieveUserInterpreter",
        "SieveUserScript",
        "SpamClassifier",
        "SpamDnsblServer",
        "SpamDnsblSettings",
        "SpamFileExtension",
        "SpamLlm",
        "SpamPyzor",
        "SpamRule",
        "SpamSettings",
        "SpamTag",
        "SpamTrainingSample",
        "SpfReportSettings",
        "StoreLookup",
        "SystemSettings",
        "Task",
        "TaskManager",
        "Tenant",
        "TlsExternalReport",
        "TlsInternalReport",
        "TlsReportSettings",
        "Trace",
        "Tracer",
        "TracingStore",
        "WebDav",
        "WebHook",
    ];

    /// Whether Stalwart 0.16.x knows this id (and so can decode an event carrying it).
    pub const fn is_known(self) -> bool {
        self.0 < Self::COUNT
    }

    /// Stalwart's name for this object type, or `None` for an id it does not know.
    pub fn name(self) -> Option<&'static str> {
        Self::NAMES.get(usize::from(self.0)).copied()
    }

    /// The object type Stalwart calls `name` (exact, case-sensitive), for configuration and the JSON form.
    pub fn from_name(name: &str) -> Option<Self> {
        let index = Self::NAMES.iter().position(|n| *n == name)?;
        u16::try_from(index).ok().map(ObjectType)
    }
}

impl fmt::Display for ObjectType {
    /// The name for a known id, `ObjectType(id)` for an unknown one, so an unknown id is never shown as a known one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "ObjectType({})", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference_ids() {
        assert_eq!(ObjectType(0).name(), Some("Account"));
        assert_eq!(ObjectType(37).name(), Some("Domain"));
        assert_eq!(ObjectType(83).name(), Some("Role"));
        assert_eq!(ObjectType(116).name(), Some("WebHook"));
        assert_eq!(ObjectType(117).name(), None);
        assert_eq!(ObjectType::from_name("WebHook"), Some(ObjectType(116)));
        assert_eq!(ObjectType::from_name("webhook"), None);
        assert_eq!(ObjectType(117).to_string(), "ObjectType(117)");
        for (id, name) in ObjectType::NAMES.iter().enumerate() {
            assert_eq!(
                ObjectType::from_name(name).map(|t| usize::from(t.0)),
                Some(id),
                "{name} is listed twice"
            );
        }
    }
}
