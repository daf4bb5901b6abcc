"""Regions in the lab: an emulated topology on one machine (network namespaces and the net
lab's delay) with a client, a near and a far region, each with halfsec servers behind
Envoy; used to measure routing, failover and resumed conversations."""
