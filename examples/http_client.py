#!/usr/bin/env python3
"""A runledger HTTP client in Python, standard library only.

Runs a worker through the worker endpoints (claim, heartbeat, progress, checkpoint,
complete) and, at the same time, a UI follower on the live event stream (GET /events,
Server-Sent Events) that checks it sees every event of the job once, in order.

    python3 examples/http_client.py http://127.0.0.1:8750

Set RUNLEDGER_API_TOKEN if the server requires a token. Exits 0 when the follower saw
the whole job, gapless, ending `completed`.
"""
import http.client
import json
import os
import sys
import threading
import urllib.parse
import urllib.request

BASE = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8750"
TOKEN = os.environ.get("RUNLEDGER_API_TOKEN")


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if TOKEN:
        req.add_header("authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, json.load(res)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def follow(job_id, seen, ready, done):
    """Reads the job's stream from the start of its log until it completes."""
    url = urllib.parse.urlsplit(BASE)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    headers = {"accept": "text/event-stream"}
    if TOKEN:
        headers["authorization"] = "Bearer " + TOKEN
    conn.request("GET", f"/events?job={job_id}&after=0", headers=headers)
    res = conn.getresponse()
    assert res.status == 200, res.status
    ready.set()
    event, data = "message", []
    while True:
        line = res.readline().decode().rstrip("\r\n")
        if line.startswith(":"):
            continue  # keep-alive comment
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            payload = json.loads("".join(data))
            if event == "resync":
                raise SystemExit(f"unexpected resync: {payload}")
            seen.append(payload)
            event, data = "message", []
            if payload["kind"] == "completed":
                done.set()
                conn.close()
                return


def main():
    status, job = call("POST", "/jobs", {"user_id": "py-demo", "kind": "research", "input": {"q": "python"}})
    assert status == 201, (status, job)
    job_id = job["id"]
    seen, ready, done = [], threading.Event(), threading.Event()
    follower = threading.Thread(target=follow, args=(job_id, seen, ready, done), daemon=True)
    follower.start()
    ready.wait(10)

    # The worker: claim the job (this client's kind), report, checkpoint, complete.
    status, claims = call("POST", "/workers/claim", {"worker": "py-worker", "kinds": ["research"], "max": 1})
    assert status == 200 and claims["claims"], (status, claims)
    claim = next(c for c in claims["claims"] if c["job"]["id"] == job_id)
    attempt = claim["attempt"]
    for pct in (25, 50, 75):
        assert call("POST", f"/jobs/{job_id}/heartbeat", {"attempt": attempt})[0] == 200
        assert call("POST", f"/jobs/{job_id}/progress", {"attempt": attempt, "progress": pct, "step": f"part {pct}"})[0] == 200
    assert call("POST", f"/jobs/{job_id}/checkpoint", {"attempt": attempt, "checkpoint": {"done": 3}})[0] == 200
    stale = call("POST", f"/jobs/{job_id}/progress", {"attempt": attempt + 1, "progress": 90})
    assert stale[0] == 409 and stale[1]["code"] == "STALE_ATTEMPT", stale
    status, final = call("POST", f"/jobs/{job_id}/complete", {"attempt": attempt, "result": {"answer": 42}})
    assert status == 200 and final["state"] == "completed", (status, final)

    if not done.wait(10):
        raise SystemExit(f"the follower did not see the job complete: {seen}")
    seqs = [e["seq"] for e in seen]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    kinds = [e["kind"] for e in seen]
    print(json.dumps({"client": "python", "job": job_id, "events": len(seen), "kinds": kinds}))


if __name__ == "__main__":
    main()
