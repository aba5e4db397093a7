"""Kubelet pod list documents: finding the caller's container and SPIRE's k8s selector values.

The kubelet's ``GET /pods`` answers a ``PodList`` (``{"kind": "PodList", "items": [Pod...]}``).
Only the fields the selectors need are read, each checked for its JSON type: a document of
the wrong shape is :class:`MalformedPodList`, never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any


class MalformedPodList(ValueError):
    """The kubelet's answer is not a pod list of the expected shape."""


def pods_by_uid(document: object) -> dict[str, dict[str, Any]]:
    """The pods of a PodList by ``metadata.uid`` (pods without one are skipped, as SPIRE)."""
    if not isinstance(document, dict):
        raise MalformedPodList("the pod list is not a JSON object")
    if "items" not in document:
        raise MalformedPodList("the pod list has no items")
    items = document["items"]
    if items is None:  # Go encodes an empty PodList.Items as null
        return {}
    if not isinstance(items, list):
        raise MalformedPodList("the pod list's items is not an array")
    pods: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, dict):
            raise MalformedPodList("a pod in the list is not an object")
        uid = _string(_object(item, "metadata"), "uid", "metadata.uid")
        if uid:
            pods[uid] = item
    return pods


def _object(parent: dict[str, Any], key: str, where: str | None = None) -> dict[str, Any]:
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPodList(f"{where or key} is not an object")
    return value


def _string(parent: dict[str, Any], key: str, where: str) -> str:
    value = parent.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise MalformedPodList(f"{where} is not a string")
    return value


def _objects(parent: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = parent.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MalformedPodList(f"{where} is not an array of objects")
    return value


def _string_map(parent: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = _object(parent, key, where)
    if not all(isinstance(v, str) for v in value.values()):
        raise MalformedPodList(f"{where} has a value that is not a string")
    return value


def _runtime_container_id(status_id: str) -> str | None:
    """``containerd://<id>`` → ``<id>``: the host part of the status's container URL."""
    scheme, sep, rest = status_id.partition("://")
    if not sep or not scheme:
        return None
    return re.split(r"[/?#]", rest, maxsplit=1)[0] or None


def container_statuses(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The pod's container statuses, then its init container statuses."""
    status = _object(pod, "status")
    yield from _objects(status, "containerStatuses", "status.containerStatuses")
    yield from _objects(status, "initContainerStatuses", "status.initContainerStatuses")


def find_container(pod: dict[str, Any], container_id: str) -> dict[str, Any] | None:
    """The status of the container whose runtime ID is ``container_id``, if in this pod.
    A status without a container ID (not started yet) matches nothing."""
    for status in container_statuses(pod):
        status_id = _string(status, "containerID", "containerStatuses[].containerID")
        if status_id and _runtime_container_id(status_id) == container_id:
            return status
    return None


def _images(statuses: list[dict[str, Any]]) -> set[str]:
    """Both the image (tag) and the image ID (digest) of each container, as SPIRE: entries can
    name either. Empty ones (a container not pulled yet) are left out."""
    images = set()
    for status in statuses:
        images.add(_string(status, "image", "containerStatuses[].image"))
        images.add(_string(status, "imageID", "containerStatuses[].imageID"))
    images.discard("")
    return images


def pod_selector_values(pod: dict[str, Any]) -> list[str]:
    """SPIRE's pod-level k8s selector values (without the ``k8s:`` type)."""
    metadata, spec, status = _object(pod, "metadata"), _object(pod, "spec"), _object(pod, "status")
    containers = _objects(status, "containerStatuses", "status.containerStatuses")
    inits = _objects(status, "initContainerStatuses", "status.initContainerStatuses")
    values = [
        f"sa:{_string(spec, 'serviceAccountName', 'spec.serviceAccountName')}",
        f"ns:{_string(metadata, 'namespace', 'metadata.namespace')}",
        f"node-name:{_string(spec, 'nodeName', 'spec.nodeName')}",
        f"pod-uid:{_string(metadata, 'uid', 'metadata.uid')}",
        f"pod-name:{_string(metadata, 'name', 'metadata.name')}",
        f"pod-image-count:{len(containers)}",
        f"pod-init-image-count:{len(inits)}",
    ]
    values += [f"pod-image:{image}" for image in _images(containers)]
    values += [f"pod-init-image:{image}" for image in _images(inits)]
    labels = _string_map(metadata, "labels", "metadata.labels")
    values += [f"pod-label:{key}:{value}" for key, value in labels.items()]
    for owner in _objects(metadata, "ownerReferences", "metadata.ownerReferences"):
        kind = _string(owner, "kind", "metadata.ownerReferences[].kind")
        name = _string(owner, "name", "metadata.ownerReferences[].name")
        uid = _string(owner, "uid", "metadata.ownerReferences[].uid")
        values += [f"pod-owner:{kind}:{name}", f"pod-owner-uid:{kind}:{uid}"]
    return values


def container_selector_values(status: dict[str, Any]) -> list[str]:
    """SPIRE's selector values for the calling container itself."""
    values = [f"container-name:{_string(status, 'name', 'containerStatuses[].name')}"]
    values += [f"container-image:{image}" for image in _images([status])]
    return values
