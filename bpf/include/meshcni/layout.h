/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * meshcni map layouts: THE one definition of every key and value that crosses
 * the kernel/userspace boundary.
 *
 * Three consumers read this file and a test (tests/kernel/test_layout_drift.py)
 * fails when they disagree:
 *   - the BPF programs (bpf/NAME.bpf.c, via maps.h), whose BTF records the layout
 *     clang chose;
 *   - csrc/ (the cffi extension), where the host C compiler lays it out and
 *     cffi reports sizeof/offsetof;
 *   - meshcni/layout.py, which parses this file to build numpy dtypes.
 *
 * Rules that keep the three in agreement (the parser enforces them):
 *   - only the fixed-width kernel types __u8/__u16/__u32/__u64 and the
 *     big-endian __be16/__be32/__be64 (numpy gets '>' byte order for those);
 *     one-dimensional arrays of them;
 *   - no implicit padding: every hole is an explicit `pad` field, so natural
 *     alignment, clang -target bpf and gcc all produce the same offsets;
 *   - no trailing padding either (size is a multiple of the alignment);
 *     per-CPU values are multiples of 8 so the kernel adds no rounding;
 *   - constants are plain `#define NAME <integer>` lines.
 *
 * Addresses: one unified 16-byte form for both families. IPv6 as is, IPv4 as
 * an IPv4-mapped IPv6 address (::ffff:a.b.c.d), so a single map (and a single
 * LPM trie, where an IPv4 /p is a /96+p) serves both. Always network order.
 */
#ifndef MESHCNI_LAYOUT_H
#define MESHCNI_LAYOUT_H

/* ---- reserved security identities (see docs/architecture.md) ---- */
#define MC_ID_UNKNOWN 0
#define MC_ID_HOST 1
#define MC_ID_WORLD 2
#define MC_ID_REMOTE_NODE 6
#define MC_ID_ANY 0

/* ---- capacities (max_entries) ----
 * Sized for 10k Services x 10 backends with room for an apply's transient
 * (new slots and backends are written before the old ones are deleted):
 * mc_svc needs 1 + backends slots per frontend (110k), mc_backends one row
 * per backend (100k). The service maps are BPF_F_NO_PREALLOC (maps.h), so
 * a small cluster pays only for the entries it has.
 */
#define MC_SVC_MAX 262144
#define MC_BACKENDS_MAX 262144
#define MC_REVNAT_MAX 65536
#define MC_SOCK_REVNAT_MAX 262144
#define MC_AFFINITY_MAX 65536
#define MC_MAGLEV_MAX 4096
#define MC_MAGLEV_M 1021
#define MC_IPCACHE_MAX 524288
#define MC_ENDPOINTS_MAX 4096
#define MC_POLICY_MAX 262144
#define MC_ENFORCE_MAX 65536
#define MC_CT_MAX 262144
#define MC_FRAG_MAX 8192
#define MC_DROP_REASONS 64
#define MC_LB_SRC_RANGES_MAX 16384
#define MC_NAT_MAX 262144
#define MC_NAT_DEVS_MAX 64
#define MC_NAT_CIDRS_MAX 4096
#define MC_NP_AFFINITY_MAX 65536
#define MC_EVENTS_BYTES 1048576

/* ---- service frontends (socket LB) ----
 * Cilium-style slots: slot 0 of a frontend is the master entry carrying the
 * backend count and the service flags; slots 1..count carry one backend id
 * each, so backend selection is one extra lookup and no variable-size value.
 */
struct mc_svc_key {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 scope;
	__u16 slot;
	__u16 pad;
};

#define MC_SVC_F_AFFINITY 1
#define MC_SVC_F_MAGLEV 2
/* Frontend kinds beyond ClusterIP (issue 20). A NodePort frontend is written
 * once per node address that answers (--nodeport-addresses) and once with the
 * all-zero address (the wildcard the socket LB uses for another node's
 * address); an externalIP or LoadBalancer ingress IP is EXTERNAL. */
#define MC_SVC_F_NODEPORT 4
#define MC_SVC_F_EXTERNAL 8
/* externalTrafficPolicy: Local: scope EXT holds only this node's backends and
 * the client's source address is kept (no SNAT). */
#define MC_SVC_F_ETP_LOCAL 16
/* The frontend has a second master at scope INT whose backends in-cluster
 * clients (the socket LB) use: eTP Local (in-cluster traffic keeps every
 * backend) or internalTrafficPolicy: Local (in-cluster traffic gets only
 * this node's backends). */
#define MC_SVC_F_TWO_SCOPES 32
/* loadBalancerSourceRanges: a client is served only if mc_lb_src_ranges
 * holds (svc_id, client address). */
#define MC_SVC_F_SRC_RANGES 64
#define MC_SVC_F_ITP_LOCAL 128

/* mc_svc_key.scope */
#define MC_SVC_SCOPE_EXT 0
#define MC_SVC_SCOPE_INT 1

struct mc_svc_value {
	__u32 backend_id;
	__u16 count;
	__u16 flags;
	__u32 svc_id;
	__u32 affinity_timeout;
};

struct mc_backend_key {
	__u32 backend_id;
};

struct mc_backend {
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 flags;
	__u32 pad;
};

/* svc_id -> the frontend a reply must appear to come from */
struct mc_revnat_key {
	__u32 svc_id;
};

struct mc_revnat {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
	__u32 pad2;
};

/* (socket cookie, backend) -> frontend, for recvmsg/getpeername rewrites */
struct mc_sock_revnat_key {
	__u64 cookie;
	__u8 addr[16];
	__be16 port;
	__u16 pad;
	__u32 pad2;
};

struct mc_sock_revnat {
	__u8 addr[16];
	__be16 port;
	__u16 pad;
	__u32 svc_id;
};

/* ClientIP affinity, keyed by the client's network-namespace cookie */
struct mc_affinity_key {
	__u64 client_cookie;
	__u32 svc_id;
	__u32 pad;
};

struct mc_affinity {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

struct mc_maglev_key {
	__u32 svc_id;
};

struct mc_maglev {
	__u32 backend_ids[MC_MAGLEV_M];
	__u32 pad;
};

/* loadBalancerSourceRanges, LPM trie: svc_id matched in full (prefix 32 +
 * the range's prefix in the unified 16-byte form). */
struct mc_lb_src_range_key {
	__u32 prefixlen;
	__u32 svc_id;
	__u8 addr[16];
};

struct mc_lb_src_range {
	__u32 flags;
	__u32 pad;
};

/* ---- the node's uplink: NodePort/external frontends and masquerade ----
 * bpf/nodeport.bpf.c on every uplink (agent --devices). Per device: the
 * node's addresses traffic is translated to and whether pod traffic is
 * masqueraded. An all-zero address: the device has none of that family.
 */
struct mc_nat_dev_key {
	__u32 ifindex;
};

#define MC_NAT_DEV_F_MASQ 1

struct mc_nat_dev {
	__u8 addr4[16];
	__u8 addr6[16];
	__u32 flags;
	__u32 pad;
};

/* What an address is to the uplink, LPM over the unified form. The longest
 * prefix decides, so userspace ORs into each prefix the flags of every
 * prefix containing it. */
#define MC_NAT_CIDR_LOCAL_POD 1 /* a pod CIDR of this node */
#define MC_NAT_CIDR_POD 2       /* any pod CIDR of the cluster */
#define MC_NAT_CIDR_SERVICE 4   /* a service CIDR */
#define MC_NAT_CIDR_NO_MASQ 8   /* --non-masquerade-cidr */

struct mc_nat_cidr_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct mc_nat_cidr {
	__u32 flags;
	__u32 pad;
};

/*
 * NAT state: one entry per translated flow and hook, keyed by the packet as
 * it is seen on that hook of the uplink (dir MC_NAT_DIR_IN: arriving, tc
 * ingress; MC_NAT_DIR_OUT: leaving, tc egress), so every packet of a
 * translated flow is one lookup. The value says what to rewrite it to.
 * Entries come in pairs (the flow and its reply); a hit refreshes both, the
 * other being the translated packet's reversed tuple under peer_dir.
 *   NodePort, local backend (DNAT): IN client->frontend => dst backend;
 *     OUT backend->client => src frontend.
 *   NodePort, remote backend (DNAT+SNAT): IN client->frontend => src
 *     node:port, dst backend; IN backend->node:port => src frontend, dst
 *     client; both redirected out (the stack would drop a packet arriving
 *     with the node's own source).
 *   Masquerade: OUT pod->outside => src node:port; IN outside->node:port
 *     => dst pod.
 * ICMP echo uses the identifier as the port. Entries past expires_ns are
 * absent; userspace GC deletes them (meshcni.datapath.nodeport.nat_gc).
 */
#define MC_NAT_DIR_IN 0
#define MC_NAT_DIR_OUT 1

struct mc_nat_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad2;
};

#define MC_NAT_X_SRC 1      /* rewrite the source to saddr:sport */
#define MC_NAT_X_DST 2      /* rewrite the destination to daddr:dport */
#define MC_NAT_X_REDIRECT 4 /* send out by FIB lookup, not up the stack */

#define MC_NAT_KIND_DNAT 1
#define MC_NAT_KIND_SNAT 2
#define MC_NAT_KIND_MASQ 3

/* translated source ports (and ICMP echo identifiers): outside Linux's
 * default ephemeral range (32768-60999) and the NodePort range, so the
 * node's own connections never meet a translated flow's reply tuple */
#define MC_NAT_PORT_MIN 61000
#define MC_NAT_PORT_MAX 65535
#define MC_NAT_PORT_TRIES 32

#define MC_NAT_TIMEOUT_TCP_SYN_S 60
#define MC_NAT_TIMEOUT_TCP_ESTABLISHED_S 21600
#define MC_NAT_TIMEOUT_TCP_CLOSING_S 10
#define MC_NAT_TIMEOUT_UDP_S 60
#define MC_NAT_TIMEOUT_ICMP_S 30

struct mc_nat {
	__u64 expires_ns;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 xlate;
	__u8 state;     /* MC_CT_STATE_* */
	__u8 kind;      /* MC_NAT_KIND_* */
	__u8 peer_dir;
	__u32 svc_id;
	__u32 pad;
};

/* ClientIP affinity of uplink traffic: keyed by the client's address */
struct mc_np_affinity_key {
	__u8 addr[16];
	__u32 svc_id;
	__u32 pad;
};

/* ---- ipcache: LPM trie, unified address -> identity ---- */
struct mc_ipcache_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct mc_ipcache {
	__u32 identity;
	__u32 flags;
};

/* ---- local endpoints (pods on this node), keyed by host-side ifindex ---- */
struct mc_endpoint_key {
	__u32 ifindex;
};

struct mc_endpoint {
	__u8 addr[16];
	__u32 identity;
	__u32 flags;
	__u64 netns_cookie;
};

/* ---- policy: LPM trie so that a port range is a few prefixes ----
 * Bit order of the trie is the field order below (all big-endian):
 *   identity(32) dir(8) pad(24) peer(32) proto(8) pad(8) port(16)
 * The local endpoint's identity and the direction are always matched in
 * full; "any protocol" is a /96 (stops after peer), "any port" a /112 (stops
 * before the port), one port a /128, and a port range (endPort) is split
 * into aligned power-of-two blocks: at most 2*16-2 prefixes, never one entry
 * per port. "Any peer" is peer = MC_ID_ANY, a second lookup, which keeps the
 * entry count linear in the rules.
 */
struct mc_policy_key {
	__u32 prefixlen;
	__be32 identity;
	__u8 dir;
	__u8 pad;
	__u16 pad2;
	__be32 peer;
	__u8 proto;
	__u8 pad3;
	__be16 port;
};

#define MC_POLICY_PREFIX_PEER 96
#define MC_POLICY_PREFIX_PROTO 112
#define MC_POLICY_KEY_BITS 128

#define MC_DIR_INGRESS 0
#define MC_DIR_EGRESS 1

#define MC_POLICY_ALLOW 1
#define MC_POLICY_DENY 2

struct mc_policy {
	__u8 action;
	__u8 pad;
	__u16 pad2;
	__u32 rule_id;
};

struct mc_enforce_key {
	__u32 identity;
	__u8 dir;
	__u8 pad;
	__u16 pad2;
};

struct mc_enforce {
	__u32 enforced;
	__u32 pad;
};

/* ---- conntrack (unified addresses, both families in one map) ---- */
struct mc_ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad2;
};

/*
 * Conntrack key scheme: an entry is the forward tuple as the originator sent
 * it (saddr/sport = the side that opened the connection), plus `dir`: the
 * policy direction (MC_DIR_*) of the hook that admitted it. A packet is
 * looked up as-is with its hook's dir (forward), then reversed (daddr, saddr,
 * dport, sport) with the opposite dir (a reply). The dir keeps the two ends
 * of a pod-to-pod connection on one node apart: the sender's egress entry
 * never admits a packet past the receiver's ingress policy.
 */
#define MC_CT_STATE_SYN_SENT 1
#define MC_CT_STATE_ESTABLISHED 2
#define MC_CT_STATE_CLOSING 3
#define MC_CT_STATE_DATAGRAM 4
#define MC_CT_F_SEEN_REPLY 1
#define MC_CT_TIMEOUT_SYN_S 60
#define MC_CT_TIMEOUT_ESTABLISHED_S 21600
#define MC_CT_TIMEOUT_CLOSING_S 10
#define MC_CT_TIMEOUT_DATAGRAM_S 60

struct mc_ct {
	__u64 expires_ns;
	__u64 packets;
	__u64 bytes;
	__u32 src_identity;
	__u16 state;
	__u16 flags;
};

/* ---- IP fragments ----
 * The ports, L4 protocol and ICMP pairing of a fragmented datagram, taken
 * from its first fragment, for the fragments that follow it (they carry no
 * L4 header, and an IPv6 one names only the header after the fragment
 * header, which need not be the L4 one). Keyed the way the IP
 * layer reassembles: addresses, protocol (IPv6: the fragment header's next
 * header) and the identification (16 bits in IPv4, 32 in IPv6), network
 * order, plus the policy direction of the hook (a datagram's fragments all
 * travel one way; a first fragment seen on the other hook gives no ports). LRU: a later fragment whose datagram was evicted, or whose first
 * fragment never passed this node, has no ports and is dropped where its
 * direction is enforced (MC_DROP_REASON_FRAGMENT), as before tracking.
 */
struct mc_frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 id;
	__u8 proto;
	__u8 dir;   /* the hook that saw the first fragment: fragments travel one way */
	__u16 pad2;
};

struct mc_frag {
	__be16 sport;
	__be16 dport;
	__u8 proto;   /* the L4 protocol (IPv6: past any header after the fragment header) */
	__u8 icmp_ct; /* MC_ICMP_CT_* of the first fragment (bpf/lib/parse.h) */
	__u16 pad;
};

/* ---- visibility ----
 * Drop reasons: the index of mc_drops and mc_drop_event.reason. The CLI
 * prints the name after MC_DROP_REASON_ (lower-cased).
 */
#define MC_DROP_REASON_POLICY 1
#define MC_DROP_REASON_POLICY_DENY 2
#define MC_DROP_REASON_MALFORMED 3
#define MC_DROP_REASON_FRAGMENT 4
#define MC_DROP_REASON_NO_BACKEND 5
#define MC_DROP_REASON_SOURCE_RANGE 6
#define MC_DROP_REASON_NAT_PORTS 7

struct mc_drop_key {
	__u32 reason;
};

/* per-CPU value */
struct mc_drop_count {
	__u64 packets;
	__u64 bytes;
};

struct mc_drop_event {
	__u64 ts_ns;
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 reason;
	__u32 src_identity;
	__u32 dst_identity;
	__u32 ifindex;
	__u32 pad;
};

#endif /* MESHCNI_LAYOUT_H */
