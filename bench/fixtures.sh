#!/usr/bin/env bash
# Writes the static JSON the nginx upstream serves, into $1:
#   pod.json          one Pod, ~2 KB (what kubelet GETs)
#   podlist-100k.json a PodList of ~100 KB (~45 pods)
#   podlist-1m.json   a PodList of ~1 MB (~460 pods)
# The pods look like what kube-apiserver returns for a Deployment's pod (no managedFields).
set -euo pipefail

out=${1:?usage: fixtures.sh DIR}
mkdir -p "$out"

# pod NAMESPACE NAME INDEX RESOURCE_VERSION
pod() {
    local ns=$1 name=$2 i=$3 rv=$4
    local uid node ip
    uid=$(printf '6f1c%04x-2b7d-4c1e-9a55-%012x' "$i" "$((i * 7919))")
    node="edge-$((i % 8))"
    ip="10.244.$((i / 250)).$((i % 250 + 2))"
    cat <<JSON
{"kind":"Pod","apiVersion":"v1","metadata":{"name":"$name","generateName":"web-7d4b9c8f6d-","namespace":"$ns","uid":"$uid","resourceVersion":"$rv","creationTimestamp":"2025-11-20T08:15:3$((i % 10))Z","labels":{"app":"web","pod-template-hash":"7d4b9c8f6d","tier":"frontend","app.kubernetes.io/part-of":"shop"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-11-20T08:15:00Z"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d4b9c8f6d","uid":"0d3e5a9c-1111-4b2a-8c7d-5e6f7a8b9c0d","controller":true,"blockOwnerDeletion":true}]},"spec":{"volumes":[{"name":"config","configMap":{"name":"web-config","defaultMode":420}},{"name":"kube-api-access-$((i % 97))x","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}}],"defaultMode":420}}],"containers":[{"name":"web","image":"registry.example.com/shop/web:1.27.3","ports":[{"name":"http","containerPort":8080,"protocol":"TCP"}],"resources":{"limits":{"cpu":"500m","memory":"256Mi"},"requests":{"cpu":"100m","memory":"128Mi"}},"volumeMounts":[{"name":"config","readOnly":true,"mountPath":"/etc/web"},{"name":"kube-api-access-$((i % 97))x","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","serviceAccount":"default","nodeName":"$node","securityContext":{},"schedulerName":"default-scheduler","priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastProbeTime":null,"lastTransitionTime":"2025-11-20T08:15:42Z"},{"type":"PodScheduled","status":"True","lastProbeTime":null,"lastTransitionTime":"2025-11-20T08:15:30Z"}],"hostIP":"192.168.8.$((i % 8 + 10))","podIP":"$ip","podIPs":[{"ip":"$ip"}],"startTime":"2025-11-20T08:15:31Z","containerStatuses":[{"name":"web","state":{"running":{"startedAt":"2025-11-20T08:15:40Z"}},"lastState":{},"ready":true,"restartCount":0,"image":"registry.example.com/shop/web:1.27.3","containerID":"containerd://$(printf '%064x' "$((i * 15485863 + 7))")","started":true}],"qosClass":"Burstable"}}
JSON
}

# podlist NAMESPACE COUNT
podlist() {
    local ns=$1 count=$2 i sep=""
    printf '{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"%d"},"items":[' "$((100000 + count))"
    for ((i = 0; i < count; i++)); do
        printf '%s' "$sep"
        pod "$ns" "web-7d4b9c8f6d-$(printf '%05d' "$i")" "$i" "$((50000 + i))" | tr -d '\n'
        sep=","
    done
    printf ']}\n'
}

pod fixtures web-7d4b9c8f6d-00000 0 50000 | tr -d '\n' >"$out/pod.json"
# As many pods as make ~100 KB and ~1 MB.
pod_bytes=$(wc -c <"$out/pod.json")
podlist fixtures $(( (100 * 1024 + pod_bytes - 1) / pod_bytes )) >"$out/podlist-100k.json"
podlist fixtures-big $(( (1024 * 1024 + pod_bytes - 1) / pod_bytes )) >"$out/podlist-1m.json"
chmod 644 "$out"/*.json
