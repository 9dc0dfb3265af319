"""The gencluster wire contract (`gencluster.proto`) and the code generated from it.

Import the messages and stubs from here: `from gencluster.proto import gencluster_pb2`.
"""
