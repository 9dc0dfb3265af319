"""The process kubelet: one node running each pod's containers as local processes.

`kubelet` owns the node (registration, scheduling, Events); `podworker` one pod; `containers`
one container; `probes` and `podspec` hold the pure decisions; `addresses` the IP and uid
pools. Children get narrow interfaces (`PodHost`, `ContainerPod`, `ContainerRuntimeSettings`,
`PodEvents`), never their parent. Uses machinery and client only.
"""
