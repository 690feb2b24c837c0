"""Drives the official Kubernetes Python client (`kubernetes` from PyPI) for tests/clients.rs.

    kube_client.py --server URL --ca FILE [--cert FILE --key FILE | --token TOKEN] list NAMESPACE
    kube_client.py ... watch NAMESPACE --timeout SECONDS --expect NAME

Every result is one JSON object per line on stdout, flushed at once, so the Rust test can
follow a watch while it runs:
- list:  {"user": <X-Fake-User of the answer>, "resourceVersion": ..., "pods": [names]}
- watch: {"type": "ADDED", "name": ...} per event, then {"done": true, "seen": bool}.
Exit status: 0 on success; 1 when the watch ended without an ADDED for --expect.
"""

import argparse
import json
import sys

from kubernetes import client, watch


def emit(record):
    print(json.dumps(record), flush=True)


def core_api(args):
    configuration = client.Configuration()
    configuration.host = args.server
    configuration.ssl_ca_cert = args.ca
    if args.cert:
        configuration.cert_file = args.cert
        configuration.key_file = args.key
    if args.token:
        configuration.api_key = {"authorization": args.token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.CoreV1Api(client.ApiClient(configuration))


def list_pods(api, args):
    pods, _status, headers = api.list_namespaced_pod_with_http_info(args.namespace)
    emit(
        {
            "user": headers.get("X-Fake-User"),
            "resourceVersion": pods.metadata.resource_version,
            "pods": [pod.metadata.name for pod in pods.items],
        }
    )
    return 0


def watch_pods(api, args):
    watcher = watch.Watch()
    seen = False
    for event in watcher.stream(api.list_namespaced_pod, args.namespace, timeout_seconds=args.timeout):
        name = event["object"].metadata.name
        emit({"type": event["type"], "name": name})
        if event["type"] == "ADDED" and name == args.expect:
            seen = True
            watcher.stop()
    emit({"done": True, "seen": seen})
    return 0 if seen else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--token")
    commands = parser.add_subparsers(dest="command", required=True)
    list_command = commands.add_parser("list")
    list_command.add_argument("namespace")
    watch_command = commands.add_parser("watch")
    watch_command.add_argument("namespace")
    watch_command.add_argument("--timeout", type=int, required=True)
    watch_command.add_argument("--expect", required=True)
    args = parser.parse_args()
    api = core_api(args)
    run = list_pods if args.command == "list" else watch_pods
    return run(api, args)


if __name__ == "__main__":
    sys.exit(main())
