//! Real frames captured with `tcpdump -w` on the client veth of a network namespace, answered
//! by dnsmasq 2.90 (`--address=/svc.test.local/...`, `--host-record=web.test.local,...`,
//! `--cname=www.test.local,web.test.local`, `--cname=app.test.local,www.test.local`,
//! `--local-ttl=300`, `--local=/test.local/`). Client 10.123.0.3 / fd00:123::3, server
//! 10.123.0.2 / fd00:123::2. Checksums are as captured (offloaded, so not valid).

/// `dig @10.123.0.2 svc.test.local A`: one A record, 10.123.0.50, TTL 300.
pub const UDP4_A_SVC: &str = concat!(
    "e2e29e8530647e513c6e48150800450000576eae40004011b6ed0a7b00020a7b00030035de1b0043",
    "154f691485800001000100000001037376630474657374056c6f63616c0000010001c00c00010001",
    "0000012c00040a7b003200002904d0000000000000",
);

/// `dig @10.123.0.2 Svc.Test.Local AAAA` over IPv4: one AAAA record, fd00:123::50.
pub const UDP4_AAAA_MIXED_CASE: &str = concat!(
    "e2e29e8530647e513c6e48150800450000636eb740004011b6d80a7b00020a7b00030035e94a004f",
    "155b61f485800001000100000001035376630454657374054c6f63616c00001c0001c00c001c0001",
    "0000012c0010fd00012300000000000000000000005000002904d0000000000000",
);

/// `dig @fd00:123::2 svc.test.local AAAA` over IPv6: one AAAA record, fd00:123::50.
pub const UDP6_AAAA_SVC: &str = concat!(
    "e2e29e8530647e513c6e481586dd600c4816004f1140fd000123000000000000000000000002fd00",
    "01230000000000000000000000030035dd71004ffcac1b0385800001000100000001037376630474",
    "657374056c6f63616c00001c0001c00c001c00010000012c0010fd00012300000000000000000000",
    "005000002904d0000000000000",
);

/// `dig @10.123.0.2 app.test.local A`: CNAME app -> www -> web, A 10.123.0.60.
pub const UDP4_CNAME_CHAIN: &str = concat!(
    "e2e29e8530647e513c6e481508004500008f6ec040004011b6a30a7b00020a7b0003003588b1007b",
    "1587e02985800001000300000001036170700474657374056c6f63616c0000010001c00c00050001",
    "0000012c0010037777770474657374056c6f63616c00c02c000500010000012c0010037765620474",
    "657374056c6f63616c00c048000100010000012c00040a7b003c00002904d0000000000000",
);

/// TCP SYN-ACK from port 53 (no payload).
pub const TCP4_SYN_ACK: &str = concat!(
    "e2e29e8530647e513c6e481508004500003c00004000400625c20a7b00020a7b0003003594e71c5b",
    "6a6ca16fdce0a012fe8815290000020405b40402080a98894e887b2427870103030a",
);

/// `dig +tcp @10.123.0.2 app.test.local A`: the response segment (length prefix 115).
pub const TCP4_CNAME_CHAIN: &str = concat!(
    "e2e29e8530647e513c6e48150800450000a94cc840004006d88c0a7b00020a7b0003003594e71c5b",
    "6a6da16fdd1980180040159600000101080a98894e8d7b242787007339eb85800001000300000001",
    "036170700474657374056c6f63616c0000010001c00c000500010000012c00100377777704746573",
    "74056c6f63616c00c02c000500010000012c0010037765620474657374056c6f63616c00c0480001",
    "00010000012c00040a7b003c00002904d0000000000000",
);

/// `dig @10.123.0.2 nope.test.local A`: NXDOMAIN.
pub const UDP4_NXDOMAIN: &str = concat!(
    "e2e29e8530647e513c6e48150800450000486ec440004011b6e60a7b00020a7b00030035dfa20034",
    "1540125f81830001000000000001046e6f70650474657374056c6f63616c000001000100002904d0",
    "000000000000",
);

/// `dig +tcp @10.123.0.2 www.test.local AAAA`: CNAME www -> web, AAAA fd00:123::60.
pub const TCP4_AAAA_CNAME: &str = concat!(
    "e2e29e8530647e513c6e4815080045000099701e40004006b5460a7b00020a7b00030035991d85ae",
    "8f80c0f428db80180040158600000101080a7a1d42369af0cacb0063ed2285800001000200000001",
    "037777770474657374056c6f63616c00001c0001c00c000500010000012c00100377656204746573",
    "74056c6f63616c00c02c001c00010000012c0010fd00012300000000000000000000006000002904",
    "d0000000000000",
);

/// Decodes a hex fixture.
pub fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("fixture is hex"))
        .collect()
}

/// The first DNS message in a fixture frame.
pub fn first_message(fixture: &str) -> Vec<u8> {
    let frame = hex(fixture);
    let segment = super::dns_segment(super::Link::Ethernet(&frame)).expect("DNS segment");
    let first = super::dns_messages(&segment).next().expect("one message");
    first.expect("whole message").to_vec()
}
