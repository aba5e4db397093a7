"""The ``k8s_psat`` attestation method (SPIRE's): an agent running in a Kubernetes pod proves
itself with a projected service-account token, which the server checks through the cluster's
TokenReview API before reading the agent's pod and node for its selectors.

- :mod:`.config`: both halves' ``plugin_data`` (SPIRE's keys);
- :mod:`.kubeconfig`: how the server reaches a cluster (a kubeconfig file, or in-cluster);
- :mod:`.kube`: the three API calls (TokenReview, get pod, get node) over plain HTTPS;
- :mod:`.server`, :mod:`.agent`: the two halves; :mod:`.plugin`: registration.
"""
