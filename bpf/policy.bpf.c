// SPDX-License-Identifier: (GPL-2.0-only OR MIT)
/*
 * Pod-facing tc programs, attached on the host side of each pod's veth.
 *
 * Directions are the pod's (Cilium's naming):
 *   mc_from_pod  tc ingress of the host-side veth = packets leaving the pod
 *                = the pod's EGRESS policy (MC_DIR_EGRESS), peer = daddr;
 *   mc_to_pod    tc egress of the host-side veth = packets entering the pod
 *                = the pod's INGRESS policy (MC_DIR_INGRESS), peer = saddr.
 * The local endpoint is mc_endpoints[skb->ifindex] (on both hooks that is
 * the host-side veth); an interface with no endpoint entry is not ours and
 * passes untouched.
 *
 * Order: parse (parse.h documents the malformed-packet rule) -> fragments
 * (frag.h: a later fragment takes its first fragment's ports) -> conntrack
 * (forward / reply pass) -> ICMP error related to a tracked flow passes ->
 * policy (unenforced = allow) -> allowed: create the CT entry; else drop
 * with a counted reason and a ring-buffer event.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "lib/maps_def.h"
#include "lib/parse.h"
#include "lib/policy.h"
#include "lib/conntrack.h"
#include "lib/frag.h"
#include "lib/drop_reasons.h"

static __always_inline int mc_handle(struct __sk_buff *skb, __u8 dir)
{
	struct mc_endpoint_key ek = { .ifindex = skb->ifindex };
	struct mc_tuple t = {};
	struct mc_endpoint *ep;
	__u32 local, peer, src_id, dst_id;
	__u64 now;
	int rc;

	ep = bpf_map_lookup_elem(&mc_endpoints, &ek);
	if (!ep)
		return MC_TC_OK;
	local = ep->identity;

	rc = mc_parse(skb, &t);
	if (rc == MC_PARSE_NOT_IP)
		return MC_TC_OK;

	peer = mc_identity_of(dir == MC_DIR_EGRESS ? t.daddr : t.saddr);
	src_id = dir == MC_DIR_EGRESS ? local : peer;
	dst_id = dir == MC_DIR_EGRESS ? peer : local;
	if (rc != MC_PARSE_OK)
		return mc_drop(skb, &t, MC_DROP_REASON_MALFORMED, dir, src_id, dst_id);
	if (t.always_pass)
		return MC_TC_OK;
	if (t.is_frag && mc_frag_ports(&t, dir)) {
		/* a later fragment whose first one was not seen: no ports to decide on */
		if (mc_enforced(local, dir))
			return mc_drop(skb, &t, MC_DROP_REASON_FRAGMENT, dir, src_id, dst_id);
		return MC_TC_OK;
	}

	now = bpf_ktime_get_ns();
	if (t.icmp_err) {
		struct mc_tuple in = {};

		in.is_v6 = t.is_v6;
		if (mc_parse_inner(skb, &t, &in) == MC_PARSE_OK &&
		    mc_ct_related(&in, dir, now))
			return MC_TC_OK;
	} else if (mc_ct_lookup(&t, dir, skb->len, now) != MC_CT_NEW) {
		return MC_TC_OK;
	}

	rc = mc_policy_verdict(local, dir, peer, t.proto, t.dport);
	if (rc == MC_VERDICT_DENY)
		return mc_drop(skb, &t, MC_DROP_REASON_POLICY_DENY, dir, src_id, dst_id);
	if (rc != MC_VERDICT_ALLOW)
		return mc_drop(skb, &t, MC_DROP_REASON_POLICY, dir, src_id, dst_id);
	if (!t.icmp_err)
		mc_ct_create(&t, dir, src_id, skb->len, now);
	return MC_TC_OK;
}

SEC("tc")
int mc_from_pod(struct __sk_buff *skb)
{
	return mc_handle(skb, MC_DIR_EGRESS);
}

SEC("tc")
int mc_to_pod(struct __sk_buff *skb)
{
	return mc_handle(skb, MC_DIR_INGRESS);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
