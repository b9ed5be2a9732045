// The mesh benchmark's second load generator: the official socket.io-client (websocket only),
// driving any mesh server the way mesh-bench's Rust generator does. PAIRS sender/receiver pairs;
// each sender keeps WINDOW direct messages in flight (or, with RATE=N, the senders send N a
// second in all, however many are in flight); receivers ack at once. After a warm-up,
// counts acked messages for DURATION_MS; prints {"phase":"counting"} and {"phase":"stopped"}
// around that window, then one line {"delivered":N,"seconds":S,"p50_ms":X,"p99_ms":Y,"failed":F}.
// Env: MESH_URL, TOKENS (JSON: {"tx-0": jwt, "rx-0": jwt, ...}), PAIRS, WINDOW, RATE,
// DURATION_MS, WARMUP_MS. LATENCY_TRACE=DIR also writes DIR/trace-<ms>.json (trace-rateN-<ms>.json
// with RATE): every counted message's latency, when its ack arrived (CLOCK_MONOTONIC ms, the
// clock of `perf sched record -k CLOCK_MONOTONIC`) and this process's GC pauses, for
// scripts/tail-episodes.py. THREADS=N splits the pairs over N worker threads (each its own event
// loop, as mesh-bench --load-threads does for the Rust generator); the main thread then only
// keeps the time and merges what the workers counted, and each worker writes its own trace
// (trace-wFIRST-<ms>.json, FIRST its first pair).
import { io } from "socket.io-client";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { PerformanceObserver, performance } from "node:perf_hooks";

const url = process.env.MESH_URL;
const tokens = JSON.parse(process.env.TOKENS);
const pairs = Number(process.env.PAIRS ?? 20);
const window = Number(process.env.WINDOW ?? 8);
const duration = Number(process.env.DURATION_MS ?? 10000);
const warmup = Number(process.env.WARMUP_MS ?? 2000);
const rate = Number(process.env.RATE ?? 0);
const threads = Number(process.env.THREADS ?? 1);
const traceDir = process.env.LATENCY_TRACE;

// p50 and p99 of latencies in ms, sorted here.
const quantiles = (latencies) => {
  latencies.sort((a, b) => a - b);
  const at = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : 0);
  return { p50_ms: at(0.5), p99_ms: at(0.99) };
};

if (isMainThread && threads > 1) {
  // Pairs split as evenly as they go; each worker gets its share of RATE too.
  const workers = [];
  for (let t = 0; t < threads; t++) {
    const first = Math.floor((t * pairs) / threads);
    const count = Math.floor(((t + 1) * pairs) / threads) - first;
    workers.push(new Worker(new URL(import.meta.url), { workerData: { first, count, rate: rate / threads } }));
  }
  const exited = workers.map((worker) => new Promise((resolve) => worker.once("exit", resolve)));
  const next = (worker) => new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  await Promise.all(workers.map(next)); // each connected and sending
  await new Promise((r) => setTimeout(r, warmup));
  const counted = workers.map(next);
  for (const worker of workers) worker.postMessage("count");
  console.log(JSON.stringify({ phase: "counting" }));
  const started = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, duration));
  for (const worker of workers) worker.postMessage("stop");
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ phase: "stopped" }));
  const results = await Promise.all(counted);
  const latencies = results.flatMap((r) => r.latencies);
  const sum = (k) => results.reduce((n, r) => n + r[k], 0);
  console.log(JSON.stringify({ delivered: sum("delivered"), seconds, ...quantiles(latencies), failed: sum("failed"), threads }));
  // Let the workers finish their traces, but do not hang on one that does not end.
  const ended = await Promise.race([Promise.all(exited).then(() => true), new Promise((r) => setTimeout(r, 10000, false))]);
  if (!ended) console.error("node-load: a worker had not exited 10 s after the counting window");
  process.exit(0);
}

const connect = (agent) =>
  new Promise((resolve, reject) => {
    const socket = io(url, { auth: { token: tokens[agent] }, transports: ["websocket"], reconnection: false, timeout: 10000 });
    socket.on("connect", () => resolve(socket));
    socket.on("connect_error", reject);
  });

// A worker drives pairs first..first+count at its share of the rate; alone, all of them.
const { first, count: share, rate: myRate } = isMainThread ? { first: 0, count: pairs, rate } : workerData;
const senders = [];
for (let i = first; i < first + share; i++) {
  const rx = await connect(`rx-${i}`);
  rx.on("message", (_envelope, ack) => ack({ ok: true }));
  senders.push([await connect(`tx-${i}`), `rx-${i}`]);
}

let counting = false;
let stopping = false;
let delivered = 0;
let failed = 0;
const latencies = [];
const ackedAt = [];
const pauses = [];
if (traceDir) {
  const observer = new PerformanceObserver((list) => {
    for (const gc of list.getEntries()) pauses.push([gc.startTime, gc.duration, gc.detail?.kind]);
  });
  observer.observe({ entryTypes: ["gc"] });
}
const text = "benchmark payload of a typical short agent message";

// One message; counted when its ack arrives inside the counting window.
async function once(socket, to) {
  const started = process.hrtime.bigint();
  try {
    const ack = await socket.timeout(30000).emitWithAck("message", { id: randomUUID(), to, text });
    if (counting) {
      if (ack && ack.ok) {
        delivered += 1;
        latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
        if (traceDir) ackedAt.push(performance.now());
      } else failed += 1;
    }
  } catch {
    if (counting) failed += 1;
  }
}

async function loop(socket, to) {
  while (!stopping) await once(socket, to);
}

// RATE messages a second in all, whatever is in flight, over the senders in turn: checked
// every millisecond, and a late timer sends what fell due meanwhile at once (as mesh-bench's
// own latency phase does).
async function openLoop() {
  const begun = process.hrtime.bigint();
  const inFlight = new Set();
  let sent = 0;
  while (!stopping) {
    const due = Math.floor((Number(process.hrtime.bigint() - begun) / 1e9) * myRate);
    for (; sent < due; sent++) {
      const [socket, to] = senders[sent % senders.length];
      const message = once(socket, to).finally(() => inFlight.delete(message));
      inFlight.add(message);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(inFlight);
}

const loops = [];
if (myRate > 0) loops.push(openLoop());
else for (const [socket, to] of senders) for (let w = 0; w < window; w++) loops.push(loop(socket, to));

if (isMainThread) await keepTheTime();
else followTheMainThread();

// Alone: warm up, count for DURATION_MS, print the result.
async function keepTheTime() {
  await new Promise((r) => setTimeout(r, warmup));
  counting = true;
  // The benchmark samples the server's CPU between these two lines.
  console.log(JSON.stringify({ phase: "counting" }));
  const started = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, duration));
  counting = false;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ phase: "stopped" }));
  const count = delivered;
  stopping = true;
  await Promise.all(loops);
  if (traceDir) writeTrace("");
  console.log(JSON.stringify({ delivered: count, seconds, ...quantiles(latencies), failed }));
  for (const [socket] of senders) socket.close();
  process.exit(0);
}

// A worker: the main thread keeps the time; "count" opens the counting window, "stop" closes
// it and asks for what was counted.
function followTheMainThread() {
  parentPort.postMessage("ready");
  parentPort.on("message", async (order) => {
    if (order === "count") {
      counting = true;
      return;
    }
    counting = false;
    parentPort.postMessage({ delivered, failed, latencies });
    stopping = true;
    await Promise.all(loops);
    // One trace per worker: each is one event loop with its own garbage collector.
    if (traceDir) writeTrace(`w${first}-`);
    for (const [socket] of senders) socket.close();
    // Ends this thread only (as the main thread ends the process when alone): the closed
    // sockets' client would otherwise keep it alive.
    process.exit(0);
  });
}

// DIR/trace-[rateN-][wN-]<ms>.json: this event loop's counted latencies, their ack times and
// its GC pauses, on CLOCK_MONOTONIC.
function writeTrace(worker) {
  // performance.now() counts from this thread's start; the offset puts it on CLOCK_MONOTONIC.
  const monotonic = Number(process.hrtime.bigint()) / 1e6 - performance.now();
  const trace = {
    url,
    pid: process.pid,
    latency_ms: latencies,
    acked_at_ms: ackedAt.map((t) => t + monotonic),
    gc_pauses: pauses.map(([start, ms, kind]) => ({ at_ms: start + monotonic, ms, kind })),
  };
  const mode = rate > 0 ? `rate${rate}-` : "";
  writeFileSync(`${traceDir}/trace-${mode}${worker}${Date.now()}.json`, JSON.stringify(trace));
}
