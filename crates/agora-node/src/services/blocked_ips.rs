//! TEMPORARY stub (replaced on merge).
#![allow(missing_docs, unused_variables, dead_code)]
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockRule {
    pub network: IpNet,
    pub expires_at_ms: Option<u64>,
    pub reason: Option<String>,
    pub origin_node: u16,
    pub updated_at_us: u64,
}
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockedIpSnapshot {
    pub rules: Vec<BlockRule>,
    pub tombstones: Vec<Tombstone>,
}
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub network: IpNet,
    pub deleted_at_us: u64,
}
#[derive(Debug, Default)]
pub struct BlockedIpRegistry {
    rules: Vec<BlockRule>,
}
impl BlockedIpRegistry {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn block(&mut self, rule: BlockRule) -> bool {
        unimplemented!()
    }
    pub fn unblock(&mut self, network: IpNet, at_us: u64) -> bool {
        unimplemented!()
    }
    pub fn lookup(&self, ip: IpAddr, now_ms: u64) -> Option<&BlockRule> {
        unimplemented!()
    }
    pub fn get(&self, network: &IpNet) -> Option<&BlockRule> {
        unimplemented!()
    }
    pub fn list(&self, now_ms: u64) -> Vec<BlockRule> {
        unimplemented!()
    }
    pub fn len(&self) -> usize {
        unimplemented!()
    }
    pub fn is_empty(&self) -> bool {
        unimplemented!()
    }
    pub fn purge(&mut self, now_ms: u64, tombstone_ttl_us: u64) -> usize {
        unimplemented!()
    }
    pub fn snapshot(&self) -> BlockedIpSnapshot {
        unimplemented!()
    }
    pub fn merge(&mut self, snapshot: BlockedIpSnapshot) -> usize {
        unimplemented!()
    }
}
