//! Named drop reasons: every packet the pipeline does not pass on is counted under one of these.

/// Why a packet was dropped. The kebab-case names are stable: status output, metrics and tests use
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum DropReason {
    /// Frame shorter than an Ethernet header.
    FrameTruncated,
    /// Unicast frame for another host (we see them in promiscuous mode).
    L2OtherHost,
    /// Multicast frame that no stage wants.
    L2Multicast,
    /// EtherType other than IPv4 and ARP.
    EthertypeUnsupported,
    /// ARP shorter than 28 bytes.
    ArpTruncated,
    /// ARP for something other than Ethernet/IPv4.
    ArpUnsupported,
    /// ARP request for an address that is not ours.
    ArpOtherTarget,
    /// ARP with a sender address outside the interface's prefix or a bad sender MAC.
    ArpBadSender,
    /// IPv4 packet shorter than 20 bytes.
    Ipv4Truncated,
    /// IP version other than 4.
    Ipv4BadVersion,
    /// IHL below 5 or beyond the packet.
    Ipv4BadHeaderLength,
    /// Total length inconsistent with header or frame.
    Ipv4BadTotalLength,
    /// Header checksum mismatch.
    Ipv4BadChecksum,
    /// Source address that can never be legitimate (0/8, 127/8, multicast, class E, ours).
    MartianSource,
    /// Destination address a router never forwards (0/8, 127/8, class E).
    MartianDestination,
    /// Limited or directed broadcast: never forwarded.
    BroadcastNotForwarded,
    /// Multicast destination: swrouter does not route multicast.
    MulticastNotForwarded,
    /// Fragment addressed to the router itself (no reassembly).
    LocalFragment,
    /// ICMP to the router with a bad checksum or too short.
    IcmpMalformed,
    /// ICMP type the router does not answer (it is not an error).
    LocalIcmpIgnored,
    /// Echo request not answered: its source's or the worker's echo reply rate was used up.
    IcmpEchoRateLimited,
    /// UDP to a router address on a port nobody listens on (port unreachable sent).
    LocalPortUnreachable,
    /// TCP to a router port that is no probe port, or another protocol (no listener).
    LocalProtocolUnsupported,
    /// UDP to a bound port shorter than its header or length field.
    UdpMalformed,
    /// UDP to a bound port whose checksum does not verify.
    UdpBadChecksum,
    /// TCP to a probe port shorter than its header.
    TcpMalformed,
    /// TCP to a probe port whose checksum does not verify.
    TcpBadChecksum,
    /// The prober's queue is full.
    ProbeQueueFull,
    /// TCP to a probe port with no probe in use (stale, spoofed or a scan).
    ProbePortClosed,
    /// A control port's queue for its known peers (WCCP member caches) is full.
    ControlQueueFullKnown,
    /// A control port's queue for other senders (joining caches, strangers) is full.
    ControlQueueFullOthers,
    /// WCCP on an interface that does not accept caches (`wccp-caches`).
    WccpNotCacheInterface,
    /// WCCP from a source the router does not reach through the interface it arrived on
    /// (a spoofed cache address).
    WccpReversePath,
    /// GRE to the router from an address that is no cache of any WCCP group.
    WccpReturnNotMember,
    /// GRE return whose redirect header names a service the sending cache is not in.
    WccpReturnWrongService,
    /// GRE return from a cache whose negotiated return method is not GRE (L2).
    WccpReturnNotGre,
    /// GRE return arriving on another interface than the one the router reaches the cache by.
    WccpReturnWrongInterface,
    /// No cache could take a WCCP service's packet and the service's `fail-policy` is closed
    /// (dropped, and with `closed-reject` answered).
    WccpFailClosed,
    /// GRE to the router that is not a readable WCCP return (bad header, inner not IPv4).
    GreMalformed,
    /// TTL reached zero (time exceeded sent).
    TtlExpired,
    /// No route to the destination (net unreachable sent).
    NoRoute,
    /// Packet larger than the egress MTU with DF set (fragmentation needed sent).
    MtuExceeded,
    /// Next hop did not answer ARP (host unreachable sent).
    NeighbourUnresolved,
    /// Too many packets waiting for one next hop.
    NeighbourQueueFull,
    /// Too many next hops being resolved at once.
    NeighbourPendingFull,
    /// The egress socket refused the frame.
    TxError,
    /// A packet went round the pipeline too often (an internal loop guard).
    PipelineLoop,
    /// A service's ACL denies the client packet.
    SteeringAclDeny,
    /// A frame claims to come back from a chain device but has another source MAC.
    SteeringUnexpectedSource,
    /// No live device in the pool of the next hop.
    SteeringNoDevice,
    /// The segment's device is dead and its pool resets flows: a TCP RST answers it.
    SteeringReset,
    /// A copy for a promiscuous device found the copy queue full (only the copy is lost).
    SteeringCopyOverflow,
    /// NAT: truncated or inconsistent headers of a packet to translate.
    NatMalformed,
    /// NAT: a fragment to or from a translated address (no virtual reassembly yet).
    NatFragment,
    /// NAT: a protocol or ICMP message NAT does not translate, from a translated source.
    NatUnsupported,
    /// NAT: the source matches no rule for the outside interface (at its owner).
    NatNoRule,
    /// NAT: inside TCP without SYN and without a session.
    NatNonSyn,
    /// NAT: inbound from a remote the mapping has no session with (address-and-port-dependent filtering).
    NatFiltered,
    /// NAT: inbound to no mapping, or an ICMP error about no session.
    NatNoSession,
    /// NAT: the packet reached a worker that does not own its VID (must stay 0).
    NatMisdelivered,
    /// NAT: the worker's session table is full.
    NatTableFull,
    /// NAT: no outside port left for a new session (ICMP administratively prohibited sent).
    NatPortExhausted,
    /// NAT: the owning worker's handoff queue is full.
    NatHandoffFull,
    /// NAT: the switch processor's set-up queue is full.
    NatSwitchFull,
    /// NAT: the session's worker and its backup are both down, or no worker is operational.
    NatWorkerDown,
    /// VRRP: the control plane's advertisement queue is full.
    VrrpQueueFull,
    /// VRRP: to a virtual address this master does not accept traffic for (Accept_Mode off,
    /// RFC 5798 §6.4.3).
    VrrpNotAccepted,
    /// NAT: the node is the HA standby, which translates its peer's synced sessions but
    /// creates none (both nodes share the pool).
    NatStandby,
    /// Cluster: a frame to the cluster MAC whose id another node handles (the normal fate of
    /// the other nodes' share: counted, never logged).
    ClusterForeign,
    /// Cluster: a frame of a moving id found this worker's hold queue full (`hold-limit`).
    ClusterHoldFull,
    /// Cluster: a held frame whose id went to another node with no hand-off (a fence, or a
    /// new owner with no MAC on the frame's interface).
    ClusterHoldDropped,
    /// Cluster: a frame the old owner of a just-gained id handed over that this node had
    /// already handled itself from the cluster MAC (both saw it during the handover).
    ClusterDuplicate,
    /// NAT: an ESP packet from the outside whose SPI no session learnt, with no session of
    /// its remote waiting to learn one (filtering).
    NatEspNoSession,
    /// NAT: a new ESP session found its table full.
    NatEspFull,
}

impl DropReason {
    /// Every reason, in declaration order (the counter array index is the discriminant).
    pub const ALL: [DropReason; 74] = [
        DropReason::FrameTruncated,
        DropReason::L2OtherHost,
        DropReason::L2Multicast,
        DropReason::EthertypeUnsupported,
        DropReason::ArpTruncated,
        DropReason::ArpUnsupported,
        DropReason::ArpOtherTarget,
        DropReason::ArpBadSender,
        DropReason::Ipv4Truncated,
        DropReason::Ipv4BadVersion,
        DropReason::Ipv4BadHeaderLength,
        DropReason::Ipv4BadTotalLength,
        DropReason::Ipv4BadChecksum,
        DropReason::MartianSource,
        DropReason::MartianDestination,
        DropReason::BroadcastNotForwarded,
        DropReason::MulticastNotForwarded,
        DropReason::LocalFragment,
        DropReason::IcmpMalformed,
        DropReason::LocalIcmpIgnored,
        DropReason::IcmpEchoRateLimited,
        DropReason::LocalPortUnreachable,
        DropReason::LocalProtocolUnsupported,
        DropReason::UdpMalformed,
        DropReason::UdpBadChecksum,
        DropReason::TcpMalformed,
        DropReason::TcpBadChecksum,
        DropReason::ProbeQueueFull,
        DropReason::ProbePortClosed,
        DropReason::ControlQueueFullKnown,
        DropReason::ControlQueueFullOthers,
        DropReason::WccpNotCacheInterface,
        DropReason::WccpReversePath,
        DropReason::WccpReturnNotMember,
        DropReason::WccpReturnWrongService,
        DropReason::WccpReturnNotGre,
        DropReason::WccpReturnWrongInterface,
        DropReason::WccpFailClosed,
        DropReason::GreMalformed,
        DropReason::TtlExpired,
        DropReason::NoRoute,
        DropReason::MtuExceeded,
        DropReason::NeighbourUnresolved,
        DropReason::NeighbourQueueFull,
        DropReason::NeighbourPendingFull,
        DropReason::TxError,
        DropReason::PipelineLoop,
        DropReason::SteeringAclDeny,
        DropReason::SteeringUnexpectedSource,
        DropReason::SteeringNoDevice,
        DropReason::SteeringReset,
        DropReason::SteeringCopyOverflow,
        DropReason::NatMalformed,
        DropReason::NatFragment,
        DropReason::NatUnsupported,
        DropReason::NatNoRule,
        DropReason::NatNonSyn,
        DropReason::NatFiltered,
        DropReason::NatNoSession,
        DropReason::NatMisdelivered,
        DropReason::NatTableFull,
        DropReason::NatPortExhausted,
        DropReason::NatHandoffFull,
        DropReason::NatSwitchFull,
        DropReason::NatWorkerDown,
        DropReason::VrrpQueueFull,
        DropReason::VrrpNotAccepted,
        DropReason::NatStandby,
        DropReason::ClusterForeign,
        DropReason::ClusterHoldFull,
        DropReason::ClusterHoldDropped,
        DropReason::ClusterDuplicate,
        DropReason::NatEspNoSession,
        DropReason::NatEspFull,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// True for reasons that are the normal fate of many packets and are only counted, never
    /// logged (not even the first).
    pub fn is_quiet(self) -> bool {
        matches!(self, DropReason::ClusterForeign)
    }

    /// Stable kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::FrameTruncated => "frame-truncated",
            DropReason::L2OtherHost => "l2-other-host",
            DropReason::L2Multicast => "l2-multicast",
            DropReason::EthertypeUnsupported => "ethertype-unsupported",
            DropReason::ArpTruncated => "arp-truncated",
            DropReason::ArpUnsupported => "arp-unsupported",
            DropReason::ArpOtherTarget => "arp-other-target",
            DropReason::ArpBadSender => "arp-bad-sender",
            DropReason::Ipv4Truncated => "ipv4-truncated",
            DropReason::Ipv4BadVersion => "ipv4-bad-version",
            DropReason::Ipv4BadHeaderLength => "ipv4-bad-header-length",
            DropReason::Ipv4BadTotalLength => "ipv4-bad-total-length",
            DropReason::Ipv4BadChecksum => "ipv4-bad-checksum",
            DropReason::MartianSource => "martian-source",
            DropReason::MartianDestination => "martian-destination",
            DropReason::BroadcastNotForwarded => "broadcast-not-forwarded",
            DropReason::MulticastNotForwarded => "multicast-not-forwarded",
            DropReason::LocalFragment => "local-fragment",
            DropReason::IcmpMalformed => "icmp-malformed",
            DropReason::LocalIcmpIgnored => "local-icmp-ignored",
            DropReason::IcmpEchoRateLimited => "icmp-echo-rate-limited",
            DropReason::LocalPortUnreachable => "local-port-unreachable",
            DropReason::LocalProtocolUnsupported => "local-protocol-unsupported",
            DropReason::UdpMalformed => "udp-malformed",
            DropReason::UdpBadChecksum => "udp-bad-checksum",
            DropReason::TcpMalformed => "tcp-malformed",
            DropReason::TcpBadChecksum => "tcp-bad-checksum",
            DropReason::ProbeQueueFull => "probe-queue-full",
            DropReason::ProbePortClosed => "probe-port-closed",
            DropReason::ControlQueueFullKnown => "control-queue-full-known",
            DropReason::ControlQueueFullOthers => "control-queue-full-others",
            DropReason::WccpNotCacheInterface => "wccp-not-cache-interface",
            DropReason::WccpReversePath => "wccp-reverse-path",
            DropReason::WccpReturnNotMember => "wccp-return-not-member",
            DropReason::WccpReturnWrongService => "wccp-return-wrong-service",
            DropReason::WccpReturnNotGre => "wccp-return-not-gre",
            DropReason::WccpReturnWrongInterface => "wccp-return-wrong-interface",
            DropReason::WccpFailClosed => "wccp-fail-closed",
            DropReason::GreMalformed => "gre-malformed",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::NoRoute => "no-route",
            DropReason::MtuExceeded => "mtu-exceeded",
            DropReason::NeighbourUnresolved => "neighbour-unresolved",
            DropReason::NeighbourQueueFull => "neighbour-queue-full",
            DropReason::NeighbourPendingFull => "neighbour-pending-full",
            DropReason::TxError => "tx-error",
            DropReason::PipelineLoop => "pipeline-loop",
            DropReason::SteeringAclDeny => "steering-acl-deny",
            DropReason::SteeringUnexpectedSource => "steering-unexpected-source",
            DropReason::SteeringNoDevice => "steering-no-device",
            DropReason::SteeringReset => "steering-reset",
            DropReason::SteeringCopyOverflow => "steering-copy-overflow",
            DropReason::NatMalformed => "nat-malformed",
            DropReason::NatFragment => "nat-fragment",
            DropReason::NatUnsupported => "nat-unsupported",
            DropReason::NatNoRule => "nat-no-rule",
            DropReason::NatNonSyn => "nat-non-syn",
            DropReason::NatFiltered => "nat-filtered",
            DropReason::NatNoSession => "nat-no-session",
            DropReason::NatMisdelivered => "nat-misdelivered",
            DropReason::NatTableFull => "nat-table-full",
            DropReason::NatPortExhausted => "nat-port-exhausted",
            DropReason::NatHandoffFull => "nat-handoff-full",
            DropReason::NatSwitchFull => "nat-switch-full",
            DropReason::NatWorkerDown => "nat-worker-down",
            DropReason::VrrpQueueFull => "vrrp-queue-full",
            DropReason::VrrpNotAccepted => "vrrp-not-accepted",
            DropReason::NatStandby => "nat-standby",
            DropReason::NatEspNoSession => "nat-esp-no-session",
            DropReason::NatEspFull => "nat-esp-full",
            DropReason::ClusterForeign => "cluster-foreign",
            DropReason::ClusterHoldFull => "cluster-hold-full",
            DropReason::ClusterHoldDropped => "cluster-hold-dropped",
            DropReason::ClusterDuplicate => "cluster-duplicate",
        }
    }
}

impl From<nat::worker::NatDrop> for DropReason {
    fn from(d: nat::worker::NatDrop) -> DropReason {
        use nat::worker::NatDrop as N;
        match d {
            N::Malformed => DropReason::NatMalformed,
            N::Fragment => DropReason::NatFragment,
            N::Unsupported => DropReason::NatUnsupported,
            N::NoRule => DropReason::NatNoRule,
            N::NonSyn => DropReason::NatNonSyn,
            N::Filtered => DropReason::NatFiltered,
            N::NoSession => DropReason::NatNoSession,
            N::Misdelivered => DropReason::NatMisdelivered,
            N::TableFull => DropReason::NatTableFull,
            N::Standby => DropReason::NatStandby,
        }
    }
}

impl From<nat::dispatch::DispatchDrop> for DropReason {
    fn from(d: nat::dispatch::DispatchDrop) -> DropReason {
        use nat::dispatch::DispatchDrop as D;
        match d {
            D::Malformed => DropReason::NatMalformed,
            D::Fragment => DropReason::NatFragment,
            D::Unsupported => DropReason::NatUnsupported,
            D::NonSyn => DropReason::NatNonSyn,
            D::NoSession => DropReason::NatNoSession,
            D::WorkerDown => DropReason::NatWorkerDown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_discriminant_order_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(names.insert(r.as_str()));
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit()));
        }
    }

    #[test]
    fn nat_drops_keep_the_nat_crates_names() {
        for d in nat::worker::NatDrop::ALL {
            assert_eq!(DropReason::from(d).as_str(), d.as_str());
        }
    }
}
