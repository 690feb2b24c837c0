#!/usr/bin/env python3
"""The node traffic of bench/wan.sh: what kubelet, kube-proxy and flannel ask of the cloud
on one edge node, replayed as client-go would send it over HTTP/1.1 (keep-alive, one mTLS
identity per component, protobuf-first Accept, Accept-Encoding: gzip unless --no-gzip).

    wan_traffic.py seed --fake HOST:PORT --pki DIR
    wan_traffic.py run  --target HOST:PORT --fake HOST:PORT --pki DIR --relay-control PORT
                        [--diag PORT] [--no-gzip] [--churn-secs 30] [--idle-secs 5]
                        [--measure-handshake] --out FILE

`seed` writes the cluster (600 pods on edge-1 and more elsewhere, nodes, services and
their EndpointSlices, configmaps, secrets) straight into the fake with the admin
identity. `run` replays the node against --target (the relay, or lite-apiserver in
front of it) in three phases — start-up LIST/GET and WATCH, watches open while the
admin churns objects straight at the fake (--fake, uncounted), re-list as after a watch
expiry — and writes one JSON document:
the relay's byte totals and lite-apiserver's /metrics byte counters at each phase end,
and every answer the clients got (status, representation, encoding, sizes, item and
event counts), for comparing one path with the other. With --measure-handshake (direct
cases), one bare mTLS connection is made at the end and its bytes counted alone.
"""

import argparse
import gzip
import http.client
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request

PROTOBUF = "application/vnd.kubernetes.protobuf"
PROTOBUF_MAGIC = b"k8s\x00"
NODE = "edge-1"
NAMESPACE = "default"

# The cluster `seed` writes.
NODE_PODS = 600
OTHER_PODS = 200
NODES = 40
SERVICES = 120
CONFIGMAPS = 30
SECRETS = 10
# What kubelet's pods mount (each read with a GET, then kept by a per-object reflector as
# kubelet's default Watch change-detection strategy does).
MOUNTED_CONFIGMAPS = ["cm-0", "cm-1", "cm-2", "cm-3"]
MOUNTED_SECRETS = ["sec-0", "sec-1"]

WATCH_TIMEOUT_SECS = 420
PAGE_LIMIT = 500
# kube-proxy's informers (Services and EndpointSlices alike) leave these out.
KUBE_PROXY_SELECTOR = "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name"
DISCOVERY = "/apis/discovery.k8s.io/v1"


# --------------------------------------------------------------------------------------
# Protobuf: just enough of the wire format to read a list's resourceVersion and count its
# items, and to read a watch event's type.
# --------------------------------------------------------------------------------------


def varint(buf, pos):
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def fields(buf):
    """(field number, value) of each field; value is an int or bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 2:
            length, pos = varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, value


def field(buf, number, default=b""):
    for n, value in fields(buf):
        if n == number:
            return value
    return default


def unknown_raw(body):
    """The `raw` of `k8s\\0` + runtime.Unknown."""
    if not body.startswith(PROTOBUF_MAGIC):
        raise ValueError("no k8s protobuf magic")
    return field(body[len(PROTOBUF_MAGIC) :], 2)


def protobuf_list(body):
    """(resourceVersion, continue, item count) of an enveloped protobuf list."""
    raw = unknown_raw(body)
    list_meta = field(raw, 1)
    items = sum(1 for n, _ in fields(raw) if n == 2)
    return field(list_meta, 2).decode(), field(list_meta, 3).decode(), items


def json_list(body):
    document = json.loads(body)
    metadata = document.get("metadata", {})
    items = len(document.get("items") or [])
    return metadata.get("resourceVersion", ""), metadata.get("continue", ""), items


# --------------------------------------------------------------------------------------
# HTTP: one keep-alive pool per component, as client-go's transport over HTTP/1.1.
# --------------------------------------------------------------------------------------


def tls_context(pki, identity):
    context = ssl.create_default_context(cafile=f"{pki}/ca.crt")
    context.load_cert_chain(f"{pki}/{identity}.crt", f"{pki}/{identity}.key")
    return context


def split_addr(addr):
    host, port = addr.rsplit(":", 1)
    return host, int(port)


class Answer:
    """What a client got: kept for the direct/via comparison."""

    def __init__(self, label, status, headers, wire):
        self.label = label
        self.status = status
        self.content_type = (headers.get("Content-Type") or "").split(";")[0].strip()
        self.encoding = headers.get("Content-Encoding") or ""
        self.wire_bytes = len(wire)
        self.body = gzip.decompress(wire) if self.encoding == "gzip" else wire
        self.cache = headers.get("X-Lite-Apiserver-Cache") or ""

    def as_list(self):
        """(resourceVersion, continue, items) of a list answer."""
        if self.status != 200:
            return "", "", 0
        if self.content_type == PROTOBUF:
            return protobuf_list(self.body)
        return json_list(self.body)

    def record(self, items=None):
        return {
            "label": self.label,
            "status": self.status,
            "content_type": self.content_type,
            "encoding": self.encoding,
            "wire_bytes": self.wire_bytes,
            "body_bytes": len(self.body),
            "items": items,
            "cache": self.cache,
        }


class Component:
    """A client of the apiserver with its identity, headers and idle connections."""

    def __init__(self, name, target, context, user_agent, accept, use_gzip):
        self.name = name
        self.host, self.port = split_addr(target)
        self.context = context
        self.headers = {"User-Agent": user_agent, "Accept": accept}
        if use_gzip:
            self.headers["Accept-Encoding"] = "gzip"
        self.idle = []
        self.lock = threading.Lock()
        self.connects = 0

    def _take(self):
        with self.lock:
            if self.idle:
                return self.idle.pop()
            self.connects += 1
        return http.client.HTTPSConnection(self.host, self.port, context=self.context)

    def _give_back(self, conn):
        with self.lock:
            self.idle.append(conn)

    def _send(self, conn, method, path, body=None, content_type=None):
        # putrequest without its own Accept-Encoding: identity, so a client without gzip
        # sends no Accept-Encoding at all, as Go's transport with compression disabled.
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in self.headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        return conn.getresponse()

    def request(self, label, method, path, body=None, content_type=None):
        conn = self._take()
        try:
            response = self._send(conn, method, path, body, content_type)
            wire = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._give_back(conn)
        return Answer(f"{self.name} {label}", response.status, response.headers, wire)

    def watch(self, path):
        """(connection, response) of a watch; the connection is held until it is stopped."""
        conn = self._take()
        return conn, self._send(conn, "GET", path)

    def close(self):
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def query(params):
    """Keys sorted, as Go's url.Values.Encode writes them."""
    return urllib.parse.urlencode(sorted(params.items()), safe="")


class Watch:
    """A watch stream read on its own thread: events counted by type."""

    def __init__(self, component, label, path):
        self.label = f"{component.name} {label}"
        self.conn, self.response = component.watch(path)
        self.status = self.response.status
        self.content_type = (self.response.headers.get("Content-Type") or "").split(";")[0]
        self.events = {}
        self.event_bytes = 0
        self.last_rv = ""
        self.stopping = False
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _next_event(self):
        """(type, bytes) of the next event, or None at the end of the stream."""
        if self.content_type == PROTOBUF:
            head = self.response.read(4)
            if len(head) < 4:
                return None
            frame = self.response.read(int.from_bytes(head, "big"))
            return field(frame, 1).decode(), len(frame) + 4
        line = self.response.readline()
        if not line:
            return None
        return json.loads(line)["type"], len(line)

    def _read(self):
        try:
            while True:
                event = self._next_event()
                if event is None:
                    break
                kind, size = event
                self.events[kind] = self.events.get(kind, 0) + 1
                self.event_bytes += size
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as e:
            # A stopped watch's reader sees its socket go (http.client may then trip over
            # its own closed file: AttributeError).
            if not self.stopping:
                self.error = repr(e)

    def stop(self):
        # client-go closes the body of a stopped watch: the connection is not reused.
        self.stopping = True
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.conn.close()
        self.thread.join(timeout=5)

    def record(self):
        return {
            "label": self.label,
            "status": self.status,
            "content_type": self.content_type,
            "events": dict(sorted(self.events.items())),
            "event_bytes": self.event_bytes,
            "error": self.error,
        }


class Reflector:
    """LIST then WATCH from the list's resourceVersion, as client-go's reflector."""

    def __init__(self, component, label, path, selectors):
        self.component = component
        self.label = label
        self.path = path
        self.selectors = selectors
        self.rv = ""
        self.watch = None

    def list(self, answers, paged):
        """Start-up: resourceVersion=0 (kube's watch cache answers it whole). Re-list after
        an expiry: no resourceVersion, pages of 500 with continue."""
        params = dict(self.selectors)
        if paged:
            params["limit"] = str(PAGE_LIMIT)
        else:
            params["resourceVersion"] = "0"
        page = 0
        while True:
            answer = self.component.request(
                f"{self.label} list{'' if not paged else f' page {page}'}",
                "GET",
                f"{self.path}?{query(params)}",
            )
            rv, cont, items = answer.as_list()
            answers.append(answer.record(items))
            page += 1
            if not cont:
                break
            params["continue"] = cont
        self.rv = rv

    def start_watch(self):
        params = dict(self.selectors)
        params.update(
            allowWatchBookmarks="true",
            resourceVersion=self.rv,
            timeoutSeconds=str(WATCH_TIMEOUT_SECS),
            watch="true",
        )
        self.watch = Watch(self.component, f"{self.label} watch", f"{self.path}?{query(params)}")

    def stop_watch(self, watches):
        if self.watch is not None:
            self.watch.stop()
            watches.append(self.watch.record())
            self.watch = None


# --------------------------------------------------------------------------------------
# The cluster and its churn (admin, straight at the fake: not on the counted link).
# --------------------------------------------------------------------------------------


def pod(index, node):
    name = f"app-{index}" if node == NODE else f"other-{node}-{index}"
    app = f"app{index % 20}"
    image = f"registry.example/{app}:1.{index % 7}"
    subnet = 1 if node == NODE else 2
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app": app, "pod-template-hash": f"{index * 7919 % 99991:05d}"},
        },
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": app,
                    "image": image,
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                }
            ],
            "volumes": [{"name": "config", "configMap": {"name": f"cm-{index % 4}"}}],
            "restartPolicy": "Always",
            "serviceAccountName": "default",
        },
        "status": {
            "phase": "Running",
            "hostIP": f"192.168.{subnet}.10",
            "podIP": f"10.244.{subnet}.{index % 250 + 2}",
            "containerStatuses": [
                {
                    "name": app,
                    "ready": True,
                    "restartCount": 0,
                    "image": image,
                    "imageID": f"{image}@sha256:{'0' * 64}",
                    "started": True,
                    "state": {"running": {}},
                }
            ],
        },
    }


def node(index):
    name = NODE if index == 1 else f"edge-{index}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "node-role.kubernetes.io/edge": ""},
            "annotations": {"flannel.alpha.coreos.com/public-ip": f"192.168.{index}.10"},
        },
        "spec": {"podCIDR": f"10.244.{index}.0/24"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "addresses": [{"type": "InternalIP", "address": f"192.168.{index}.10"}],
            "nodeInfo": {
                "kubeletVersion": "v1.30.0",
                "osImage": "Fake Linux",
                "architecture": "amd64",
            },
        },
    }


def service(index):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"svc-{index}",
            "namespace": NAMESPACE,
            "labels": {"app": f"app{index % 20}"},
        },
        "spec": {
            "selector": {"app": f"app{index % 20}"},
            "clusterIP": f"10.96.{index // 250}.{index % 250 + 2}",
            "clusterIPs": [f"10.96.{index // 250}.{index % 250 + 2}"],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            "type": "ClusterIP",
            "sessionAffinity": "None",
        },
    }


def endpoint_slice(index, generation=0):
    """svc-N's endpoints: the ready pods of its app (30 on the node), as the EndpointSlice
    controller writes them; `generation` rolls one pod's address (a pod replaced)."""
    app = index % 20
    endpoints = []
    for pod_index in range(app, NODE_PODS, 20):
        octet = (pod_index + generation * 7) % 250 + 2
        endpoints.append({
            "addresses": [f"10.244.{1 + pod_index // 250}.{octet}"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": NODE,
            "targetRef": {"kind": "Pod", "namespace": NAMESPACE, "name": f"app-{pod_index}"},
        })
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{index}-x7k2p",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": f"svc-{index}",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def config_map(index):
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"cm-{index}", "namespace": NAMESPACE},
        "data": {"settings.yaml": "".join(f"key{k}: value-{index}-{k}\n" for k in range(40))},
    }


def secret(index):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": f"sec-{index}", "namespace": NAMESPACE},
        "data": {"password": "czNjcjN0", "token": "dG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg=="},
    }


class Admin:
    """The cloud's own writers: one keep-alive connection straight to the fake."""

    def __init__(self, fake, pki):
        host, port = split_addr(fake)
        self.conn = http.client.HTTPSConnection(host, port, context=tls_context(pki, "admin"))

    def send(self, method, path, document, content_type="application/json"):
        body = json.dumps(document).encode()
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        if response.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: {response.status}")

    def create(self, plural, document, namespaced=True, api="/api/v1"):
        self.send("POST", f"{collection(api, namespaced)}/{plural}", document)

    def patch(self, plural, name, document, namespaced=True, api="/api/v1"):
        self.send("PATCH", f"{collection(api, namespaced)}/{plural}/{name}", document,
                  "application/merge-patch+json")


def collection(api, namespaced):
    """The path a plural follows: `/api/v1/namespaces/default` or `/api/v1`."""
    return f"{api}/namespaces/{NAMESPACE}" if namespaced else api


def seed(args):
    admin = Admin(args.fake, args.pki)
    # The fake's own seed has edge-1 already; the other nodes are added.
    for index in range(2, NODES + 1):
        admin.create("nodes", node(index), namespaced=False)
    admin.patch("nodes", NODE, node(1), namespaced=False)
    for index in range(NODE_PODS):
        admin.create("pods", pod(index, NODE))
    for index in range(OTHER_PODS):
        admin.create("pods", pod(index, f"edge-{2 + index % (NODES - 1)}"))
    for index in range(SERVICES):
        admin.create("services", service(index))
        admin.create("endpointslices", endpoint_slice(index), api=DISCOVERY)
    for index in range(CONFIGMAPS):
        admin.create("configmaps", config_map(index))
    for index in range(SECRETS):
        admin.create("secrets", secret(index))


def churn(admin, seconds):
    """One tick a second, the same every run: pods on the node change (3 a tick) and are
    created (one every 2 ticks), pods elsewhere change (2 a tick, seen by nobody here), a
    mounted configmap and another change every 5 ticks, a node heartbeats every 3 ticks, a
    service changes every 10 ticks, and a Service's endpoints every 4 (one pod replaced)."""
    start = time.monotonic()
    for tick in range(seconds):
        note = {"metadata": {"annotations": {"bench/tick": str(tick)}}}
        for k in range(3):
            admin.patch("pods", f"app-{(tick * 3 + k) % NODE_PODS}", note)
        for k in range(2):
            node_name = f"edge-{2 + (tick * 2 + k) % (NODES - 1)}"
            admin.patch("pods", f"other-{node_name}-{(tick * 2 + k) % OTHER_PODS}", note)
        if tick % 2 == 0:
            admin.create("pods", pod(NODE_PODS + tick, NODE))
        if tick % 5 == 0:
            for name in (MOUNTED_CONFIGMAPS[(tick // 5) % 4], f"cm-{10 + tick % 20}"):
                admin.patch("configmaps", name, {"data": {"tick": str(tick)}})
        if tick % 3 == 0:
            beat = {"status": {"conditions": [{"type": "Ready", "status": "True",
                                               "reason": "KubeletReady",
                                               "message": f"heartbeat {tick}"}]}}
            admin.patch("nodes", f"edge-{2 + tick % (NODES - 1)}", beat, namespaced=False)
        if tick % 10 == 0:
            admin.patch("services", f"svc-{tick % SERVICES}", note)
        if tick % 4 == 0:
            index = (tick // 4) % SERVICES
            rolled = {"endpoints": endpoint_slice(index, generation=1 + tick)["endpoints"]}
            admin.patch("endpointslices", f"svc-{index}-x7k2p", rolled, api=DISCOVERY)
        delay = start + tick + 1 - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# --------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------


def relay_totals(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return json.loads(sock.makefile().readline())


def lite_counters(port):
    """lite_apiserver_upstream_bytes_total by direction, and its upstream connections
    opened and TLS sessions resumed (the prober's own connections are not among them)."""
    if not port:
        return None
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    counters = {}
    for line in text.splitlines():
        if line.startswith("lite_apiserver_upstream_bytes_total{"):
            direction = line.split('direction="', 1)[1].split('"', 1)[0]
            counters[direction] = int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith(("lite_apiserver_upstream_connects_total ",
                              "lite_apiserver_upstream_resumed_total ")):
            name, value = line.split(" ", 1)
            counters[name.removeprefix("lite_apiserver_upstream_")] = int(float(value))
    return counters


def bare_handshake(target, context):
    """One TLS connection with a client certificate and no request: what a connection
    costs on the link before its first byte of HTTP (the server's tickets included)."""
    with socket.create_connection(split_addr(target), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=split_addr(target)[0]):
            time.sleep(0.5)
    time.sleep(0.5)


def wait_quiet(watches, limit_secs=10):
    """Until no watch saw an event for a second (events of the churn still in flight)."""
    deadline = time.monotonic() + limit_secs
    last = None
    while time.monotonic() < deadline:
        now = [sum(w.events.values()) for w in watches]
        if now == last:
            return
        last = now
        time.sleep(1)


def components(args):
    protobuf_first = f"{PROTOBUF},application/json"
    use_gzip = not args.no_gzip
    make = lambda name, identity, agent: Component(
        name, args.target, tls_context(args.pki, identity), agent, protobuf_first, use_gzip
    )
    return (
        make("kubelet", "kubelet", "kubelet/v1.30.0 (linux/amd64) kubernetes/7c48c2b"),
        make("kube-proxy", "kube-proxy", "kube-proxy/v1.30.0 (linux/amd64) kubernetes/7c48c2b"),
        make("flannel", "flannel", "flanneld/v0.25.1 (linux/amd64) kubernetes/$Format"),
    )


def run(args):
    kubelet, kube_proxy, flannel = components(args)
    namespaced = f"/api/v1/namespaces/{NAMESPACE}"
    reflectors = [
        Reflector(kubelet, "pods", "/api/v1/pods", {"fieldSelector": f"spec.nodeName={NODE}"}),
        Reflector(kubelet, "services", "/api/v1/services", {}),
        *[
            Reflector(kubelet, f"configmap {n}", f"{namespaced}/configmaps",
                      {"fieldSelector": f"metadata.name={n}"})
            for n in MOUNTED_CONFIGMAPS
        ],
        *[
            Reflector(kubelet, f"secret {n}", f"{namespaced}/secrets",
                      {"fieldSelector": f"metadata.name={n}"})
            for n in MOUNTED_SECRETS
        ],
        Reflector(kube_proxy, "services", "/api/v1/services",
                  {"labelSelector": KUBE_PROXY_SELECTOR}),
        Reflector(kube_proxy, "endpointslices", f"{DISCOVERY}/endpointslices",
                  {"labelSelector": KUBE_PROXY_SELECTOR}),
        Reflector(flannel, "nodes", "/api/v1/nodes", {}),
    ]
    answers, watches, phases = [], [], []

    def snapshot(phase):
        phases.append({
            "phase": phase,
            "at": round(time.monotonic() - began, 2),
            "relay": relay_totals(args.relay_control),
            "lite": lite_counters(args.diag),
        })

    began = time.monotonic()
    snapshot("before clients")
    # Start-up: kubelet reads its Node and what its pods mount; every reflector lists and
    # starts watching from its list.
    answers.append(kubelet.request("node", "GET", f"/api/v1/nodes/{NODE}").record())
    for name in MOUNTED_CONFIGMAPS:
        answers.append(kubelet.request(f"get configmap {name}", "GET",
                                       f"{namespaced}/configmaps/{name}").record())
    for name in MOUNTED_SECRETS:
        answers.append(kubelet.request(f"get secret {name}", "GET",
                                       f"{namespaced}/secrets/{name}").record())
    for reflector in reflectors:
        reflector.list(answers, paged=False)
        reflector.start_watch()
    time.sleep(1)
    snapshot("start-up")

    # Churn at the cloud while the watches are open.
    churn(Admin(args.fake, args.pki), args.churn_secs)
    wait_quiet([r.watch for r in reflectors])
    snapshot("churn")

    # Re-list, as after a watch expiry, then the clients go.
    for reflector in reflectors:
        reflector.stop_watch(watches)
    for reflector in reflectors:
        reflector.list(answers, paged=True)
    for component in (kubelet, kube_proxy, flannel):
        component.close()
    time.sleep(2)
    snapshot("re-list")
    # lite-apiserver adds a connection's bytes to its totals at pauses in its traffic and
    # when the connection goes: read both counters once more when all is idle.
    time.sleep(args.idle_secs)
    snapshot("idle")
    if args.measure_handshake:
        bare_handshake(args.target, tls_context(args.pki, "kubelet"))
        snapshot("one handshake")

    result = {
        "gzip": not args.no_gzip,
        "phases": phases,
        "answers": answers,
        "watches": watches,
        "client_connects": {c.name: c.connects for c in (kubelet, kube_proxy, flannel)},
    }
    with open(args.out, "w") as out:
        json.dump(result, out, indent=1)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    seed_parser = sub.add_parser("seed")
    seed_parser.add_argument("--fake", required=True)
    seed_parser.add_argument("--pki", required=True)
    run_parser = sub.add_parser("run")
    run_parser.add_argument("--target", required=True)
    run_parser.add_argument("--fake", required=True)
    run_parser.add_argument("--pki", required=True)
    run_parser.add_argument("--relay-control", type=int, required=True)
    run_parser.add_argument("--diag", type=int, default=0)
    run_parser.add_argument("--no-gzip", action="store_true")
    run_parser.add_argument("--churn-secs", type=int, default=30)
    run_parser.add_argument("--idle-secs", type=int, default=5)
    run_parser.add_argument("--measure-handshake", action="store_true")
    run_parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "seed":
        seed(args)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
