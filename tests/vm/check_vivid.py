#!/usr/bin/env python3
"""Checks the output of tests/vm/steps.sh (run in the vivid VM by tests/vm/vivid.sh).

usage: check_vivid.py OUTPUT FRAMES
"""
import json
import sys

TRUST = {"camera_changed", "injection_suspected", "stream_anomaly"}

out, frames_wanted = sys.argv[1], int(sys.argv[2])
steps, cur = {}, None
for line in open(out, errors="replace"):
    line = line.rstrip("\r\n")
    if "=== STEP " in line:  # the console may prefix the first line with terminal escapes
        cur = line[line.index("=== STEP ") + len("=== STEP "):].strip()
        steps[cur] = []
    elif cur is not None:
        steps[cur].append(line)
missing = [s for s in ("probe", "defaults", "verify-defaults", "allow_virtual", "verify-allow", "end") if s not in steps]
assert not missing, f"steps missing from the VM output: {missing}"


def events(lines):
    """JSON log events (the console may interleave kernel messages: parse from where the JSON starts)."""
    dec = json.JSONDecoder()
    for line in lines:
        i = line.find('{"timestamp"')
        if i < 0:
            continue
        try:
            ev, _ = dec.raw_decode(line[i:])
        except ValueError:
            continue
        yield ev.get("fields", {})


def json_doc(lines, opener):
    """The pretty-printed JSON document that starts with a line equal to `opener`."""
    start = next(i for i, l in enumerate(lines) if l == opener)
    closer = "]" if opener == "[" else "}"
    end = next(i for i in range(start, len(lines)) if lines[i] == closer)
    return json.loads("\n".join(lines[start:end + 1]))


def exit_code(lines):
    return int(next(l for l in lines if l.startswith("=== EXIT ")).split()[2])


# 1. probe
probe = "\n".join(steps["probe"])
for want in ("driver vivid", "YUYV", "640x480", "  fingerprint ", "INJECTION INSTRUMENT: vivid"):
    assert want in probe, f"probe output lacks {want!r}:\n{probe}"
devs = json_doc(steps["probe"], "[")
vivid = [d for d in devs if d["driver"] == "vivid"]
assert vivid and vivid[0]["fingerprint"]["v4l2"]["driver"] == "vivid", devs
assert len(vivid[0]["fingerprint"]["sha256"]) == 64
rules = [i["rule"] for i in vivid[0]["instruments"]]
assert "driver:vivid" in rules, rules
print(f"probe: vivid fingerprint {vivid[0]['fingerprint']['sha256'][:16]}…, instruments {rules}")

# 2. defaults: injection_suspected, nothing sealed as authentic
ev = list(events(steps["defaults"]))
kinds = [e.get("kind") for e in ev if e.get("message") == "alert"]
assert "injection_suspected" in kinds, f"no injection_suspected alert with defaults: {kinds}"
assert not (set(kinds) & TRUST) - {"injection_suspected"}, kinds
assert exit_code(steps["defaults"]) == 0
doc = json_doc(steps["verify-defaults"], "{")
caps = [c for ch in doc["chains"] for c in ch["captures"]]
assert doc["valid"] and caps, doc
for c in caps:
    assert c["verdict"] == "untrusted_source" and c["policy"] == "evidence", c
    assert "driver:vivid" in c["fingerprint"]["instruments"] and not c["fingerprint"]["allow_virtual"], c
print(f"defaults: alerts {kinds}; {len(caps)} capture(s) sealed, all verdict untrusted_source "
      f"policy evidence (nothing sealed as authentic)")

# 3. allow_virtual: runs as before
frames, final, alerts, ready = [], None, [], None
for f in events(steps["allow_virtual"]):
    if f.get("message") == "detector ready":
        ready = str(f.get("models", ""))
    if f.get("message") == "frame":
        frames.append((int(f["seq"]), int(f["device_seq"])))
    if f.get("message") == "alert":
        alerts.append((f.get("kind"), f.get("detail")))
    if str(f.get("message", "")).startswith("final:"):
        final = f["message"]
assert final, "no final stats line"
# Only the binary was copied into the VM: the default PAD pair is the one compiled into it.
assert ready and "minifasnet_v2/q8_0" in ready and "minifasnet_v1se/q8_0" in ready, \
    f"the default PAD pair is not loaded: detector ready {ready!r}"
assert len(frames) == frames_wanted, f"expected {frames_wanted} captured frames, saw {len(frames)}"
seqs = [s for s, _ in frames]
dev = [d for _, d in frames]
assert seqs == list(range(frames_wanted)), seqs
# Veriframe's own sequence numbers must be contiguous: no frame lost between driver and pipeline.
# The driver's numbers must not go backwards; vivid under software emulation (TCG) on a busy host
# skips or repeats a number when its timer thread falls behind, so driver gaps are reported, not
# failed (they are the driver dropping frames before Veriframe sees them).
assert all(b >= a for a, b in zip(dev, dev[1:])), f"driver sequence numbers went backwards: {dev}"
gaps = sum(1 for a, b in zip(dev, dev[1:]) if b != a + 1)
print(f"allow_virtual: driver sequence {dev[0]}..{dev[-1]}, {gaps} irregular step(s)")
trust = [a for a in alerts if a[0] in TRUST]
assert not trust, f"camera-trust alerts with allow_virtual on a live vivid stream: {trust}"
kv = dict(w.split("=", 1) for w in final.split() if "=" in w)
captured, analysed, dropped = int(kv["captured"]), int(kv["analysed"]), int(kv["dropped"])
assert captured == frames_wanted and analysed > 0 and captured == analysed + dropped, final
doc = json_doc(steps["verify-allow"], "{")
caps = [c for ch in doc["chains"] for c in ch["captures"]]
assert doc["valid"] and caps, doc
assert all(c["verdict"] != "untrusted_source" for c in caps), caps
assert any(c["policy"] == "authentic" for c in caps), [c["policy"] for c in caps]
fp = caps[0]["fingerprint"]
assert fp["camera"] and fp["allow_virtual"] and fp["pin"] == "first_use", fp
print(f"OK: {frames_wanted} frames with contiguous sequence numbers; no camera-trust alert; "
      f"{len(caps)} captures sealed (policies {sorted({c['policy'] for c in caps})}); {final}")
