// A runledger HTTP client for Node (>= 18), no dependencies: the global fetch.
//
// Runs a worker through the worker endpoints (claim, heartbeat, progress, checkpoint,
// complete) and, at the same time, a UI follower on the live event stream (GET /events,
// Server-Sent Events) that checks it sees every event of the job once, in order.
//
//     node examples/http_client.mjs http://127.0.0.1:8750
//
// Set RUNLEDGER_API_TOKEN if the server requires a token. Exits 0 when the follower saw
// the whole job, gapless, ending `completed`.

const BASE = process.argv[2] ?? "http://127.0.0.1:8750";
const TOKEN = process.env.RUNLEDGER_API_TOKEN;
const auth = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};

async function call(method, path, body) {
  const res = await fetch(BASE + path, {
    method,
    headers: { "content-type": "application/json", ...auth },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return [res.status, await res.json()];
}

/** Follows one job's stream from the start of its log until it completes. */
async function follow(jobId, seen, onOpen) {
  const res = await fetch(`${BASE}/events?job=${jobId}&after=0`, {
    headers: { accept: "text/event-stream", ...auth },
  });
  if (res.status !== 200) throw new Error(`stream status ${res.status}`);
  onOpen();
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of res.body) {
    buffer += decoder.decode(chunk, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length === 0) continue; // keep-alive comment
      const payload = JSON.parse(data.join(""));
      if (event === "resync") throw new Error(`unexpected resync ${JSON.stringify(payload)}`);
      seen.push(payload);
      if (payload.kind === "completed") return;
    }
  }
  throw new Error("stream ended before the job completed");
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${JSON.stringify(what)}`);
}

const [status, job] = await call("POST", "/jobs", { user_id: "node-demo", kind: "analysis", input: { q: "node" } });
assert(status === 201, job);
const seen = [];
let opened;
const open = new Promise((r) => (opened = r));
const following = follow(job.id, seen, opened);
await open;

const [cs, claims] = await call("POST", "/workers/claim", { worker: "node-worker", kinds: ["analysis"], max: 1 });
assert(cs === 200 && claims.claims.length > 0, claims);
const claim = claims.claims.find((c) => c.job.id === job.id);
const attempt = claim.attempt;
for (const pct of [25, 50, 75]) {
  assert((await call("POST", `/jobs/${job.id}/heartbeat`, { attempt }))[0] === 200, "heartbeat");
  assert((await call("POST", `/jobs/${job.id}/progress`, { attempt, progress: pct, step: `part ${pct}` }))[0] === 200, "progress");
}
assert((await call("POST", `/jobs/${job.id}/checkpoint`, { attempt, checkpoint: { done: 3 } }))[0] === 200, "checkpoint");
const [ss, stale] = await call("POST", `/jobs/${job.id}/progress`, { attempt: attempt + 1, progress: 90 });
assert(ss === 409 && stale.code === "STALE_ATTEMPT", stale);
const [fs, final] = await call("POST", `/jobs/${job.id}/complete`, { attempt, result: { answer: 42 } });
assert(fs === 200 && final.state === "completed", final);

const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error("follower timed out")), 10000));
await Promise.race([following, timeout]);
const seqs = seen.map((e) => e.seq);
assert(seqs.every((s, i) => s === i + 1), seqs);
console.log(JSON.stringify({ client: "node", job: job.id, events: seen.length, kinds: seen.map((e) => e.kind) }));
process.exit(0);
