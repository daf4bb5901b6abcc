#!/bin/sh
# Host tools the network lab's namespace mode needs (iproute2 for netns/veth/tc,
# nftables for random drop on the veths). Run as root on CI before `pytest tests/test_netem.py`.
# The userspace relays (udp_relay, tcp_relay) need none of this.
set -eu
missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v tc >/dev/null 2>&1 || missing="$missing iproute2"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing
fi
ip -V
nft --version
