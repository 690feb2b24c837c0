#!/usr/bin/env python3
"""The tables of bench/wan.sh, from the JSON documents wan_traffic.py wrote (one per case):

    wan_report.py RESULTS_DIR

Per case and phase: bytes on the cloud link (the relay's count, TLS included) received and
sent, TCP connections opened, and the ratio to the direct case with the same client; then
lite-apiserver's own upstream byte counters next to the relay's; then every answer or
watch whose status, representation, encoding, size or item/event count differed from the
direct case.
"""

import json
import os
import sys

# case -> the direct case it is compared with, and how it is described.
CASES = {
    "direct": (None, "direct, client with gzip"),
    "lite": ("direct", "lite (default: protobuf and gzip kept)"),
    "lite-json": ("direct", "lite --modify-request-accept=true (JSON on the link)"),
    "direct-nogzip": (None, "direct, client without gzip"),
    "lite-nogzip": ("direct-nogzip", "lite (default), client without gzip"),
}
PHASES = ["start-up", "churn", "re-list"]
COMPARED = ["status", "content_type", "encoding", "body_bytes", "items", "events"]


def load(directory):
    results = {}
    for case in CASES:
        path = os.path.join(directory, f"{case}.json")
        if os.path.exists(path):
            with open(path) as f:
                results[case] = json.load(f)
    return results


def phase_deltas(result):
    """{phase: relay delta} for each phase and the total; the bytes of lite-apiserver's
    own probes before the clients started are in start-up."""
    snaps = {s["phase"]: s for s in result["phases"]}
    deltas, previous = {}, None
    for phase in PHASES:
        now = snaps[phase]["relay"]
        deltas[phase] = {
            k: now[k] - (previous[k] if previous else 0)
            for k in ("received", "sent", "connections")
        }
        previous = now
    deltas["total"] = {k: snaps["re-list"]["relay"][k] for k in ("received", "sent", "connections")}
    return deltas


def count(value):
    return "n/a" if value is None else f"{value:,}"


def ratio(value, base):
    return f"{value / base:.2f}" if base else "n/a"


def byte_table(results):
    lines = [
        "| case | phase | received | sent | received + sent | ×direct (recv + sent) | "
        "TCP connections |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case, (baseline, _) in CASES.items():
        if case not in results:
            continue
        deltas = phase_deltas(results[case])
        base = phase_deltas(results[baseline]) if baseline in results else None
        for phase in PHASES + ["total"]:
            d = deltas[phase]
            both = d["received"] + d["sent"]
            times = "—"
            if base:
                times = ratio(both, base[phase]["received"] + base[phase]["sent"])
                if phase == "total":
                    times = f"**{times}**"
            name = f"**{phase}**" if phase == "total" else phase
            lines.append(
                f"| {case} | {name} | {d['received']:,} | {d['sent']:,} | {both:,} | {times} | "
                f"{d['connections']} |"
            )
    return "\n".join(lines)


def counter_table(results):
    lines = [
        "| case | when | relay received | lite received | relay sent | lite sent |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, result in results.items():
        for snap in result["phases"]:
            lite = snap.get("lite")
            if not lite or snap["phase"] not in ("re-list", "idle"):
                continue
            relay = snap["relay"]
            cells = [relay["received"], lite.get("received"), relay["sent"], lite.get("sent")]
            lines.append(f"| {case} | {snap['phase']} | " + " | ".join(map(count, cells)) + " |")
    return "\n".join(lines)


def prober_bytes(result):
    """Bytes on the link before the clients started (lite-apiserver's first probes)."""
    first = result["phases"][0]["relay"]
    return first["received"] + first["sent"]


def changes(theirs, ours):
    """What differs in one answer or watch, as short phrases."""
    changed = [
        f"{k} {theirs.get(k)!r} → {ours.get(k)!r}"
        for k in COMPARED
        if theirs.get(k) != ours.get(k)
    ]
    if ours.get("cache"):
        changed.append(f"X-Lite-Apiserver-Cache: {ours['cache']}")
    if ours.get("error"):
        changed.append(f"watch error {ours['error']}")
    return changed


def as_json_only(theirs, ours):
    """Whether the only difference is JSON where direct got protobuf (the case asked for it),
    with the same items or events."""
    return (
        theirs.get("content_type") == "application/vnd.kubernetes.protobuf"
        and ours.get("content_type") == "application/json"
        and all(theirs.get(k) == ours.get(k) for k in ("status", "items", "events"))
        and not ours.get("cache")
        and not ours.get("error")
    )


def churn_overhead(result, base):
    """lite's extra bytes in the churn phase over direct (the watch bytes are the same, so
    this is its prober), the connections it opened, and the phase's length in seconds."""
    snaps = {s["phase"]: s for s in result["phases"]}
    seconds = snaps["churn"]["at"] - snaps["start-up"]["at"]
    mine, theirs = phase_deltas(result)["churn"], phase_deltas(base)["churn"]
    extra = mine["received"] + mine["sent"] - theirs["received"] - theirs["sent"]
    return extra, mine["connections"], seconds


def same_watch_repr(result, base):
    kinds = lambda r: [(w["label"], w["content_type"], w["events"]) for w in r["watches"]]
    return kinds(result) == kinds(base)


def handshake_cost(result):
    """(received, sent) of the one bare mTLS connection a direct case measured, or None."""
    snaps = {s["phase"]: s["relay"] for s in result["phases"]}
    if "one handshake" not in snaps:
        return None
    return tuple(snaps["one handshake"][k] - snaps["idle"][k] for k in ("received", "sent"))


def differences(results):
    out = []
    for case, (baseline, _) in CASES.items():
        if baseline is None or case not in results or baseline not in results:
            continue
        mine = {r["label"]: r for r in results[case]["answers"] + results[case]["watches"]}
        base = {r["label"]: r for r in results[baseline]["answers"] + results[baseline]["watches"]}
        json_only = 0
        for label, theirs in base.items():
            ours = mine.get(label)
            if ours is None:
                out.append(f"- {case}: `{label}` missing")
            elif as_json_only(theirs, ours):
                json_only += 1
            elif changed := changes(theirs, ours):
                out.append(f"- {case}: `{label}`: " + "; ".join(changed))
        if json_only:
            out.append(
                f"- {case}: {json_only} of {len(base)} answers and watches in JSON where direct "
                "got protobuf, with the same items and events"
            )
    return "\n".join(out) if out else "- none"


def main():
    results = load(sys.argv[1])
    print("Bytes on the cloud link (relay count, TLS included); start-up includes the")
    print("bytes lite-apiserver spent before the clients started:")
    for case, result in results.items():
        if CASES[case][0]:
            print(f"- {case}: {prober_bytes(result):,} bytes before the clients")
    print()
    print(byte_table(results))
    print()
    print("lite-apiserver's lite_apiserver_upstream_bytes_total next to the relay's count:")
    print()
    print(counter_table(results))
    print()
    print("Answers that differ from direct (status, representation, encoding, decoded size,")
    print("items or events):")
    print()
    print(differences(results))
    print()
    for case, (baseline, _) in CASES.items():
        if baseline and case in results and baseline in results:
            extra, conns, secs = churn_overhead(results[case], results[baseline])
            line = (f"- {case}, churn phase: {extra:,} bytes more than direct over {secs:.0f} s, "
                    f"{conns} connections opened")
            if same_watch_repr(results[case], results[baseline]):
                # The same watch bytes both ways: the difference is lite-apiserver's prober.
                line += f" (its prober: ≈ {extra / secs * 86400 / 1e6:.1f} MB a day)"
            print(line)
    for case, result in results.items():
        cost = handshake_cost(result)
        if cost:
            print()
            print(f"One bare mTLS connection ({case}: kubelet's certificate, no resumption, "
                  f"no request): {cost[0]:,} bytes received, {cost[1]:,} sent")
    print()
    print("Client connections opened: " + "; ".join(
        f"{case} {r['client_connects']}" for case, r in results.items()))


if __name__ == "__main__":
    main()
