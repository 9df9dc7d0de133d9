/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * Packet parsing for the tc programs, all through bpf_skb_load_bytes (no
 * packet pointers, so no bounds the verifier could lose). The rule for odd
 * packets (see docs/architecture.md, "Malformed packets"):
 *   - not IPv4/IPv6 (ARP, ...): passed untouched (MC_PARSE_NOT_IP);
 *   - a truncated or invalid L3 header (version, IHL < 5, a total / payload
 *     length past the frame or below the header), or a truncated TCP/UDP/ICMP
 *     header on a packet that should carry one: dropped,
 *     MC_DROP_REASON_MALFORMED; nothing is read past the datagram's length
 *     (the stack trims it away), ICMP error quotes included;
 *   - IPv4 options: skipped by IHL, the packet is handled normally;
 *   - IPv6 extension headers (hop-by-hop, routing, dest-opts, fragment, AH):
 *     walked, up to MC_IPV6_EXT_MAX; a longer chain is dropped as malformed
 *     (as Cilium does): its L4 header is out of reach, and taking the next
 *     header's type for the protocol would evade port rules;
 *   - a first fragment is handled normally (it carries the L4 header) and
 *     its ports are remembered (frag.h); a later fragment of the same
 *     datagram takes them and is handled as its first fragment was; one whose
 *     first fragment was not seen has no ports: it passes where the direction
 *     is not enforced and is dropped (MC_DROP_REASON_FRAGMENT) where it is;
 *   - an IPv4 TCP fragment at offset 8 bytes could rewrite the first
 *     fragment's ports on reassembly (RFC 1858): dropped as malformed;
 *   - ICMP is paired as Linux conntrack pairs it (nf_conntrack_proto_icmp.c,
 *     _icmpv6.c): a request (IPv4 echo, timestamp, info, address mask;
 *     ICMPv6 echo, node information query) opens a flow keyed by its
 *     identifier, only its own reply type with that identifier is its reply;
 *     any other non-error ICMP is untracked (always a new flow, meets policy);
 *     errors are related to the flow they quote (conntrack.h);
 *   - an unknown L4 protocol has ports 0: only an "any protocol" rule or a
 *     rule for that protocol with "any port" admits it. ICMPv6 in IPv4 and
 *     ICMP in IPv6 are unknown L4 (no echo, error or ND meaning).
 */
#ifndef MESHCNI_PARSE_H
#define MESHCNI_PARSE_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshcni/layout.h"

#define MC_ETH_HLEN 14
#define MC_ETH_P_IP 0x0800
#define MC_ETH_P_IPV6 0x86DD
#define MC_PROTO_ICMP 1
#define MC_PROTO_TCP 6
#define MC_PROTO_UDP 17
#define MC_PROTO_ICMPV6 58
#define MC_PROTO_SCTP 132
#define MC_IPV6_EXT_MAX 4

#define MC_TCP_FIN 0x01
#define MC_TCP_SYN 0x02
#define MC_TCP_RST 0x04
#define MC_TCP_ACK 0x10

/* how conntrack treats an ICMP message (mc_tuple.icmp_ct) */
enum {
	MC_ICMP_CT_ANY = 0,     /* not ICMP of its family: forward and reply lookups */
	MC_ICMP_CT_REQUEST = 1, /* opens a flow; forward lookup only */
	MC_ICMP_CT_REPLY = 2,   /* reply lookup only; opens nothing */
	MC_ICMP_CT_NONE = 3,    /* no pair: never tracked, always meets policy */
};

enum {
	MC_PARSE_OK = 0,
	MC_PARSE_NOT_IP = 1,
	MC_PARSE_BAD = 2,
};

/* what the hooks need of a packet; addresses in the unified form */
struct mc_tuple {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 nonfirst_frag; /* no L4 header in this packet */
	__u8 icmp_err;      /* ICMP error: inner holds the offending packet */
	__u8 is_v6;
	__u8 always_pass;   /* ICMPv6 neighbour discovery / MLD */
	__u8 is_frag;       /* a fragment, first or later */
	__u8 frag_proto;    /* IPv4 protocol / the IPv6 fragment header's next header */
	__u8 icmp_ct;       /* MC_ICMP_CT_* */
	/* offset of the ICMP error's inner IP header: within the headers the
	 * parser walks (at most a few KiB), so 16 bits; the tuple stays at 56
	 * bytes, which the uplink program's several copies need to fit the
	 * 512-byte BPF stack */
	__u16 inner_off;
	__u32 end;          /* end of the IP datagram (total / payload length) */
	__be32 frag_id;     /* IP identification (IPv4: 16 bits), network order */
};

static __always_inline void mc_v4_mapped(__u32 *w, __u32 ip4)
{
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

/*
 * The end of the datagram whose header is at off, from its length field. The
 * stack trims what lies past it (Ethernet padding, or anything appended), so
 * no header is read from there. 0 is the skb's length, as the stack reads a
 * GSO packet's (BIG TCP) and drops any other.
 */
static __always_inline int mc_datagram_end(struct __sk_buff *skb, __u32 off, __u32 len,
					   __u32 *end)
{
	if (len == 0) {
		*end = skb->len;
		return MC_PARSE_OK;
	}
	if (off + len > skb->len)
		return MC_PARSE_BAD;
	*end = off + len;
	return MC_PARSE_OK;
}

/* IPv4 header at off: addresses, proto, fragment state; *l4 = L4 offset.
 * quoted: the packet inside an ICMP error (its length field describes the
 * original, not the quote; t->end is the error's, set by the caller) */
static __always_inline int mc_parse_ip4(struct __sk_buff *skb, __u32 off,
					struct mc_tuple *t, __u32 *l4, int quoted)
{
	__u8 h[20];
	__u32 ihl, tot;
	__u16 frag;

	if (bpf_skb_load_bytes(skb, off, h, 20))
		return MC_PARSE_BAD;
	if ((h[0] >> 4) != 4)
		return MC_PARSE_BAD;
	ihl = (h[0] & 0xf) * 4;
	if (ihl < 20)
		return MC_PARSE_BAD;
	if (!quoted) {
		tot = (__u32)h[2] << 8 | h[3];
		if (tot && tot < ihl)
			return MC_PARSE_BAD;
		if (mc_datagram_end(skb, off, tot, &t->end))
			return MC_PARSE_BAD;
	}
	if (off + 20 > t->end)
		return MC_PARSE_BAD;
	frag = ((__u16)h[6] << 8 | h[7]) & 0x1fff;
	t->nonfirst_frag = frag != 0;
	t->is_frag = frag != 0 || (h[6] & 0x20);
	t->proto = h[9];
	t->frag_proto = h[9];
	t->frag_id = bpf_htonl((__u32)h[4] << 8 | h[5]);
	if (frag == 1 && h[9] == 6)
		return MC_PARSE_BAD; /* RFC 1858: would overlap the TCP ports */
	mc_v4_mapped(t->saddr, *(__u32 *)&h[12]);
	mc_v4_mapped(t->daddr, *(__u32 *)&h[16]);
	*l4 = off + ihl;
	return MC_PARSE_OK;
}

/* hop-by-hop, routing, fragment, destination options, AH */
static __always_inline int mc_ipv6_is_ext(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 60 || nh == 44 || nh == 51;
}

/* IPv6 header (and, if walk, its extension headers) at off */
static __always_inline int mc_parse_ip6(struct __sk_buff *skb, __u32 off,
					struct mc_tuple *t, __u32 *l4, int walk)
{
	__u8 h[40];
	__u8 e[8];
	__u8 nh;
	int i;

	if (bpf_skb_load_bytes(skb, off, h, 40))
		return MC_PARSE_BAD;
	if ((h[0] >> 4) != 6)
		return MC_PARSE_BAD;
	if (walk) { /* not for a quoted packet (see mc_parse_ip4) */
		__u32 plen = (__u32)h[4] << 8 | h[5];

		if (mc_datagram_end(skb, off, plen ? plen + 40 : 0, &t->end))
			return MC_PARSE_BAD;
	}
	if (off + 40 > t->end)
		return MC_PARSE_BAD;
	__builtin_memcpy(t->saddr, &h[8], 16);
	__builtin_memcpy(t->daddr, &h[24], 16);
	nh = h[6];
	off += 40;
	if (walk) {
#pragma unroll
		for (i = 0; i < MC_IPV6_EXT_MAX; i++) {
			if (!mc_ipv6_is_ext(nh))
				break;
			if (off + 8 > t->end || bpf_skb_load_bytes(skb, off, e, 8))
				return MC_PARSE_BAD;
			if (nh == 44) {
				if ((((__u16)e[2] << 8 | e[3]) & 0xfff8) != 0)
					t->nonfirst_frag = 1;
				t->is_frag = 1;
				t->frag_proto = e[0];
				__builtin_memcpy(&t->frag_id, &e[4], 4);
				off += 8;
			} else if (nh == 51) {
				off += ((__u32)e[1] + 2) * 4;
			} else {
				off += ((__u32)e[1] + 1) * 8;
			}
			nh = e[0];
			if (t->nonfirst_frag)
				break;
		}
		/* still an extension header after the walk: the stack would walk
		 * on to the real L4, so taking this type for the protocol would
		 * slip past port rules (and open a conntrack pseudo-flow) */
		if (!t->nonfirst_frag && mc_ipv6_is_ext(nh))
			return MC_PARSE_BAD;
	}
	t->proto = nh;
	*l4 = off;
	return MC_PARSE_OK;
}

static __always_inline int mc_icmp4_is_err(__u8 type)
{
	return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
}

static __always_inline int mc_icmp6_is_err(__u8 type)
{
	return type >= 1 && type <= 4;
}

/*
 * Ports of a non-error ICMP message of the packet's own family: a request
 * has (identifier, its type), a reply (its request's type, identifier), so a
 * reply reverses onto its request's key and onto no other pair's (the type
 * is in the key, as in Linux's tuple). Types without a pair keep ports 0 and
 * are MC_ICMP_CT_NONE.
 */
static __always_inline void mc_icmp_ports(struct mc_tuple *t, __u8 type, const __u8 *id)
{
	__u8 req = 0;

	if (t->is_v6) {
		if (type == 128 || type == 139)
			req = type;
		else if (type == 129 || type == 140)
			req = type - 1;
	} else {
		if (type == 8 || type == 13 || type == 15 || type == 17)
			req = type;
		else if (type == 0)
			req = 8;
		else if (type == 14 || type == 16 || type == 18)
			req = type - 1;
	}
	if (!req) {
		t->icmp_ct = MC_ICMP_CT_NONE;
		return;
	}
	if (req == type) {
		__builtin_memcpy(&t->sport, id, 2);
		t->dport = bpf_htons(req);
		t->icmp_ct = MC_ICMP_CT_REQUEST;
	} else {
		t->sport = bpf_htons(req);
		__builtin_memcpy(&t->dport, id, 2);
		t->icmp_ct = MC_ICMP_CT_REPLY;
	}
}

/*
 * L4: ports (ICMP: mc_icmp_ports), TCP flags, ICMP errors.
 */
static __always_inline int mc_parse_l4(struct __sk_buff *skb, __u32 off,
				       struct mc_tuple *t)
{
	__u8 h[20];

	if (t->nonfirst_frag)
		return MC_PARSE_OK;
	switch (t->proto) {
	case MC_PROTO_TCP:
		if (off + 20 > t->end || bpf_skb_load_bytes(skb, off, h, 20))
			return MC_PARSE_BAD;
		if ((h[12] >> 4) < 5)
			return MC_PARSE_BAD;
		__builtin_memcpy(&t->sport, &h[0], 2);
		__builtin_memcpy(&t->dport, &h[2], 2);
		t->tcp_flags = h[13];
		break;
	case MC_PROTO_UDP:
		if (off + 8 > t->end || bpf_skb_load_bytes(skb, off, h, 8))
			return MC_PARSE_BAD;
		__builtin_memcpy(&t->sport, &h[0], 2);
		__builtin_memcpy(&t->dport, &h[2], 2);
		break;
	case MC_PROTO_SCTP:
		/* common header: ports, verification tag, checksum; tracked as a datagram flow */
		if (off + 12 > t->end || bpf_skb_load_bytes(skb, off, h, 12))
			return MC_PARSE_BAD;
		__builtin_memcpy(&t->sport, &h[0], 2);
		__builtin_memcpy(&t->dport, &h[2], 2);
		break;
	case MC_PROTO_ICMP:
	case MC_PROTO_ICMPV6:
		/* ICMP of the other family is no ICMP to the receiving stack
		 * (only raw sockets see it): unknown L4, or an "ND" type in
		 * IPv4 would pass every policy */
		if ((t->proto == MC_PROTO_ICMPV6) != t->is_v6)
			break;
		if (off + 8 > t->end || bpf_skb_load_bytes(skb, off, h, 8))
			return MC_PARSE_BAD;
		if (t->proto == MC_PROTO_ICMP ? mc_icmp4_is_err(h[0]) : mc_icmp6_is_err(h[0])) {
			t->icmp_err = 1;
			t->inner_off = off + 8;
			break;
		}
		mc_icmp_ports(t, h[0], &h[4]);
		if (t->proto == MC_PROTO_ICMPV6 &&
		    ((h[0] >= 130 && h[0] <= 137) || h[0] == 143))
			t->always_pass = 1; /* MLD, RS/RA, NS/NA, redirect */
		break;
	default:
		break; /* unknown L4: ports 0 */
	}
	return MC_PARSE_OK;
}

static __always_inline int mc_parse(struct __sk_buff *skb, struct mc_tuple *t)
{
	__u16 proto;
	__u32 l4 = 0;
	int rc;

	if (bpf_skb_load_bytes(skb, 12, &proto, 2))
		return MC_PARSE_NOT_IP;
	if (proto == bpf_htons(MC_ETH_P_IP)) {
		rc = mc_parse_ip4(skb, MC_ETH_HLEN, t, &l4, 0);
	} else if (proto == bpf_htons(MC_ETH_P_IPV6)) {
		t->is_v6 = 1;
		rc = mc_parse_ip6(skb, MC_ETH_HLEN, t, &l4, 1);
	} else {
		return MC_PARSE_NOT_IP;
	}
	if (rc)
		return rc;
	return mc_parse_l4(skb, l4, t);
}

/*
 * The packet inside an ICMP error (the one that caused it, as its sender
 * sent it): addresses, proto and the ports from its first 8 bytes.
 */
static __always_inline int mc_parse_inner(struct __sk_buff *skb,
					  const struct mc_tuple *outer,
					  struct mc_tuple *in)
{
	__u32 l4 = 0;
	__u8 h[8];
	int rc;

	in->end = outer->end; /* the quote ends where the error does */
	if (outer->is_v6)
		rc = mc_parse_ip6(skb, outer->inner_off, in, &l4, 0);
	else
		rc = mc_parse_ip4(skb, outer->inner_off, in, &l4, 1);
	if (rc || in->nonfirst_frag)
		return MC_PARSE_BAD;
	if (l4 + 8 > in->end || bpf_skb_load_bytes(skb, l4, h, 8))
		return MC_PARSE_BAD;
	if (in->proto == MC_PROTO_TCP || in->proto == MC_PROTO_UDP || in->proto == MC_PROTO_SCTP) {
		__builtin_memcpy(&in->sport, &h[0], 2);
		__builtin_memcpy(&in->dport, &h[2], 2);
	} else if ((in->proto == MC_PROTO_ICMPV6) == in->is_v6 &&
		   (in->proto == MC_PROTO_ICMP || in->proto == MC_PROTO_ICMPV6)) {
		mc_icmp_ports(in, h[0], &h[4]); /* the key its flow was tracked under */
	}
	return MC_PARSE_OK;
}

#endif
