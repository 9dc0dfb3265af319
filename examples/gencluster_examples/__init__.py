"""The two servers of the gen_server_cluster article, runnable on gencluster.

Reference them from a ClusteredServer as `gencluster_examples.id_server:IdServer` and
`gencluster_examples.chat:ChatServer`.
"""
