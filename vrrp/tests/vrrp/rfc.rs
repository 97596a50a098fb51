//! One test per rule, each citing RFC 5798 (RFC 9568 keeps the same section numbers).

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vrrp::wire::{self, ChecksumMode, ParseError, MULTICAST_ADDR, TTL};
use vrrp::{Action, Advert, BackupCause, Config, ConfigError, MasterCause, State, VirtualRouter};

const ME: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LOWER_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 5);
const HIGHER_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn cfg(priority: u8) -> Config {
    let mut cfg = Config::new(7, ME, vec![VIP]);
    cfg.priority = priority;
    cfg
}

fn started(cfg: Config, t0: Instant) -> VirtualRouter {
    let mut vr = VirtualRouter::new(cfg, t0).unwrap();
    vr.startup(t0);
    vr
}

fn advert(priority: u8, interval: u16) -> Advert {
    Advert::new(7, priority, interval, vec![VIP]).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Makes `vr` (a backup) master through its Master_Down_Timer.
fn to_master(vr: &mut VirtualRouter) -> Instant {
    let due = vr.next_deadline().unwrap();
    vr.on_timer(due);
    assert_eq!(vr.state(), State::Master);
    due
}

fn sent_priorities(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendAdvert { advert, .. } => Some(advert.priority()),
            _ => None,
        })
        .collect()
}

// ---- §6.1 parameters ----

#[test]
fn s6_1_skew_time_and_master_down_interval() {
    let t0 = Instant::now();
    let vr = started(cfg(100), t0);
    // Skew_Time = ((256 - 100) * 100 cs) / 256 = 60.9375 cs; MDI = 300 cs + skew.
    assert_eq!(vr.skew_time(), Duration::from_micros(609_375));
    assert_eq!(vr.master_down_interval(), Duration::from_micros(3_609_375));
    let vr = started(cfg(254), t0);
    assert_eq!(vr.skew_time(), Duration::from_micros(7_812));
    // 10 ms adverts: MDI just over 30 ms.
    let mut fast = cfg(200);
    fast.adver_interval = 1;
    let vr = started(fast, t0);
    assert_eq!(
        vr.master_down_interval(),
        ms(30) + Duration::from_micros(2_187)
    );
}

#[test]
fn s6_1_parameter_ranges_are_enforced() {
    let t0 = Instant::now();
    let bad = |f: fn(&mut Config), e: ConfigError| {
        let mut c = cfg(100);
        f(&mut c);
        assert_eq!(VirtualRouter::new(c, t0).unwrap_err(), e);
    };
    bad(|c| c.vrid = 0, ConfigError::Vrid);
    bad(|c| c.priority = 0, ConfigError::Priority);
    bad(|c| c.adver_interval = 0, ConfigError::Interval(0));
    bad(|c| c.adver_interval = 4096, ConfigError::Interval(4096));
    bad(|c| c.virtual_addrs.clear(), ConfigError::AddressCount(0));
    bad(
        |c| c.primary_addr = MULTICAST_ADDR,
        ConfigError::PrimaryAddr(MULTICAST_ADDR),
    );
    bad(|c| c.garp_count = 0, ConfigError::GarpCount);
}

// ---- §6.4.1 Initialize ----

#[test]
fn s6_4_1_non_owner_starts_as_backup_with_master_down_timer() {
    let t0 = Instant::now();
    let mut vr = VirtualRouter::new(cfg(100), t0).unwrap();
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.next_deadline(), None);
    let actions = vr.startup(t0);
    assert_eq!(actions, vec![Action::BecameBackup(BackupCause::Startup)]);
    assert_eq!(vr.next_deadline(), Some(t0 + vr.master_down_interval()));
    // Nothing happens before the timer.
    assert!(vr.on_timer(t0 + ms(3600)).is_empty());
    assert_eq!(vr.state(), State::Backup);
}

#[test]
fn s6_4_1_owner_starts_as_master_and_announces() {
    let t0 = Instant::now();
    let mut vr = VirtualRouter::new(cfg(255), t0).unwrap();
    let actions = vr.startup(t0);
    let vmac = wire::virtual_mac(7);
    assert_eq!(actions[0], Action::InstallVirtualMac(vmac));
    assert_eq!(sent_priorities(&actions), vec![255]);
    match &actions[2] {
        Action::SendGratuitousArp { frames, count } => {
            assert_eq!(*count, 1);
            assert_eq!(frames, &vec![wire::gratuitous_arp(vmac, VIP)]);
        }
        other => panic!("expected gratuitous ARP, got {other:?}"),
    }
    assert_eq!(actions[3], Action::BecameMaster(MasterCause::AddressOwner));
    assert_eq!(vr.next_deadline(), Some(t0 + ms(1000)));
    assert!(
        vr.accepts_virtual_traffic(),
        "the owner accepts its own addresses"
    );
}

// ---- §6.4.2 Backup ----

#[test]
fn s6_4_2_backup_takes_over_when_master_down_timer_fires() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let due = vr.next_deadline().unwrap();
    let actions = vr.on_timer(due);
    assert_eq!(vr.state(), State::Master);
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert_eq!(
        actions.last(),
        Some(&Action::BecameMaster(MasterCause::MasterDown))
    );
    assert_eq!(vr.counters().became_master, 1);
    // The advert leaves from the virtual MAC to the VRRP group.
    let Action::SendAdvert { frame, .. } = &actions[1] else {
        panic!()
    };
    assert_eq!(&frame[0..6], &wire::MULTICAST_MAC.0);
    assert_eq!(&frame[6..12], &wire::virtual_mac(7).0);
}

#[test]
fn s6_4_2_backup_learns_master_adver_interval() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let now = t0 + ms(100);
    assert!(vr.on_advert(&advert(200, 50), HIGHER_PEER, now).is_empty());
    assert_eq!(vr.master_adver_interval(), 50);
    // 3 × 50 cs + (156 × 50 / 256) cs.
    let mdi = ms(1500) + Duration::from_micros(304_687);
    assert_eq!(vr.master_down_interval(), mdi);
    assert_eq!(vr.next_deadline(), Some(now + mdi));
}

#[test]
fn s6_4_2_priority_zero_makes_backup_take_over_after_skew_time() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    vr.on_advert(&advert(200, 100), HIGHER_PEER, t0);
    let now = t0 + ms(500);
    vr.on_advert(&advert(0, 100), HIGHER_PEER, now);
    assert_eq!(vr.next_deadline(), Some(now + vr.skew_time()));
    assert_eq!(vr.counters().priority_zero_received, 1);
    let actions = vr.on_timer(now + vr.skew_time());
    assert_eq!(
        actions.last(),
        Some(&Action::BecameMaster(MasterCause::MasterResigned))
    );
}

#[test]
fn s6_4_2_preempting_backup_ignores_lower_priority_master() {
    let t0 = Instant::now();
    let mut vr = started(cfg(150), t0);
    let mut now = t0;
    // A lower master keeps advertising; the backup discards them and takes over.
    while vr.state() == State::Backup {
        vr.on_advert(&advert(100, 100), LOWER_PEER, now);
        now += ms(1000);
        let actions = vr.on_timer(now);
        if !actions.is_empty() {
            assert_eq!(
                actions.last(),
                Some(&Action::BecameMaster(MasterCause::Preempted))
            );
        }
    }
    assert!(vr.counters().drops.lower_priority >= 3);
}

#[test]
fn s6_4_2_non_preempting_backup_keeps_a_lower_priority_master() {
    let t0 = Instant::now();
    let mut c = cfg(150);
    c.preempt = false;
    let mut vr = started(c, t0);
    let mut now = t0;
    for _ in 0..20 {
        vr.on_advert(&advert(100, 100), LOWER_PEER, now);
        now += ms(1000);
        assert!(vr.on_timer(now).is_empty());
    }
    assert_eq!(vr.state(), State::Backup);
}

#[test]
fn preempt_delay_holds_off_preemption_after_startup() {
    let t0 = Instant::now();
    let mut c = cfg(150);
    c.preempt_delay = Duration::from_secs(10);
    let mut vr = started(c, t0);
    let mut now = t0;
    while vr.state() == State::Backup {
        vr.on_advert(&advert(100, 100), LOWER_PEER, now);
        now += ms(1000);
        vr.on_timer(now);
        assert!(now < t0 + Duration::from_secs(20), "never preempted");
    }
    // Took over only once the delay had passed and a Master_Down_Interval of ignoring.
    assert!(now >= t0 + Duration::from_secs(10) + vr.master_down_interval() - ms(1000));
}

// ---- §6.4.3 Master ----

#[test]
fn s6_4_3_master_sends_advert_every_interval() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let t1 = to_master(&mut vr);
    assert_eq!(vr.next_deadline(), Some(t1 + ms(1000)));
    assert!(vr.on_timer(t1 + ms(999)).is_empty());
    assert_eq!(sent_priorities(&vr.on_timer(t1 + ms(1000))), vec![100]);
    assert_eq!(vr.next_deadline(), Some(t1 + ms(2000)));
}

#[test]
fn s6_4_3_master_yields_to_higher_priority() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let t1 = to_master(&mut vr);
    let actions = vr.on_advert(&advert(101, 200), LOWER_PEER, t1);
    assert_eq!(
        actions,
        vec![
            Action::RemoveVirtualMac(wire::virtual_mac(7)),
            Action::BecameBackup(BackupCause::HigherPriority {
                priority: 101,
                from: LOWER_PEER
            }),
        ]
    );
    assert_eq!(vr.state(), State::Backup);
    // It learnt the new master's interval.
    assert_eq!(vr.master_adver_interval(), 200);
    assert_eq!(vr.next_deadline(), Some(t1 + vr.master_down_interval()));
}

#[test]
fn s6_4_3_equal_priority_tie_broken_by_higher_primary_address() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let t1 = to_master(&mut vr);
    // Lower address, same priority: discarded.
    assert!(vr.on_advert(&advert(100, 100), LOWER_PEER, t1).is_empty());
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.counters().drops.lower_priority, 1);
    // Lower priority: discarded.
    assert!(vr.on_advert(&advert(99, 100), HIGHER_PEER, t1).is_empty());
    assert_eq!(vr.state(), State::Master);
    // Higher address, same priority: yield.
    vr.on_advert(&advert(100, 100), HIGHER_PEER, t1);
    assert_eq!(vr.state(), State::Backup);
}

#[test]
fn s6_4_3_master_answers_priority_zero_at_once() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let t1 = to_master(&mut vr);
    let now = t1 + ms(300);
    let actions = vr.on_advert(&advert(0, 100), HIGHER_PEER, now);
    assert_eq!(sent_priorities(&actions), vec![100]);
    assert_eq!(vr.next_deadline(), Some(now + ms(1000)));
    assert_eq!(vr.state(), State::Master);
}

#[test]
fn s6_4_3_master_shutdown_sends_priority_zero() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let t1 = to_master(&mut vr);
    let actions = vr.shutdown(t1);
    assert_eq!(sent_priorities(&actions), vec![0]);
    assert_eq!(actions[1], Action::RemoveVirtualMac(wire::virtual_mac(7)));
    assert_eq!(actions[2], Action::Stopped);
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.next_deadline(), None);
    assert_eq!(vr.counters().priority_zero_sent, 1);
    // Stopped routers ignore adverts and timers; start-up runs again.
    assert!(vr.on_advert(&advert(200, 100), HIGHER_PEER, t1).is_empty());
    assert_eq!(vr.counters().drops.not_running, 1);
    assert_eq!(
        vr.startup(t1),
        vec![Action::BecameBackup(BackupCause::Startup)]
    );
}

#[test]
fn s6_4_2_backup_shutdown_sends_nothing() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    assert_eq!(vr.shutdown(t0), vec![Action::Stopped]);
}

#[test]
fn s6_4_3_accept_mode_decides_who_takes_virtual_traffic() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    to_master(&mut vr);
    assert!(!vr.accepts_virtual_traffic());
    let mut c = cfg(100);
    c.accept_mode = true;
    let mut vr = started(c, t0);
    assert!(!vr.accepts_virtual_traffic(), "a backup never does");
    to_master(&mut vr);
    assert!(vr.accepts_virtual_traffic());
}

// ---- §7.1 receiving ----

#[test]
fn s7_1_owner_discards_adverts() {
    let t0 = Instant::now();
    let mut vr = started(cfg(255), t0);
    assert!(vr.on_advert(&advert(255, 100), HIGHER_PEER, t0).is_empty());
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.counters().drops.owner_discards, 1);
}

#[test]
fn s7_1_address_list_mismatch_dropped_unless_from_owner() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let other = Advert::new(7, 200, 100, vec![Ipv4Addr::new(192, 0, 2, 99)]).unwrap();
    let before = vr.next_deadline();
    vr.on_advert(&other, HIGHER_PEER, t0 + ms(10));
    assert_eq!(vr.counters().drops.address_mismatch, 1);
    assert_eq!(
        vr.next_deadline(),
        before,
        "a dropped advert does not reset the timer"
    );
    let owner = Advert::new(7, 255, 100, vec![Ipv4Addr::new(192, 0, 2, 99)]).unwrap();
    vr.on_advert(&owner, HIGHER_PEER, t0 + ms(10));
    assert_eq!(vr.counters().owner_address_mismatch, 1);
    assert_eq!(vr.counters().adverts_received, 1);
    // Same addresses in another order: a match.
    let mut c = cfg(100);
    c.virtual_addrs = vec![VIP, Ipv4Addr::new(192, 0, 2, 101)];
    let mut vr = started(c, t0);
    let swapped = Advert::new(7, 200, 100, vec![Ipv4Addr::new(192, 0, 2, 101), VIP]).unwrap();
    vr.on_advert(&swapped, HIGHER_PEER, t0);
    assert_eq!(vr.counters().adverts_received, 1);
}

#[test]
fn s7_1_other_vrid_and_own_adverts_are_dropped() {
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let other = Advert::new(8, 200, 100, vec![VIP]).unwrap();
    vr.on_advert(&other, HIGHER_PEER, t0);
    vr.on_advert(&advert(200, 100), ME, t0);
    let d = vr.counters().drops;
    assert_eq!((d.wrong_vrid, d.own_advert), (1, 1));
    assert_eq!(vr.counters().adverts_received, 0);
}

fn good() -> Vec<u8> {
    advert(100, 100).to_bytes(HIGHER_PEER, MULTICAST_ADDR, ChecksumMode::PseudoHeader)
}

fn parse(msg: &[u8], ttl: u8) -> Result<(Advert, ChecksumMode), ParseError> {
    Advert::parse(msg, HIGHER_PEER, MULTICAST_ADDR, ttl)
}

/// Rewrites the checksum after a field change, so only the field under test is wrong.
fn refill(mut msg: Vec<u8>) -> Vec<u8> {
    msg[6..8].fill(0);
    let acc = netwire::checksum::pseudo_header(
        HIGHER_PEER.octets(),
        MULTICAST_ADDR.octets(),
        112,
        msg.len() as u16,
    );
    let check = !netwire::checksum::fold(netwire::checksum::sum(acc, &msg));
    msg[6..8].copy_from_slice(&check.to_be_bytes());
    msg
}

#[test]
fn s7_1_ttl_must_be_255() {
    assert_eq!(parse(&good(), 254), Err(ParseError::BadTtl(254)));
    assert!(parse(&good(), TTL).is_ok());
}

#[test]
fn s7_1_version_must_be_3_and_type_1() {
    let mut v2 = good();
    v2[0] = 0x21;
    assert_eq!(parse(&refill(v2), TTL), Err(ParseError::BadVersion(2)));
    let mut t2 = good();
    t2[0] = 0x32;
    assert_eq!(parse(&refill(t2), TTL), Err(ParseError::BadType(2)));
}

#[test]
fn s7_1_length_must_match_count() {
    let msg = good();
    assert_eq!(
        parse(&msg[..11], TTL),
        Err(ParseError::Truncated { need: 12, have: 11 })
    );
    assert_eq!(
        parse(&msg[..5], TTL),
        Err(ParseError::Truncated { need: 8, have: 5 })
    );
    let mut long = msg.clone();
    long.extend_from_slice(&[0; 4]);
    assert_eq!(
        parse(&refill(long), TTL),
        Err(ParseError::LengthMismatch { count: 1, len: 16 })
    );
    let mut none = msg[..8].to_vec();
    none[3] = 0;
    assert_eq!(parse(&refill(none), TTL), Err(ParseError::NoAddresses));
}

#[test]
fn s7_1_checksum_must_verify_either_way() {
    let mut bad = good();
    bad[7] ^= 1;
    assert_eq!(parse(&bad, TTL), Err(ParseError::BadChecksum));
    let compat =
        advert(100, 100).to_bytes(HIGHER_PEER, MULTICAST_ADDR, ChecksumMode::NoPseudoHeader);
    assert_ne!(compat, good());
    assert_eq!(parse(&compat, TTL).unwrap().1, ChecksumMode::NoPseudoHeader);
    assert_eq!(parse(&good(), TTL).unwrap().1, ChecksumMode::PseudoHeader);
    // The compatible checksum is counted per virtual router.
    let t0 = Instant::now();
    let mut vr = started(cfg(100), t0);
    let rx = wire::Received {
        src: HIGHER_PEER,
        dst: MULTICAST_ADDR,
        advert: advert(200, 100),
        checksum: ChecksumMode::NoPseudoHeader,
    };
    vr.on_received(&rx, t0);
    assert_eq!(vr.counters().no_pseudo_header_checksum, 1);
    // Only adverts acted on count: a dropped one (another VRID) does not.
    let other = wire::Received {
        advert: Advert::new(8, 200, 100, vec![VIP]).unwrap(),
        ..rx
    };
    vr.on_received(&other, t0);
    assert_eq!(vr.counters().no_pseudo_header_checksum, 1);
}

#[test]
fn s5_2_6_reserved_bits_ignored_and_zero_interval_refused() {
    let mut reserved = good();
    reserved[4] |= 0xf0;
    let (back, _) = parse(&refill(reserved), TTL).unwrap();
    assert_eq!(back.max_adver_int(), 100);
    let mut zero = good();
    zero[4] = 0xf0;
    zero[5] = 0;
    assert_eq!(parse(&refill(zero), TTL), Err(ParseError::ZeroInterval));
}

#[test]
fn s5_1_ip_header_checks() {
    let a = advert(100, 100);
    let packet = wire::build_ipv4(&a, HIGHER_PEER, 1, ChecksumMode::PseudoHeader);
    assert_eq!(wire::parse_ipv4(&packet).unwrap().advert, a);
    let mut bad_sum = packet.clone();
    bad_sum[10] ^= 1;
    assert_eq!(wire::parse_ipv4(&bad_sum), Err(ParseError::BadIpv4Checksum));
    let fix = |mut p: Vec<u8>| {
        let mut ip = netwire::Ipv4Packet::new_unchecked(&mut p[..]);
        ip.fill_checksum();
        p
    };
    let mut udp = packet.clone();
    udp[9] = 17;
    assert_eq!(wire::parse_ipv4(&fix(udp)), Err(ParseError::NotVrrp(17)));
    let mut frag = packet.clone();
    frag[6] = 0x20;
    assert_eq!(wire::parse_ipv4(&fix(frag)), Err(ParseError::Fragment));
    let mut ttl = packet.clone();
    ttl[8] = 1;
    assert_eq!(wire::parse_ipv4(&fix(ttl)), Err(ParseError::BadTtl(1)));
    assert!(matches!(
        wire::parse_ipv4(&packet[..10]),
        Err(ParseError::BadIpv4Header(_))
    ));
    let mut frame = wire::build_frame(
        &a,
        wire::virtual_mac(7),
        HIGHER_PEER,
        1,
        ChecksumMode::PseudoHeader,
    );
    frame[12] = 0x86;
    frame[13] = 0xdd;
    assert_eq!(wire::parse_frame(&frame), Err(ParseError::NotIpv4(0x86dd)));
}

#[test]
fn s5_1_packet_and_frame_layout() {
    let a = advert(100, 100);
    let frame = wire::build_frame(&a, wire::virtual_mac(7), ME, 9, ChecksumMode::PseudoHeader);
    assert_eq!(frame.len(), 14 + 20 + 12);
    assert_eq!(&frame[0..6], &[0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
    assert_eq!(&frame[6..12], &[0x00, 0x00, 0x5e, 0x00, 0x01, 0x07]);
    assert_eq!(&frame[12..14], &[0x08, 0x00]);
    let ip = netwire::Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!((ip.ttl(), ip.protocol(), ip.ident()), (255, 112, 9));
    assert_eq!((ip.src_addr(), ip.dst_addr()), (ME, MULTICAST_ADDR));
    assert!(ip.verify_checksum());
    let arp = wire::gratuitous_arp(wire::virtual_mac(7), VIP);
    assert_eq!(arp.len(), wire::ARP_FRAME_LEN);
    assert_eq!(&arp[0..6], &[0xff; 6]);
    assert_eq!(&arp[12..14], &[0x08, 0x06]);
    assert_eq!(&arp[20..22], &[0x00, 0x01], "an ARP request");
    assert_eq!(
        &arp[22..28],
        &wire::virtual_mac(7).0,
        "sender MAC is the virtual MAC"
    );
    assert_eq!(&arp[28..32], &VIP.octets());
    assert_eq!(&arp[38..42], &VIP.octets());
}

// ---- operations ----

#[test]
fn switchover_hands_mastership_to_the_peer_and_does_not_preempt_back() {
    let t0 = Instant::now();
    let mut vr = started(cfg(200), t0);
    let t1 = to_master(&mut vr);
    let actions = vr.switchover(t1);
    assert_eq!(sent_priorities(&actions), vec![0]);
    assert_eq!(
        actions.last(),
        Some(&Action::BecameBackup(BackupCause::Switchover))
    );
    assert_eq!(vr.state(), State::Backup);
    // The lower-priority peer takes over and advertises; we keep it.
    let mut now = t1;
    for _ in 0..10 {
        now += ms(1000);
        vr.on_advert(&advert(100, 100), LOWER_PEER, now);
        assert!(vr.on_timer(now).is_empty());
    }
    assert_eq!(vr.state(), State::Backup);
    // If the peer dies we take over again, and preempt as before.
    let due = vr.next_deadline().unwrap();
    assert_eq!(
        vr.on_timer(due).last(),
        Some(&Action::BecameMaster(MasterCause::MasterDown))
    );
    // A backup has nothing to hand over.
    let mut backup = started(cfg(100), t0);
    assert!(backup.switchover(t0).is_empty());
}

#[test]
fn switchover_without_a_peer_comes_back_after_master_down_interval() {
    let t0 = Instant::now();
    let mut vr = started(cfg(200), t0);
    let t1 = to_master(&mut vr);
    vr.switchover(t1);
    assert_eq!(vr.next_deadline(), Some(t1 + vr.master_down_interval()));
    to_master(&mut vr);
}

#[test]
fn set_priority_takes_effect_in_the_next_advert_and_keeps_ownership() {
    let t0 = Instant::now();
    let mut vr = started(cfg(200), t0);
    let t1 = to_master(&mut vr);
    vr.set_priority(50).unwrap();
    assert_eq!(sent_priorities(&vr.on_timer(t1 + ms(1000))), vec![50]);
    assert_eq!(vr.set_priority(0), Err(ConfigError::Priority));
    assert_eq!(vr.set_priority(255), Err(ConfigError::OwnerChange));
    let mut owner = started(cfg(255), t0);
    assert_eq!(owner.set_priority(254), Err(ConfigError::OwnerChange));
}

#[test]
fn compat_checksum_is_used_on_send_when_configured() {
    let t0 = Instant::now();
    let mut c = cfg(255);
    c.checksum = ChecksumMode::NoPseudoHeader;
    let mut vr = VirtualRouter::new(c, t0).unwrap();
    let actions = vr.startup(t0);
    let Action::SendAdvert { frame, .. } = &actions[1] else {
        panic!()
    };
    assert_eq!(
        wire::parse_frame(frame).unwrap().checksum,
        ChecksumMode::NoPseudoHeader
    );
}
