"""Turns the load generator's JSON lines into bench/results.json, the tables
scripts/bench.sh prints, and a plot (SVG, no dependencies).

usage: report.py RESULTS.jsonl RESULTS.json RESULTS.svg
"""
import json
import math
import os
import sys

PEERS = ("engine.io", "sockjs-xhr", "sockjs-jsonp")
# polysocket in two shapes (scripts/bench.sh): one standalone daemon, and a
# fleet with a daemon per core. Each is judged on its own.
OURS = ("polysocket", "polysocket-fleet")
SYSTEMS = OURS + PEERS + ("floor", "websocket")
STREAMING = ("polysocket-stream", "sockjs-xhr-streaming", "sockjs-eventsource")
COLOURS = {"polysocket": "#d62728", "polysocket-fleet": "#ff7f0e", "engine.io": "#1f77b4", "sockjs-xhr": "#2ca02c",
           "sockjs-jsonp": "#98df8a", "floor": "#7f7f7f", "websocket": "#000000"}


def main(lines_path, json_path, svg_path):
    runs = [json.loads(line) for line in open(lines_path) if line.strip()]
    for r in runs:
        if "failed" in r:
            print(f"{r['system']} {r['scenario']} at {r['sockets']} sockets could not run: {r['failed']}")
    by = {(r["system"], r["scenario"], r["sockets"]): r for r in runs if "scenario" in r and "failed" not in r}
    targets = []
    round_trip = sorted({r["sockets"] for r in runs if r.get("scenario") == "round-trip" and r["system"] in SYSTEMS})
    if round_trip:
        print(f"\nRound trips (send, then long-poll until the echo arrives)")
        print(f"{'sockets':>7} {'system':>16} {'round trips/s':>13} {'p50 ms':>9} {'p99 ms':>9} {'vs floor':>8} "
              f"{'fairness':>8} {'CPU us/op':>9} {'errors':>6}")
        for n in round_trip:
            floor = by.get(("floor", "round-trip", n))
            for system in SYSTEMS:
                r = by.get((system, "round-trip", n))
                if r is None:
                    continue
                ratio = f"{r['per_second'] / floor['per_second']:.2f}x" if floor else "-"
                # Slowest client's round trips / fastest client's: 1.00 is even service.
                fairness = f"{r['fairness']:.2f}" if "fairness" in r else "-"
                cpu = f"{r['cpu_us_per_op']:.1f}" if r.get("cpu_us_per_op") is not None else "-"
                print(f"{n:>7} {system:>16} {r['per_second']:>13.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {ratio:>8} "
                      f"{fairness:>8} {cpu:>9} {r['errors']:>6}")
                if r["first_error"]:
                    print(f"{'':>25}first error: {r['first_error'][:100]}")
            peers = [by[(p, "round-trip", n)] for p in PEERS if (p, "round-trip", n) in by]
            for name in OURS:
                ours = by.get((name, "round-trip", n))
                if not ours or not peers:
                    continue
                best_rate = max(peers, key=lambda r: r["per_second"])
                best_p99 = min(peers, key=lambda r: r["p99_ms"])
                targets.append({"scenario": f"{name} round-trip at {n} sockets: throughput vs best peer ({best_rate['system']})",
                                "target": ">= 3x", "measured": ours["per_second"] / best_rate["per_second"],
                                "met": ours["per_second"] >= 3 * best_rate["per_second"], "binding": n in (100, 1000)})
                targets.append({"scenario": f"{name} round-trip at {n} sockets: p99 vs best peer ({best_p99['system']})",
                                "target": "<= 1/3", "measured": ours["p99_ms"] / best_p99["p99_ms"],
                                "met": ours["p99_ms"] * 3 <= best_p99["p99_ms"], "binding": n in (100, 1000)})
                # CPU from /proc: only single processes have it (not the fleet).
                measured = [p for p in peers if p.get("cpu_us_per_op")]
                if ours.get("cpu_us_per_op") and measured:
                    best_cpu = min(measured, key=lambda r: r["cpu_us_per_op"])
                    ratio = ours["cpu_us_per_op"] / best_cpu["cpu_us_per_op"]
                    floor = by.get(("floor", "round-trip", n), {}).get("cpu_us_per_op")
                    target = {"scenario": f"{name} round-trip at {n} sockets: CPU per round trip vs best peer "
                                          f"({best_cpu['system']})",
                              "target": "<= 0.4", "measured": ratio, "met": ratio <= 0.4, "binding": n in (100, 1000)}
                    if floor:
                        # What the two requests of a round trip cost a bare actix-web server.
                        target["floor_two_requests_us"] = 2 * floor
                    targets.append(target)
    send = [(ours, by.get(("floor", "send", n))) for (system, scenario, n), ours in by.items()
            if (system, scenario) == ("polysocket", "send") and ("floor", "send", n) in by]
    for ours, floor in send:
        print(f"\nSend path ({ours['sockets']} clients): POST /s {ours['per_second']:.0f}/s (p99 {ours['p99_ms']:.2f} ms, "
              f"{ours['errors']} errors); floor POST {floor['per_second']:.0f}/s (p99 {floor['p99_ms']:.2f} ms)")
        targets.append({"scenario": "POST /s vs the actix-web floor", "target": ">= 0.5", "binding": True,
                        "measured": ours["per_second"] / floor["per_second"], "met": ours["per_second"] >= 0.5 * floor["per_second"]})
    for r in runs:
        if r.get("scenario") == "idle-memory":
            print(f"\nIdle memory: {r['sockets']} sockets, each after a message both ways, daemon RSS "
                  f"{r['rss_before_kib']} -> {r['rss_after_kib']} KiB, {r['kib_per_socket']:.1f} KiB per socket")
            targets.append({"scenario": f"daemon RSS per idle socket after traffic at {r['sockets']} sockets (KiB)",
                            "target": "<= 7", "binding": True, "measured": r["kib_per_socket"],
                            "met": r["kib_per_socket"] <= 7})
        if r.get("scenario") == "idle-memory-polling" and "failed" not in r:
            print(f"\nIdle memory, {r['system']}: {r['sockets']} clients, each after a round trip, waiting in a poll: "
                  f"RSS {r['rss_before_kib']} -> {r['rss_after_kib']} KiB, {r['kib_per_socket']:.1f} KiB per client")
        if r.get("scenario") == "create" and "failed" not in r:
            print(f"\nCreates (router + Redis + 2 daemons, {r['sockets']} clients): {r['per_second']:.0f}/s, "
                  f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, {r['errors']} errors")
            targets.append({"scenario": "creates per second, 2 daemons", "target": ">= 2000", "binding": True,
                            "measured": r["per_second"], "met": r["per_second"] >= 2000})
    polling = {r["system"]: r for r in runs if r.get("scenario") == "idle-memory-polling" and "failed" not in r}
    peers_polling = [r for system, r in polling.items() if system not in ("polysocket", "floor")]
    if "polysocket" in polling and peers_polling:
        best = min(peers_polling, key=lambda r: r["kib_per_socket"])
        targets.append({"scenario": f"RSS per idle polling client vs best peer ({best['system']}), same run",
                        "target": "<= 1/3", "binding": True,
                        "measured": polling["polysocket"]["kib_per_socket"] / best["kib_per_socket"],
                        "met": polling["polysocket"]["kib_per_socket"] * 3 <= best["kib_per_socket"]})
    streaming = sorted({r["sockets"] for r in runs if r.get("scenario") in ("round-trip-stream", "push")})
    if streaming:
        print("\nStreaming receive (round trips: send, then read the stream until the echo; push: messages the "
              "upstream pushes, received)")
        print(f"{'sockets':>7} {'scenario':>17} {'system':>21} {'per second':>10} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU us/op':>9} {'errors':>6}")
        for n in streaming:
            for scenario, systems in (("round-trip", ("polysocket-poll",)), ("round-trip-stream", STREAMING),
                                      ("push", STREAMING + ("polysocket-stream-gzip",))):
                for system in systems:
                    r = by.get((system, scenario, n))
                    if r is None:
                        continue
                    cpu = f"{r['cpu_us_per_op']:.1f}" if r.get("cpu_us_per_op") is not None else "-"
                    print(f"{n:>7} {scenario:>17} {system:>21} {r['per_second']:>10.0f} {r['p50_ms']:>8.2f} "
                          f"{r['p99_ms']:>8.2f} {cpu:>9} {r['errors']:>6}")
                    if r["first_error"]:
                        print(f"{'':>25}first error: {r['first_error'][:100]}")
            ours = by.get(("polysocket-stream", "push", n))
            peers = [by[(p, "push", n)] for p in STREAMING[1:] if (p, "push", n) in by]
            peers = [p for p in peers if p.get("cpu_us_per_op")]
            if ours and ours.get("cpu_us_per_op") and peers:
                best = min(peers, key=lambda r: r["cpu_us_per_op"])
                ratio = ours["cpu_us_per_op"] / best["cpu_us_per_op"]
                targets.append({"scenario": f"push at {n} sockets: CPU per message vs best SockJS streaming ({best['system']})",
                                "target": "<= 0.5", "measured": ratio, "met": ratio <= 0.5, "binding": True})
            gzipped = by.get(("polysocket-stream-gzip", "push", n))
            if ours and gzipped and ours.get("cpu_us_per_op") and gzipped.get("cpu_us_per_op"):
                # What a gzipped stream costs beside a plain one, run after it on the same daemon.
                extra_cpu = gzipped["cpu_us_per_op"] - ours["cpu_us_per_op"]
                extra_kib = (gzipped["rss_kib"] - ours["rss_kib"]) / n
                print(f"{'':>25}gzip: {extra_cpu:+.1f} us of daemon CPU per pushed message, "
                      f"{extra_kib:+.0f} KiB of daemon memory per open stream")
            stream = by.get(("polysocket-stream", "round-trip-stream", n))
            poll = by.get(("polysocket-poll", "round-trip", n))
            if stream and poll:
                ratio = stream["per_second"] / poll["per_second"]
                targets.append({"scenario": f"streaming round trips at {n} sockets vs polysocket's long poll",
                                "target": ">= 1.5", "measured": ratio, "met": ratio >= 1.5, "binding": True})
    if targets:
        print("\nTargets")
        for t in targets:
            verdict = "met" if t["met"] else ("MISSED" if t["binding"] else "missed (not a target at this size)")
            floor = f" (the floor's two requests: {t['floor_two_requests_us']:.1f} us)" if "floor_two_requests_us" in t else ""
            print(f"  {t['scenario']}: {t['measured']:.2f} (target {t['target']}): {verdict}{floor}")
    machine = {"cores": os.cpu_count(), "model": _cpu_model(), "command": "scripts/bench.sh",
               "open_file_limit": _open_file_limit()}
    with open(json_path, "w") as f:
        json.dump({"machine": machine, "targets": targets, "runs": runs}, f, indent=1)
    if round_trip:
        with open(svg_path, "w") as f:
            f.write(plot(by, round_trip))
    print(f"\n({machine['cores']} cores, {machine['model']}; figures in {json_path})")


def _cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _open_file_limit():
    import resource
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def plot(by, sockets):
    """Two panels over the number of sockets (log scales): round trips per
    second, and p99 latency."""
    width, height, margin = 460, 320, 60
    panels = [("round trips per second", "per_second"), ("p99 latency (ms)", "p99_ms")]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * width}" height="{height + 64}" '
             f'font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>']
    for i, (title, key) in enumerate(panels):
        values = [by[(s, "round-trip", n)][key] for s in SYSTEMS for n in sockets if (s, "round-trip", n) in by]
        values = [v for v in values if v > 0]
        lo, hi = math.floor(math.log10(min(values))), math.ceil(math.log10(max(values)))
        hi = max(hi, lo + 1)
        x0 = i * width + margin
        xs = lambda n: x0 + (math.log10(n) / max(math.log10(max(sockets)), 1)) * (width - 1.5 * margin)
        ys = lambda v: height - margin / 2 - (math.log10(v) - lo) / (hi - lo) * (height - margin)
        parts.append(f'<text x="{x0}" y="16" font-weight="bold">{title}</text>')
        for d in range(lo, hi + 1):
            y = ys(10 ** d)
            parts.append(f'<line x1="{x0}" x2="{x0 + width - 1.5 * margin}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                         f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{10 ** d:g}</text>')
        last_label = None
        for n in sockets:
            # 9000 and 10000 sit a few pixels apart on a log scale: label one.
            if last_label is not None and xs(n) - last_label < 36:
                continue
            last_label = xs(n)
            parts.append(f'<text x="{xs(n)}" y="{height - margin / 2 + 16}" text-anchor="middle">{n}</text>')
        parts.append(f'<text x="{x0 + (width - 1.5 * margin) / 2}" y="{height + 20}" text-anchor="middle">sockets</text>')
        for system in SYSTEMS:
            points = [(xs(n), ys(by[(system, "round-trip", n)][key])) for n in sockets
                      if (system, "round-trip", n) in by and by[(system, "round-trip", n)][key] > 0]
            if points:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{COLOURS[system]}" stroke-width="2"/>')
    # The legend goes in a row under the panels, clear of the lines.
    for j, system in enumerate(SYSTEMS):
        x = margin + j * 2 * (width - margin / 2) / len(SYSTEMS)
        y = height + 46
        parts.append(f'<line x1="{x}" x2="{x + 18}" y1="{y}" y2="{y}" stroke="{COLOURS[system]}" stroke-width="3"/>'
                     f'<text x="{x + 24}" y="{y + 4}">{system}</text>')
    parts.append("</svg>\n")
    return "\n".join(parts)


if __name__ == "__main__":
    main(*sys.argv[1:4])
