// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * The node's uplink (agent --devices): NodePort, externalIPs and
 * LoadBalancer IPs for clients outside the cluster, and masquerade of pod
 * traffic leaving it. tc ingress (mc_uplink_in) and egress (mc_uplink_out);
 * an interface without an mc_nat_devs entry passes untouched.
 *
 * Ingress, in order: a packet of a translated flow (mc_nat hit) is rewritten
 * and, for a SNATed flow, redirected out by a FIB lookup; an ICMP error about
 * a translated flow is translated the same way, inner packet included; a new
 * packet to a NODEPORT/EXTERNAL master at scope EXT (explicit addresses
 * only: the wildcard row is the socket LB's) is balanced: source ranges,
 * ClientIP affinity keyed by the client address, count 0 drops; a backend
 * on this node (or any backend under eTP Local) gets DNAT only, the client's
 * address kept; another node's gets DNAT + SNAT to this node's address.
 *
 * Egress: a packet of a translated flow (a local backend's reply, a
 * masqueraded flow) is rewritten; a new packet from one of this node's pods
 * to an address outside the pod, service and non-masquerade CIDRs and not a
 * node is masqueraded to the node's address (TCP, UDP, ICMP echo).
 *
 * Why DNAT + SNAT and not DSR: docs/architecture.md, "NodePort on the uplink".
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "lib/maps_def.h"
#include "lib/parse.h"
#include "lib/frag.h"
#include "lib/lb.h"
#include "lib/conntrack.h"
#include "lib/nat.h"
#include "lib/drop_reasons.h"

#define MC_AF_INET 2
#define MC_AF_INET6 10
/* mc_frag's dir for the uplink hooks, apart from the pod hooks' 0/1 */
#define MC_FRAG_DIR_UPLINK 2

static __always_inline int mc_redirect_out(struct __sk_buff *skb, const struct mc_tuple *t)
{
	struct bpf_fib_lookup p = {};
	__u32 ifindex = skb->ifindex;
	int rc;

	p.ifindex = skb->ifindex;
	if (t->is_v6) {
		p.family = MC_AF_INET6;
		__builtin_memcpy(p.ipv6_src, t->saddr, 16);
		__builtin_memcpy(p.ipv6_dst, t->daddr, 16);
	} else {
		p.family = MC_AF_INET;
		p.ipv4_src = t->saddr[3];
		p.ipv4_dst = t->daddr[3];
	}
	rc = bpf_fib_lookup(skb, &p, sizeof(p), 0);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		ifindex = p.ifindex;
	/* the neighbour subsystem fills in the MACs (and resolves them) */
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}

static __always_inline __u32 mc_cidr_flags(const __u32 *addr)
{
	struct mc_nat_cidr_key k = { .prefixlen = 128 };
	struct mc_nat_cidr *v;

	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&mc_nat_cidrs, &k);
	return v ? v->flags : 0;
}

/* the node's address of the packet's family on this device into out; 0: none */
static __always_inline int mc_node_addr(const struct mc_nat_dev *dev, int v6, __u32 *out)
{
	if (v6)
		__builtin_memcpy(out, dev->addr6, 16);
	else
		__builtin_memcpy(out, dev->addr4, 16);
	return !mc_addr_zero(out);
}

/* the packet's L4 offset, or -1 when it is not one the uplink translates */
static __always_inline int mc_xlate_l4(struct __sk_buff *skb, const struct mc_tuple *t, __u32 *off)
{
	__u8 nh;

	if (mc_l4_off(skb, t, off))
		return -1;
	if (t->is_v6) {
		/* with extension headers (fragment header included) the L4
		 * header is not at 40: not translated */
		if (bpf_skb_load_bytes(skb, MC_ETH_HLEN + 6, &nh, 1) || nh != t->proto)
			return -1;
	}
	return 0;
}

/* ---- ICMP errors about a translated flow ---- */

static __always_inline int mc_inner_set_addr(struct __sk_buff *skb, const struct mc_tuple *in,
					     __u32 inner_off, __u32 icmp_csum, int src,
					     const __u32 *old, const __u8 *new)
{
	if (!in->is_v6) {
		__u32 o = old[3], n;

		__builtin_memcpy(&n, new + 12, 4);
		/* the inner header's own checksum absorbs the change: the
		 * ICMP checksum over the quote stays right */
		if (bpf_l3_csum_replace(skb, inner_off + 10, o, n, 4))
			return -1;
		return bpf_skb_store_bytes(skb, inner_off + (src ? 12 : 16), &n, 4, 0);
	} else {
		__u32 n[4];
		__s64 d;

		__builtin_memcpy(n, new, 16);
		d = bpf_csum_diff((__be32 *)old, 16, n, 16, 0);
		if (bpf_l4_csum_replace(skb, icmp_csum, 0, d, 0))
			return -1;
		return bpf_skb_store_bytes(skb, inner_off + (src ? 8 : 24), n, 16, 0);
	}
}

static __always_inline int mc_inner_set_port(struct __sk_buff *skb, __u32 icmp_csum, __u32 off,
					     __be16 old, __be16 new)
{
	if (old == new)
		return 0;
	if (bpf_l4_csum_replace(skb, icmp_csum, old, new, 2))
		return -1;
	return bpf_skb_store_bytes(skb, off, &new, 2, 0);
}

/*
 * An ICMP error whose quoted packet belongs to a translated flow: the quote
 * is what this node sent (after translation), so the entry for its reversed
 * tuple on this hook is the one the error's own direction takes. Its SRC
 * rewrite goes to the outer source and the quote's destination, its DST
 * rewrite to the outer destination and the quote's source. The quoted L4
 * checksum is left as it is (no receiver checks a quote's). -1: not ours.
 */
static __always_inline int mc_icmp_err(struct __sk_buff *skb, struct mc_tuple *t, __u32 l4off,
				       __u8 dir)
{
	struct mc_tuple in = {};
	struct mc_nat_key k = {};
	struct mc_nat *e;
	struct mc_l4 l = {};
	__u32 icmp_csum = l4off + 2, inner_l4;
	__u8 vihl;
	__u32 ps, pd;
	struct mc_nat v;

	in.is_v6 = t->is_v6;
	if (mc_parse_inner(skb, t, &in) != MC_PARSE_OK)
		return -1;
	if (in.proto != MC_PROTO_TCP && in.proto != MC_PROTO_UDP && in.proto != MC_PROTO_ICMP &&
	    in.proto != MC_PROTO_ICMPV6)
		return -1;
	mc_echo_fold(&in);
	mc_nat_key_of(&k, &in, dir, 1);
	e = bpf_map_lookup_elem(&mc_nat, &k);
	if (!e || e->expires_ns <= bpf_ktime_get_ns())
		return -1;
	v = *e;
	if (in.is_v6) {
		inner_l4 = t->inner_off + 40;
	} else {
		if (bpf_skb_load_bytes(skb, t->inner_off, &vihl, 1))
			return -1;
		inner_l4 = t->inner_off + (vihl & 0xf) * 4;
	}
	if (in.proto == MC_PROTO_ICMP || in.proto == MC_PROTO_ICMPV6) {
		ps = inner_l4 + 4;
		pd = inner_l4 + 4;
	} else {
		ps = inner_l4;
		pd = inner_l4 + 2;
	}
	mc_l4_of(t, l4off, &l);
	if (v.xlate & MC_NAT_X_SRC) {
		if (mc_set_addr(skb, t, &l, 1, t->saddr, (const __u32 *)v.saddr) ||
		    mc_inner_set_addr(skb, &in, t->inner_off, icmp_csum, 0, in.daddr, v.saddr) ||
		    mc_inner_set_port(skb, icmp_csum, pd, in.dport, v.sport))
			return -1;
		__builtin_memcpy(t->saddr, v.saddr, 16);
	}
	if (v.xlate & MC_NAT_X_DST) {
		if (mc_set_addr(skb, t, &l, 0, t->daddr, (const __u32 *)v.daddr) ||
		    mc_inner_set_addr(skb, &in, t->inner_off, icmp_csum, 1, in.saddr, v.daddr) ||
		    mc_inner_set_port(skb, icmp_csum, ps, in.sport, v.dport))
			return -1;
		__builtin_memcpy(t->daddr, v.daddr, 16);
	}
	if (v.xlate & MC_NAT_X_REDIRECT)
		return mc_redirect_out(skb, t);
	return MC_TC_OK;
}

/* ---- a packet of a translated flow ---- */

/* -1: no entry; else the verdict */
static __always_inline int mc_nat_hit(struct __sk_buff *skb, struct mc_tuple *t,
				      const struct mc_l4 *l, __u8 dir, __u64 now)
{
	struct mc_nat_key k = {};
	struct mc_tuple x;
	struct mc_nat *e;
	struct mc_nat v;

	mc_nat_key_of(&k, t, dir, 0);
	e = bpf_map_lookup_elem(&mc_nat, &k);
	if (!e || e->expires_ns <= now)
		return -1;
	v = *e;
	x = *t;
	if (mc_nat_apply(skb, &x, l, &v))
		return mc_drop(skb, t, MC_DROP_REASON_MALFORMED, dir, 0, 0);
	if (x.proto == MC_PROTO_ICMP || x.proto == MC_PROTO_ICMPV6) {
		/* echo: the pair's key has the rewritten identifier twice */
		if (v.xlate & MC_NAT_X_SRC)
			x.dport = x.sport;
		else
			x.sport = x.dport;
	}
	mc_nat_refresh(e, &x, t, now);
	if (v.xlate & MC_NAT_X_REDIRECT)
		return mc_redirect_out(skb, &x);
	return MC_TC_OK;
}

/* ---- new flows to a NodePort / external frontend ---- */

static __always_inline __u64 mc_addr_hash(const __u32 *a)
{
	return mc_mix64(((__u64)a[0] << 32 | a[1]) ^ mc_mix64((__u64)a[2] << 32 | a[3]));
}

/* ClientIP affinity and Maglev keyed by the client's address */
static __always_inline __u32 mc_np_select(struct mc_svc_key *key, const struct mc_svc_value *svc,
					  const __u32 *client, __u64 now)
{
	struct mc_np_affinity_key ak = {};
	struct mc_affinity *aff;
	struct mc_svc_value *slot;
	__u32 backend_id = 0;

	if (svc->flags & MC_SVC_F_AFFINITY) {
		__builtin_memcpy(ak.addr, client, 16);
		ak.svc_id = svc->svc_id;
		aff = bpf_map_lookup_elem(&mc_np_affinity, &ak);
		if (aff && aff->last_used_ns +
			   (__u64)svc->affinity_timeout * MC_NSEC_PER_SEC > now) {
			struct mc_backend_key bk = { .backend_id = aff->backend_id };

			if (bpf_map_lookup_elem(&mc_backends, &bk)) {
				aff->last_used_ns = now;
				return aff->backend_id;
			}
		}
	}
	if (svc->flags & MC_SVC_F_MAGLEV) {
		struct mc_maglev_key mk = { .svc_id = svc->svc_id };
		struct mc_maglev *tbl = bpf_map_lookup_elem(&mc_maglev, &mk);

		if (tbl) {
			__u32 idx = (__u32)(mc_addr_hash(client) ^ svc->svc_id) % MC_MAGLEV_M;

			asm volatile("" : "+r"(idx));
			if (idx < MC_MAGLEV_M)
				backend_id = tbl->backend_ids[idx];
		}
	}
	if (!backend_id) {
		key->slot = (bpf_get_prandom_u32() % svc->count) + 1;
		slot = bpf_map_lookup_elem(&mc_svc, key);
		key->slot = 0;
		if (!slot)
			return 0;
		backend_id = slot->backend_id;
	}
	if (svc->flags & MC_SVC_F_AFFINITY) {
		struct mc_affinity val = { .last_used_ns = now, .backend_id = backend_id };

		bpf_map_update_elem(&mc_np_affinity, &ak, &val, BPF_ANY);
	}
	return backend_id;
}

/* -1: not a frontend of the uplink; else the verdict */
static __always_inline int mc_nodeport(struct __sk_buff *skb, struct mc_tuple *t,
				       const struct mc_l4 *l, const struct mc_nat_dev *dev,
				       __u64 now)
{
	struct mc_svc_key key = {};
	struct mc_svc_value *svc;
	struct mc_backend_key bk;
	struct mc_backend *be;
	struct mc_nat_key fk = {}, rk = {};
	struct mc_nat fv = {}, rv = {};
	__u32 node[4];
	int have_node;
	__u16 flags, count;
	__u32 svc_id;
	__u8 st;

	if (t->proto != MC_PROTO_TCP && t->proto != MC_PROTO_UDP)
		return -1;
	__builtin_memcpy(key.addr, t->daddr, 16);
	key.port = t->dport;
	key.proto = t->proto;
	key.scope = MC_SVC_SCOPE_EXT;
	svc = bpf_map_lookup_elem(&mc_svc, &key);
	if (!svc || !(svc->flags & (MC_SVC_F_NODEPORT | MC_SVC_F_EXTERNAL)))
		return -1;
	flags = svc->flags;
	count = svc->count;
	svc_id = svc->svc_id;
	if (flags & MC_SVC_F_SRC_RANGES) {
		struct mc_lb_src_range_key sk = { .prefixlen = 32 + 128, .svc_id = svc_id };

		__builtin_memcpy(sk.addr, t->saddr, 16);
		if (!bpf_map_lookup_elem(&mc_lb_src_ranges, &sk))
			return mc_drop(skb, t, MC_DROP_REASON_SOURCE_RANGE, MC_DIR_INGRESS, 0, 0);
	}
	if (count == 0)
		return mc_drop(skb, t, MC_DROP_REASON_NO_BACKEND, MC_DIR_INGRESS, 0, 0);
	bk.backend_id = mc_np_select(&key, svc, t->saddr, now);
	be = bk.backend_id ? bpf_map_lookup_elem(&mc_backends, &bk) : NULL;
	if (!be || mc_addr_is_v4(be->addr) == t->is_v6)
		return mc_drop(skb, t, MC_DROP_REASON_NO_BACKEND, MC_DIR_INGRESS, 0, 0);

	st = mc_nat_state(t, 0);
	fv.expires_ns = now + mc_nat_timeout(t->proto, st);
	fv.state = st;
	fv.svc_id = svc_id;
	rv.expires_ns = fv.expires_ns;
	rv.state = st;
	rv.svc_id = svc_id;
	__builtin_memcpy(fv.daddr, be->addr, 16);
	fv.dport = be->port;
	__builtin_memcpy(rv.saddr, t->daddr, 16); /* the reply comes from the frontend */
	rv.sport = t->dport;
	mc_nat_key_of(&fk, t, MC_NAT_DIR_IN, 0);
	have_node = mc_node_addr(dev, t->is_v6, node);

	if ((flags & MC_SVC_F_ETP_LOCAL) ||
	    (mc_cidr_flags((const __u32 *)be->addr) & MC_NAT_CIDR_LOCAL_POD) ||
	    (have_node && mc_addr_eq(node, be->addr))) {
		/* DNAT only: the backend's reply passes this uplink's egress */
		fv.xlate = MC_NAT_X_DST;
		fv.kind = MC_NAT_KIND_DNAT;
		fv.peer_dir = MC_NAT_DIR_OUT;
		rv.xlate = MC_NAT_X_SRC;
		rv.kind = MC_NAT_KIND_DNAT;
		rv.peer_dir = MC_NAT_DIR_IN;
		__builtin_memcpy(rk.saddr, be->addr, 16);
		__builtin_memcpy(rk.daddr, t->saddr, 16);
		rk.sport = be->port;
		rk.dport = t->sport;
		rk.proto = t->proto;
		rk.dir = MC_NAT_DIR_OUT;
		bpf_map_update_elem(&mc_nat, &rk, &rv, BPF_ANY);
		bpf_map_update_elem(&mc_nat, &fk, &fv, BPF_ANY);
		if (mc_nat_apply(skb, t, l, &fv))
			return mc_drop(skb, t, MC_DROP_REASON_MALFORMED, MC_DIR_INGRESS, 0, 0);
		return MC_TC_OK;
	}

	/* DNAT + SNAT: the reply must come back through this node */
	if (!have_node)
		return mc_drop(skb, t, MC_DROP_REASON_NAT_PORTS, MC_DIR_INGRESS, 0, 0);
	rv.xlate = MC_NAT_X_SRC | MC_NAT_X_DST | MC_NAT_X_REDIRECT;
	rv.kind = MC_NAT_KIND_SNAT;
	rv.peer_dir = MC_NAT_DIR_IN;
	__builtin_memcpy(rv.daddr, t->saddr, 16);
	rv.dport = t->sport;
	__builtin_memcpy(rk.saddr, be->addr, 16);
	__builtin_memcpy(rk.daddr, node, 16);
	rk.sport = be->port;
	rk.proto = t->proto;
	rk.dir = MC_NAT_DIR_IN;
	fv.sport = mc_nat_claim(&rk, &rv, 0, now);
	if (!fv.sport)
		return mc_drop(skb, t, MC_DROP_REASON_NAT_PORTS, MC_DIR_INGRESS, 0, 0);
	__builtin_memcpy(fv.saddr, node, 16);
	fv.xlate = MC_NAT_X_SRC | MC_NAT_X_DST | MC_NAT_X_REDIRECT;
	fv.kind = MC_NAT_KIND_SNAT;
	fv.peer_dir = MC_NAT_DIR_IN;
	bpf_map_update_elem(&mc_nat, &fk, &fv, BPF_ANY);
	if (mc_nat_apply(skb, t, l, &fv))
		return mc_drop(skb, t, MC_DROP_REASON_MALFORMED, MC_DIR_INGRESS, 0, 0);
	return mc_redirect_out(skb, t);
}

/* ---- masquerade ---- */

static __always_inline int mc_is_node(const __u32 *addr)
{
	struct mc_ipcache_key k = { .prefixlen = 128 };
	struct mc_ipcache *v;

	__builtin_memcpy(k.addr, addr, 16);
	v = bpf_map_lookup_elem(&mc_ipcache, &k);
	return v && (v->identity == MC_ID_HOST || v->identity == MC_ID_REMOTE_NODE);
}

/*
 * Is t the reply of a connection someone outside opened to the pod (pod IPs
 * are routed, so outside hosts may reach pods directly)? Such a reply must
 * keep the pod's address. The pod's veth program tracked the connection in
 * mc_ct when it entered the pod (originator outside, its INGRESS hook).
 */
static __always_inline int mc_inbound_reply(const struct mc_tuple *t, __u64 now)
{
	struct mc_ct_key k = {};
	struct mc_ct *e;

	mc_ct_key_of(&k, t, MC_DIR_INGRESS, 1);
	e = bpf_map_lookup_elem(&mc_ct, &k);
	return e && e->expires_ns > now;
}

/* -1: not masqueraded; else the verdict. `t` is folded (mc_echo_fold);
 * `osport`/`odport` are its ports as parsed, which mc_ct keys use (two
 * ports rather than a copy of the tuple: the uplink programs' stack is
 * close to the 512-byte limit) */
static __always_inline int mc_masquerade(struct __sk_buff *skb, struct mc_tuple *t,
					 __be16 osport, __be16 odport, const struct mc_l4 *l,
					 const struct mc_nat_dev *dev, __u64 now)
{
	__be16 fsport = t->sport, fdport = t->dport;
	int inbound;
	struct mc_nat_key fk = {}, rk = {};
	struct mc_nat fv = {}, rv = {};
	__u32 node[4];
	__u8 st;

	if (!(dev->flags & MC_NAT_DEV_F_MASQ))
		return -1;
	/* only what the pod opens: a TCP SYN, an echo request, a UDP datagram
	 * that is no reply of an inbound flow; anything else of an unknown flow
	 * leaves as it is */
	if (t->proto == MC_PROTO_TCP) {
		if ((t->tcp_flags & (MC_TCP_SYN | MC_TCP_ACK | MC_TCP_RST)) != MC_TCP_SYN)
			return -1;
	} else if (t->proto == MC_PROTO_ICMP || t->proto == MC_PROTO_ICMPV6) {
		if (t->icmp_ct != MC_ICMP_CT_REQUEST || !l->has_ports)
			return -1;
	} else if (t->proto != MC_PROTO_UDP) {
		return -1;
	}
	t->sport = osport;
	t->dport = odport;
	inbound = mc_inbound_reply(t, now);
	t->sport = fsport;
	t->dport = fdport;
	if (inbound)
		return -1;
	if (!(mc_cidr_flags(t->saddr) & MC_NAT_CIDR_LOCAL_POD))
		return -1;
	if (mc_cidr_flags(t->daddr) & (MC_NAT_CIDR_POD | MC_NAT_CIDR_SERVICE | MC_NAT_CIDR_NO_MASQ))
		return -1;
	if (!mc_node_addr(dev, t->is_v6, node) || mc_addr_eq(node, t->daddr) || mc_is_node(t->daddr))
		return -1;

	st = mc_nat_state(t, 0);
	rv.expires_ns = now + mc_nat_timeout(t->proto, st);
	rv.state = st;
	rv.xlate = MC_NAT_X_DST;
	rv.kind = MC_NAT_KIND_MASQ;
	rv.peer_dir = MC_NAT_DIR_OUT;
	__builtin_memcpy(rv.daddr, t->saddr, 16);
	rv.dport = t->sport;
	__builtin_memcpy(rk.saddr, t->daddr, 16);
	__builtin_memcpy(rk.daddr, node, 16);
	rk.sport = t->dport;
	rk.proto = t->proto;
	rk.dir = MC_NAT_DIR_IN;
	if (t->proto == MC_PROTO_ICMP || t->proto == MC_PROTO_ICMPV6) {
		/* echo: the identifier is both "ports"; the reply's key has the
		 * claimed one on both sides, set below */
		rk.sport = 0;
	}
	fv.sport = mc_nat_claim(&rk, &rv, bpf_ntohs(t->sport), now);
	if (!fv.sport)
		return mc_drop(skb, t, MC_DROP_REASON_NAT_PORTS, MC_DIR_EGRESS, 0, 0);
	if (t->proto == MC_PROTO_ICMP || t->proto == MC_PROTO_ICMPV6) {
		/* re-key the claimed entry with the identifier as sport too */
		struct mc_nat_key ek = rk;

		ek.sport = fv.sport;
		if (bpf_map_update_elem(&mc_nat, &ek, &rv, BPF_NOEXIST)) {
			bpf_map_delete_elem(&mc_nat, &rk);
			return mc_drop(skb, t, MC_DROP_REASON_NAT_PORTS, MC_DIR_EGRESS, 0, 0);
		}
		bpf_map_delete_elem(&mc_nat, &rk);
	}
	fv.expires_ns = rv.expires_ns;
	fv.state = st;
	fv.xlate = MC_NAT_X_SRC;
	fv.kind = MC_NAT_KIND_MASQ;
	fv.peer_dir = MC_NAT_DIR_IN;
	__builtin_memcpy(fv.saddr, node, 16);
	mc_nat_key_of(&fk, t, MC_NAT_DIR_OUT, 0);
	bpf_map_update_elem(&mc_nat, &fk, &fv, BPF_ANY);
	if (mc_nat_apply(skb, t, l, &fv))
		return mc_drop(skb, t, MC_DROP_REASON_MALFORMED, MC_DIR_EGRESS, 0, 0);
	return MC_TC_OK;
}

static __always_inline int mc_uplink(struct __sk_buff *skb, __u8 dir)
{
	struct mc_nat_dev_key dk = { .ifindex = skb->ifindex };
	struct mc_nat_dev *dev;
	struct mc_tuple t = {};
	__be16 osport, odport;
	struct mc_l4 l = {};
	__u32 l4off = 0;
	__u64 now;
	int later, rc;

	dev = bpf_map_lookup_elem(&mc_nat_devs, &dk);
	if (!dev)
		return MC_TC_OK;
	/* malformed packets are the stack's to drop; policy is not enforced here */
	if (mc_parse(skb, &t) != MC_PARSE_OK || t.always_pass)
		return MC_TC_OK;
	if (mc_xlate_l4(skb, &t, &l4off))
		return MC_TC_OK;
	later = t.nonfirst_frag;
	if (t.is_frag && mc_frag_ports(&t, MC_FRAG_DIR_UPLINK + dir))
		return MC_TC_OK; /* a later fragment whose first was not seen */
	t.nonfirst_frag = later;
	now = bpf_ktime_get_ns();
	if (t.icmp_err) {
		rc = mc_icmp_err(skb, &t, l4off, dir);
		return rc < 0 ? MC_TC_OK : rc;
	}
	osport = t.sport;
	odport = t.dport;
	mc_echo_fold(&t);
	mc_l4_of(&t, l4off, &l);
	rc = mc_nat_hit(skb, &t, &l, dir, now);
	if (rc >= 0 || later)
		return rc >= 0 ? rc : MC_TC_OK;
	if (dir == MC_NAT_DIR_IN)
		rc = mc_nodeport(skb, &t, &l, dev, now);
	else
		rc = mc_masquerade(skb, &t, osport, odport, &l, dev, now);
	return rc < 0 ? MC_TC_OK : rc;
}

SEC("tc")
int mc_uplink_in(struct __sk_buff *skb)
{
	return mc_uplink(skb, MC_NAT_DIR_IN);
}

SEC("tc")
int mc_uplink_out(struct __sk_buff *skb)
{
	return mc_uplink(skb, MC_NAT_DIR_OUT);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
