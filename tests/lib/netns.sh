# shellcheck shell=bash
# tests/lib/netns.sh: network namespaces for the suites that need two hosts
# (test_curve_netns, test_security). Needs root (CAP_NET_ADMIN).
#
#   netns_pair NS1 NS2 DEV1 DEV2 ADDR1 ADDR2
#                        creates namespaces NS1 and NS2 joined by a veth pair:
#                        DEV1 in NS1 with ADDR1/24, DEV2 in NS2 with ADDR2/24,
#                        both and each loopback up. On failure returns 1 with
#                        the reason in NETNS_ERR (the caller removes what was
#                        made: netns_del).
#   netns_del NS1 NS2 DEV1
#                        removes what netns_pair made (quietly; safe when
#                        none of it exists)

netns_pair() {
  local out
  NETNS_ERR=
  if ! out=$(ip netns add "$1" 2>&1); then
    NETNS_ERR="cannot create a network namespace (needs root / CAP_NET_ADMIN): $out"
    return 1
  fi
  ip netns add "$2" &&
    ip link add "$3" type veth peer name "$4" &&
    ip link set "$3" netns "$1" && ip link set "$4" netns "$2" &&
    ip -n "$1" addr add "$5/24" dev "$3" && ip -n "$2" addr add "$6/24" dev "$4" &&
    ip -n "$1" link set lo up && ip -n "$2" link set lo up &&
    ip -n "$1" link set "$3" up && ip -n "$2" link set "$4" up || {
    NETNS_ERR="network namespace setup failed"
    return 1
  }
}

netns_del() {
  ip netns del "$1" 2>/dev/null
  ip netns del "$2" 2>/dev/null
  ip link del "$3" 2>/dev/null
}
