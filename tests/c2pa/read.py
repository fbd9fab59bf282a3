#!/usr/bin/env python3
"""Read C2PA credentials with c2pa-python (the C2PA SDK, independent of Veriframe) and print,
for each file, what the reader concluded, as one JSON document on stdout.

Usage: read.py [--anchor CA.pem] FILE...
  --anchor: trust this CA (PEM) and the C2PA signer EKUs (documentSigning, C2PA), as an
            operator's trust list would.
"""
import json
import sys

import c2pa  # c2pa-python (PyPI)

EKUS = "1.3.6.1.5.5.7.3.4\n1.3.6.1.5.5.7.3.36\n1.3.6.1.4.1.62558.2.1\n"


def main(argv):
    anchor = None
    if len(argv) > 1 and argv[0] == "--anchor":
        anchor, argv = argv[1], argv[2:]
    ctx = None
    if anchor:
        with open(anchor) as f:
            settings = c2pa.Settings.from_dict(
                {"verify": {"verify_trust": True},
                 "trust": {"trust_anchors": f.read(), "trust_config": EKUS}})
        ctx = c2pa.Context(settings=settings)
    out = {"reader": "c2pa-python %s (c2pa-rs %s)" % (c2pa.__version__, c2pa.sdk_version()),
           "files": []}
    for path in argv:
        rec = {"file": path, "error": None}
        try:
            r = c2pa.Reader(path, context=ctx) if ctx else c2pa.Reader(path)
            d = json.loads(r.json())
            res = d.get("validation_results", {}).get("activeManifest", {})
            rec["state"] = d.get("validation_state")
            for k in ("success", "failure", "informational"):
                rec[k] = [x["code"] for x in res.get(k, [])]
            m = d["manifests"][d["active_manifest"]]
            rec["assertions"] = {a["label"]: a.get("data") for a in m.get("assertions", [])}
            rec["signature_info"] = m.get("signature_info")
        except Exception as e:  # the reader refusing a file is a result, not a crash
            rec["error"] = "%s: %s" % (type(e).__name__, e)
        out["files"].append(rec)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
