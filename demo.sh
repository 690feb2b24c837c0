#!/usr/bin/env bash
# The lite-apiserver story at small scale, with no cluster needed: a bundled fake
# kube-apiserver plays the cloud, lite-apiserver runs in front of it on loopback,
# and kubectl (or curl) talks to lite-apiserver as kubelet would.
#
#   ./demo.sh            run the story, then stop everything
#   ./demo.sh --serve    leave lite-apiserver and the fake cloud running (Ctrl-C stops)
set -euo pipefail
cd "$(dirname "$0")"

serve=false
[[ "${1:-}" == "--serve" ]] && serve=true

cargo build --release --quiet --bin lite-apiserver --example fake_apiserver --example gen_certs
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /tmp/lite-apiserver-demo.XXXXXX)
pki=$work/pki
cloud_port=16443
port=51003
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$bin/examples/gen_certs" "$pki" >/dev/null

start_cloud() {
  "$bin/examples/fake_apiserver" --cert "$pki/server.crt" --key "$pki/server.key" \
    --client-ca "$pki/ca.crt" --port "$cloud_port" >"$work/cloud.log" 2>&1 &
  cloud_pid=$!
  pids+=("$cloud_pid")
  wait_port "$cloud_port"
}

start_proxy() {
  "$bin/lite-apiserver" --ca-file="$pki/ca.crt" --tls-cert-file="$pki/server.crt" \
    --tls-private-key-file="$pki/server.key" --kube-apiserver-url=127.0.0.1 \
    --kube-apiserver-port="$cloud_port" --port="$port" --tls-config-file="$pki/tls.json" \
    --file-cache-path="$work/cache" --diagnostics-port=51004 >>"$work/lite-apiserver.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
  wait_port "$port"
}

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1; see $work/*.log" >&2
  exit 1
}

# kubectl as kubelet would use it: its client certificate, lite-apiserver as the server.
cat >"$work/kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: edge
  cluster: {server: "https://127.0.0.1:$port", certificate-authority: "$pki/ca.crt"}
users:
- name: kubelet
  user: {client-certificate: "$pki/kubelet.crt", client-key: "$pki/kubelet.key"}
contexts:
- name: edge
  context: {cluster: edge, user: kubelet}
current-context: edge
KUBECONFIG

list_pods() {
  if command -v kubectl >/dev/null; then
    kubectl --kubeconfig "$work/kubeconfig" get pods -o wide
  else
    curl -sS --cacert "$pki/ca.crt" --cert "$pki/kubelet.crt" --key "$pki/kubelet.key" \
      "https://127.0.0.1:$port/api/v1/namespaces/default/pods" | head -c 600; echo
  fi
}

step "the cloud (fake kube-apiserver) on :$cloud_port, lite-apiserver on :$port"
start_cloud
start_proxy

step "pods listed through lite-apiserver (as kubelet: CN=system:node:edge-1)"
list_pods
curl -sS -D - -o /dev/null --cacert "$pki/ca.crt" --cert "$pki/kubelet.crt" --key "$pki/kubelet.key" \
  "https://127.0.0.1:$port/api/v1/namespaces/default/pods" | grep -i '^x-fake-user' || true

if $serve; then
  step "serving: https://127.0.0.1:$port (kubeconfig: $work/kubeconfig), diagnostics http://127.0.0.1:51004/metrics"
  wait
  exit 0
fi

# kubelet's TokenRequest for pod web-1's projected service-account token (kube-api-access):
# before a pod starts, kubelet must get this token; offline it must come from the cache.
as_kubelet() { curl -sS --cacert "$pki/ca.crt" --cert "$pki/kubelet.crt" --key "$pki/kubelet.key" "$@"; }
web1_uid=$(as_kubelet "https://127.0.0.1:$port/api/v1/namespaces/default/pods/web-1" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["uid"])')
token_request() {
  as_kubelet -X POST -H 'Content-Type: application/json' -H 'Accept: application/json' \
    "https://127.0.0.1:$port/api/v1/namespaces/default/serviceaccounts/default/token" \
    -d "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"expirationSeconds\":3607,\"boundObjectRef\":{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"name\":\"web-1\",\"uid\":\"$web1_uid\"}}}"
}
# Prints a digest of the token, never the token itself.
token_digest() {
  python3 -c 'import hashlib,json,sys; t=json.load(sys.stdin)["status"]["token"]; print("token sha256:" + hashlib.sha256(t.encode()).hexdigest()[:16])' 2>/dev/null || echo "no token"
}
step "kubelet asks for pod web-1's service-account token (TokenRequest)"
online_token=$(token_request | token_digest)
echo "$online_token (issued by the cloud)"

step "cut the link to the cloud"
kill "$cloud_pid"; wait "$cloud_pid" 2>/dev/null || true
list_pods
echo "(served from the cache: $(curl -sS -D - -o /dev/null --cacert "$pki/ca.crt" --cert "$pki/kubelet.crt" --key "$pki/kubelet.key" "https://127.0.0.1:$port/api/v1/namespaces/default/pods" | tr -d '\r' | grep -i '^x-lite-apiserver-cache'))"
# The node goes offline after --cloud-down-after (3) failed probes; reads did not wait.
for _ in $(seq 1 50); do
  curl -sf http://127.0.0.1:51004/readyz >/dev/null || break
  sleep 0.2
done
echo "readiness says: $(curl -sS http://127.0.0.1:51004/readyz | head -1)"

step "restart lite-apiserver while still cut off (kill -9, like a power cut)"
kill -9 "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
start_proxy
list_pods
offline_token=$(token_request | token_digest)
echo "TokenRequest for web-1 after the reboot: $offline_token"
if [[ $offline_token == "$online_token" ]]; then
  echo "(the token the cloud issued, from the cache: the pod's volume mounts, the pod comes back)"
else
  echo "(not the token issued online)" >&2
fi

step "the cloud comes back"
start_cloud
for _ in $(seq 1 50); do
  curl -sf http://127.0.0.1:51004/readyz >/dev/null && break
  sleep 0.2
done
echo "readiness says: $(curl -sS http://127.0.0.1:51004/readyz | head -1)"
list_pods

step "done; logs in $work"
