"""Networking: the Service proxy, and real faults (signals, nftables).

Uses machinery and client only; faults find pods through the files the kubelet writes, so
they work from any process without importing the node.
"""
