//! Membership: who hosts which prosumers, and for how long.
//!
//! A registration is a lease ([`Node`]) on a contiguous id range: a
//! registration that never joins expires `join_timeout_ms` after `Register`;
//! a node whose stream is gone keeps its range for `lease_grace_ms` (its
//! households are *absent*, not missing, and can come back with their
//! state), then it expires and its households leave the community. Resuming
//! needs the session's secret; a market that forgot a session (it restarted,
//! or the lease expired) adopts it from the node's claim if the range is
//! free. Ids are allocated first-fit over the live ranges, so expired ranges
//! are reused and the id space never fills with ghosts.
//!
//! This file owns the leases and their rules only; the types callers use
//! to speak of nodes ([`super::NodeKey`], [`super::RegisterRequest`], ...)
//! are the state's, and what a node's (dis)connection means for the open
//! round or the KPIs is [`super::MarketState`]'s to decide. Every request
//! is checked whole before a lease changes.

use std::collections::BTreeMap;

use peergrid_core::physics::Envelope;
use peergrid_core::rng::derive_seed;
use peergrid_core::units::ProsumerId;

use super::{Expired, NodeKey, ProsumerInfo, RegisterRequest};
use crate::config::MarketSettings;
use crate::error::MarketError;

/// Most prosumers one node may host.
pub(crate) const MAX_NODE_PROSUMERS: u32 = 100_000;
/// Most prosumers a market hosts in total.
pub(crate) const MAX_PROSUMERS: u32 = 10_000_000;
/// Node names follow the one rule (`peergrid_core::node_name`).
pub(crate) fn check_node_name(name: &str) -> Result<(), MarketError> {
    peergrid_core::node_name::check_node_name(name, "node_name").map_err(|e| match e {
        peergrid_core::CoreError::InvalidField { field, reason } => {
            MarketError::invalid(field, reason)
        }
        other => MarketError::invalid("node_name", other.to_string()),
    })
}

/// A registration: a lease on an id range. The round and the ledger read
/// it; only [`Membership`] changes it.
#[derive(Clone, Debug)]
pub(super) struct Node {
    session_id: String,
    /// Proves ownership in `Join` and on resume; never logged.
    secret: String,
    name: String,
    pub(super) first: ProsumerId,
    pub(super) count: u32,
    pub(super) joined: bool,
    pub(super) connected: bool,
    pub(super) generation: u64,
    pub(super) last_seen_ms: u64,
    /// Whether it sent a batch for the last slot cleared (a node that did
    /// not, and has been silent past the node timeout, is not waited for).
    pub(super) reported_last_round: bool,
    /// When the lease started to run down: registration (not joined yet)
    /// or the end of its last stream. `None` while connected.
    idle_since_ms: Option<u64>,
    /// Declared equipment of prosumers `first..first + count` (from the
    /// latest `Join`; empty before the first).
    pub(super) envelopes: Vec<Envelope>,
}

impl Node {
    /// What `Register` hands back: the session id, its secret, the id range.
    pub(super) fn session(&self) -> (&str, &str, ProsumerId, u32) {
        (&self.session_id, &self.secret, self.first, self.count)
    }

    pub(super) fn hosts(&self, id: ProsumerId) -> bool {
        id >= self.first && id - self.first < self.count
    }

    pub(super) fn end(&self) -> ProsumerId {
        self.first + self.count
    }
}

/// Compares two secrets in time independent of where they differ.
fn secret_matches(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Every live lease, by index.
#[derive(Clone, Debug)]
pub(super) struct Membership {
    /// Makes session ids unpredictable across runs.
    session_seed: u64,
    /// Most prosumers one node may host: [`MAX_NODE_PROSUMERS`], and no
    /// more than one batch can report.
    max_node_prosumers: u32,
    lease_grace_ms: u64,
    join_timeout_ms: u64,
    /// Live registrations by index (indices are never reused, so a
    /// [`NodeKey`] of an expired node matches nothing).
    nodes: BTreeMap<usize, Node>,
    next_index: usize,
    leases_expired: u64,
}

impl Membership {
    pub(super) fn new(settings: &MarketSettings, session_seed: u64) -> Membership {
        Membership {
            session_seed,
            max_node_prosumers: MAX_NODE_PROSUMERS.min(settings.max_batch as u32),
            lease_grace_ms: settings.lease_grace_ms,
            join_timeout_ms: settings.join_timeout_ms,
            nodes: BTreeMap::new(),
            next_index: 0,
            leases_expired: 0,
        }
    }

    /// Assigns a new node a free contiguous id range (first fit over the
    /// live leases), or gives a resuming node its range back. `secret` is a
    /// fresh unguessable value the caller drew; a new registration keeps it.
    pub(super) fn register(
        &mut self,
        request: RegisterRequest<'_>,
        secret: String,
        now_ms: u64,
    ) -> Result<&Node, MarketError> {
        let RegisterRequest {
            name,
            prosumer_count,
            resume_session_id,
            resume_first_id,
            resume_secret,
        } = request;
        check_node_name(name)?;
        let max = self.max_node_prosumers;
        if !(1..=max).contains(&prosumer_count) {
            return Err(MarketError::invalid(
                "prosumer_count",
                format!("must lie in 1..={max}, got {prosumer_count}"),
            ));
        }
        let index = if resume_session_id.is_empty() {
            self.register_new(name, prosumer_count, secret, now_ms)?
        } else {
            self.resume(
                name,
                prosumer_count,
                resume_session_id,
                resume_first_id,
                resume_secret,
                now_ms,
            )?
        };
        Ok(&self.nodes[&index])
    }

    fn register_new(
        &mut self,
        name: &str,
        count: u32,
        secret: String,
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        let first = self.free_range(count).ok_or_else(|| {
            MarketError::exhausted(
                "prosumer_count",
                format!(
                    "the market hosts at most {MAX_PROSUMERS} prosumers ({} registered)",
                    self.registered_prosumers()
                ),
            )
        })?;
        let index = self.next_index;
        let session_id = format!(
            "{:016x}{:016x}",
            derive_seed(self.session_seed, &format!("session/{index}")),
            derive_seed(self.session_seed, &format!("session-check/{index}"))
        );
        Ok(self.insert_node(name, session_id, secret, first, count, now_ms))
    }

    /// A node that holds a session: its lease back (with the secret), or,
    /// if this market does not know the session, the range it claims.
    fn resume(
        &mut self,
        name: &str,
        count: u32,
        session_id: &str,
        claimed_first: Option<ProsumerId>,
        secret: &str,
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        if !is_hex32(secret) {
            return Err(MarketError::invalid(
                "resume_secret",
                "must be the 32 hex characters the market issued with the session",
            ));
        }
        let index = match (self.node_of_session(session_id), claimed_first) {
            (Ok(index), _) => index,
            (Err(_), Some(first)) => {
                return self.adopt_session(name, session_id, secret, first, count, now_ms)
            }
            (Err(e), None) => return Err(e),
        };
        let node = &self.nodes[&index];
        if !secret_matches(&node.secret, secret) {
            return Err(MarketError::forbidden("resume_secret", "does not match the session"));
        }
        if node.count != count {
            return Err(MarketError::invalid(
                "prosumer_count",
                format!("a resumed session hosts {} prosumers, got {count}", node.count),
            ));
        }
        let node = self.nodes.get_mut(&index).expect("found above");
        node.name = name.to_owned();
        if !node.connected {
            node.idle_since_ms = Some(now_ms);
        }
        Ok(index)
    }

    fn insert_node(
        &mut self,
        name: &str,
        session_id: String,
        secret: String,
        first: ProsumerId,
        count: u32,
        now_ms: u64,
    ) -> usize {
        let index = self.next_index;
        self.next_index += 1;
        self.nodes.insert(
            index,
            Node {
                session_id,
                secret,
                name: name.to_owned(),
                first,
                count,
                joined: false,
                connected: false,
                generation: 0,
                last_seen_ms: now_ms,
                reported_last_round: true,
                idle_since_ms: Some(now_ms),
                envelopes: Vec::new(),
            },
        );
        index
    }

    /// The lowest id at which `count` ids are free of every live lease.
    fn free_range(&self, count: u32) -> Option<ProsumerId> {
        let mut ranges: Vec<(ProsumerId, ProsumerId)> =
            self.nodes.values().map(|n| (n.first, n.end())).collect();
        ranges.sort_unstable();
        let mut candidate: ProsumerId = 0;
        for (first, end) in ranges {
            if candidate.checked_add(count)? <= first {
                break;
            }
            candidate = candidate.max(end);
        }
        candidate.checked_add(count).filter(|end| *end <= MAX_PROSUMERS).map(|_| candidate)
    }

    /// Re-creates a session this market does not know (it restarted, or the
    /// lease expired), with the id range and secret the node holds, if that
    /// range is free.
    fn adopt_session(
        &mut self,
        name: &str,
        session_id: &str,
        secret: &str,
        first: ProsumerId,
        count: u32,
        now_ms: u64,
    ) -> Result<usize, MarketError> {
        if !is_hex32(session_id) {
            return Err(MarketError::invalid(
                "resume_session_id",
                "must be the 32 hex characters a market issued",
            ));
        }
        let end =
            first.checked_add(count).filter(|end| *end <= MAX_PROSUMERS).ok_or_else(|| {
                MarketError::invalid(
                    "resume_first_prosumer_id",
                    format!("range {first}+{count} exceeds {MAX_PROSUMERS}"),
                )
            })?;
        if let Some(other) = self.nodes.values().find(|n| first < n.end() && n.first < end) {
            return Err(MarketError::precondition(
                "resume_first_prosumer_id",
                format!(
                    "ids {first}..{end} overlap node '{}' ({}..{})",
                    other.name,
                    other.first,
                    other.end()
                ),
            ));
        }
        Ok(self.insert_node(name, session_id.to_owned(), secret.to_owned(), first, count, now_ms))
    }

    fn node_of_session(&self, session_id: &str) -> Result<usize, MarketError> {
        self.nodes.iter().find(|(_, n)| n.session_id == session_id).map(|(i, _)| *i).ok_or_else(
            || {
                MarketError::not_found(
                    "session_id",
                    "no such session (register first, or its lease expired)",
                )
            },
        )
    }

    /// Checks a `Join` whole (session, secret, one description per hosted
    /// prosumer in id order) and names the node; it changes nothing. The
    /// envelopes were validated at the edge (`grpc::prosumers_from_wire`);
    /// here that is only asserted.
    pub(super) fn check_join(
        &self,
        session_id: &str,
        secret: &str,
        prosumers: &[ProsumerInfo],
    ) -> Result<usize, MarketError> {
        let index = self.node_of_session(session_id)?;
        let node = &self.nodes[&index];
        if !secret_matches(&node.secret, secret) {
            return Err(MarketError::forbidden("resume_secret", "does not match the session"));
        }
        if prosumers.len() != node.count as usize {
            return Err(MarketError::invalid(
                "prosumers",
                format!(
                    "must describe the node's {} prosumers, got {}",
                    node.count,
                    prosumers.len()
                ),
            ));
        }
        for (i, p) in prosumers.iter().enumerate() {
            let want = node.first + i as u32;
            if p.prosumer_id != want {
                return Err(MarketError::invalid(
                    format!("prosumers[{i}].prosumer_id"),
                    format!("must be {want} (ids in range order), got {}", p.prosumer_id),
                ));
            }
            debug_assert!(
                p.envelope.validate(&format!("prosumers[{i}]")).is_ok(),
                "validated at the edge: {:?}",
                p.envelope
            );
        }
        Ok(index)
    }

    /// Connects node `index` (checked by [`Membership::check_join`]) with
    /// the equipment it declared; a previous connection is replaced.
    pub(super) fn connect(
        &mut self,
        index: usize,
        prosumers: &[ProsumerInfo],
        now_ms: u64,
    ) -> NodeKey {
        let node = self.nodes.get_mut(&index).expect("checked by check_join");
        node.envelopes = prosumers.iter().map(|p| p.envelope).collect();
        node.joined = true;
        node.connected = true;
        node.idle_since_ms = None;
        node.generation += 1;
        node.last_seen_ms = now_ms;
        node.reported_last_round = true;
        NodeKey { index, generation: node.generation }
    }

    pub(super) fn is_current(&self, key: NodeKey) -> bool {
        self.nodes.get(&key.index).is_some_and(|n| n.connected && n.generation == key.generation)
    }

    /// The connection `key` ended; a newer connection of the node is
    /// unaffected. The node's lease starts to run down.
    pub(super) fn disconnect(&mut self, key: NodeKey, now_ms: u64) -> bool {
        if !self.is_current(key) {
            return false;
        }
        let node = self.nodes.get_mut(&key.index).expect("current");
        node.connected = false;
        node.idle_since_ms = Some(now_ms);
        true
    }

    /// How long a lease runs down before it ends: a joined node's grace,
    /// or the (shorter) join timeout of one that never joined.
    fn allowance_ms(&self, node: &Node) -> u64 {
        if node.joined {
            self.lease_grace_ms
        } else {
            self.join_timeout_ms.min(self.lease_grace_ms)
        }
    }

    /// Ends the leases that ran out by `now_ms`, with the index each had.
    pub(super) fn expire(&mut self, now_ms: u64) -> Vec<(usize, Expired)> {
        let due: Vec<usize> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.idle_since_ms.is_some_and(|t| now_ms.saturating_sub(t) > self.allowance_ms(n))
            })
            .map(|(i, _)| *i)
            .collect();
        let mut expired = Vec::with_capacity(due.len());
        for index in due {
            let n = self.nodes.remove(&index).expect("listed above");
            self.leases_expired += 1;
            expired.push((
                index,
                Expired { name: n.name, first: n.first, count: n.count, never_joined: !n.joined },
            ));
        }
        expired
    }

    /// The node at `index`, if its lease is live.
    pub(super) fn get(&self, index: usize) -> Option<&Node> {
        self.nodes.get(&index)
    }

    /// Every live lease, in index order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (usize, &Node)> + '_ {
        self.nodes.iter().map(|(i, n)| (*i, n))
    }

    /// The node `key` was heard from (a batch, a hold).
    pub(super) fn seen(&mut self, key: NodeKey, now_ms: u64) {
        self.nodes.get_mut(&key.index).expect("current").last_seen_ms = now_ms;
    }

    /// Whether node `index` sent a batch for the slot just cleared.
    pub(super) fn set_reported(&mut self, index: usize, reported: bool) {
        self.nodes.get_mut(&index).expect("listed").reported_last_round = reported;
    }

    pub(super) fn connected_nodes(&self) -> impl Iterator<Item = NodeKey> + '_ {
        self.nodes
            .iter()
            .filter(|(_, n)| n.connected)
            .map(|(index, n)| NodeKey { index: *index, generation: n.generation })
    }

    pub(super) fn connected_prosumers(&self) -> u64 {
        self.nodes.values().filter(|n| n.connected).map(|n| n.count as u64).sum()
    }

    pub(super) fn registered_prosumers(&self) -> u64 {
        self.nodes.values().map(|n| n.count as u64).sum()
    }

    /// Prosumers of joined nodes that are within their lease but without a stream.
    pub(super) fn absent_prosumers(&self) -> u64 {
        self.nodes.values().filter(|n| n.joined && !n.connected).map(|n| n.count as u64).sum()
    }

    pub(super) fn node_name(&self, index: usize) -> &str {
        self.nodes.get(&index).map_or("?", |n| n.name.as_str())
    }

    /// Live leases.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    pub(super) fn lease_grace_ms(&self) -> u64 {
        self.lease_grace_ms
    }

    pub(super) fn leases_expired(&self) -> u64 {
        self.leases_expired
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::super::fixtures::{infos, reg, resume, state, state_with, WireCode, SECRET};
    use crate::config::MarketSettings;

    #[test]
    fn registration_assigns_contiguous_ranges_and_resumes() {
        let mut s = state();
        let a = reg(&mut s, "a", 3).unwrap();
        let b = reg(&mut s, "b", 5).unwrap();
        assert_eq!((a.first_prosumer_id, b.first_prosumer_id, b.prosumer_count), (0, 3, 5));
        assert_ne!(a.session_id, b.session_id);
        let again = resume(&mut s, "b-restarted", 5, &b.session_id, None, &b.secret).unwrap();
        assert_eq!((again.first_prosumer_id, again.secret.as_str()), (3, b.secret.as_str()));
        assert_eq!(
            resume(&mut s, "x", 5, "nope", None, SECRET).unwrap_err().code(),
            Code::NotFound
        );
        // A market that restarted adopts a session it does not know, with the
        // claimed range and secret, unless another node holds part of it.
        let adopted =
            resume(&mut s, "c", 4, "0123456789abcdef0123456789abcdef", Some(20), SECRET).unwrap();
        assert_eq!(
            (adopted.first_prosumer_id, adopted.prosumer_count, adopted.secret.as_str()),
            (20, 4, SECRET)
        );
        let clash = resume(&mut s, "d", 4, "fedcba9876543210fedcba9876543210", Some(22), SECRET)
            .unwrap_err();
        assert_eq!(clash.code(), Code::FailedPrecondition);
        assert_eq!(
            resume(&mut s, "e", 4, "not-hex", Some(40), SECRET).unwrap_err().code(),
            Code::InvalidArgument
        );
        let next = reg(&mut s, "f", 1).unwrap();
        assert_eq!(next.first_prosumer_id, 8, "first fit: the gap before the adopted range");
        assert_eq!(reg(&mut s, "", 1).unwrap_err().code(), Code::InvalidArgument);
        assert_eq!(
            reg(&mut s, "big", 9).unwrap_err().code(),
            Code::InvalidArgument,
            "above max_batch"
        );
        let e = s.join(&a.session_id, &a.secret, &infos(1, 3), 0).unwrap_err();
        assert!(e.to_string().contains("prosumers[0].prosumer_id"), "{e}");
        assert_eq!(s.status().prosumers, 13, "3 + 5 + 4 + 1 registered prosumers");
    }

    #[test]
    fn a_bare_session_id_grants_nothing() {
        let mut s = state();
        let a = reg(&mut s, "a", 2).unwrap();
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 2), 0).unwrap();
        // Another holder of the agent token knows the session id, not the secret.
        let wrong = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            s.join(&a.session_id, wrong, &infos(0, 2), 0).unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            resume(&mut s, "thief", 2, &a.session_id, Some(0), wrong).unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            resume(&mut s, "thief", 2, &a.session_id, None, "").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert!(s.members.is_current(ka), "the real node keeps its connection");
        // The node itself reconnects with the secret and replaces its old connection.
        let kb = s.join(&a.session_id, &a.secret, &infos(0, 2), 5).unwrap();
        assert!(s.members.is_current(kb) && !s.members.is_current(ka));
        assert!(!format!("{a:?}").contains(&a.secret), "Debug redacts the secret");
    }

    #[test]
    fn leases_expire_and_ranges_are_reused() {
        let settings = MarketSettings {
            min_prosumers: 1,
            max_batch: 8,
            lease_grace_ms: 1_000,
            join_timeout_ms: 200,
            insecure_no_auth: true,
            ..MarketSettings::default()
        };
        let mut s = state_with(&settings);
        let a = reg(&mut s, "a", 4).unwrap();
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 4), 0).unwrap();
        // Registrations that never join expire quickly and free their ids.
        for _ in 0..3 {
            reg(&mut s, "squatter", 8).unwrap();
        }
        assert_eq!(s.status().prosumers, 28);
        assert_eq!(s.expire_leases(150).len(), 0);
        let gone = s.expire_leases(201);
        assert!(gone.len() == 3 && gone.iter().all(|e| e.never_joined), "{gone:?}");
        assert_eq!(s.status().prosumers, 4);
        // A node without a stream is absent, not missing, until its grace ends.
        s.open(300, 0);
        s.disconnect(ka, 300);
        let out = s.clear();
        assert_eq!((out.summary.missing, out.summary.absent), (0, 4));
        assert_eq!(s.status().absent_prosumers, 4);
        // It comes back within the grace: same range, nothing expired.
        assert_eq!(s.expire_leases(1_200).len(), 0);
        let back = resume(&mut s, "a", 4, &a.session_id, Some(0), &a.secret).unwrap();
        assert_eq!(back.first_prosumer_id, 0);
        let ka = s.join(&a.session_id, &a.secret, &infos(0, 4), 1_250).unwrap();
        s.disconnect(ka, 1_300);
        assert_eq!(s.expire_leases(2_300).len(), 0);
        let gone = s.expire_leases(2_301);
        assert_eq!((gone.len(), gone[0].never_joined), (1, false));
        let st = s.status();
        assert_eq!((st.prosumers, st.absent_prosumers, st.nodes, st.leases_expired), (0, 0, 0, 4));
        // Its ids are free again, and a market that forgot the session
        // re-creates it from the node's claim.
        assert_eq!(reg(&mut s, "new", 2).unwrap().first_prosumer_id, 0);
        assert_eq!(
            resume(&mut s, "a", 4, &a.session_id, Some(0), &a.secret).unwrap_err().code(),
            Code::FailedPrecondition
        );
        assert_eq!(
            resume(&mut s, "a", 4, &a.session_id, Some(2), &a.secret).unwrap().first_prosumer_id,
            2
        );
    }
}
