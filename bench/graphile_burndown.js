// graphile-worker side of bench/queue-vs-graphile.sh: the same burn-down `voxline bench queue`
// measures (workers already running and idle, N no-op jobs added in one transaction, time from
// its commit until the jobs table is empty), with graphile's batching on as its performance
// page configures it: localQueue.size 500, completeJobBatchDelay 0, failJobBatchDelay 0.
//
//   node graphile_burndown.js migrate                 schema only (before the workers start)
//   node graphile_burndown.js worker CONCURRENCY      one worker process; prints "ready"
//   node graphile_burndown.js drive JOBS WARMUP       warm-up, burn-down; prints key=value
//
// Env: PG_URL, GRAPHILE_WORKER_SCHEMA. graphile-worker (and its pg) resolve through NODE_PATH,
// which the shell script points at its npm cache outside the repository.
"use strict";
const { Logger, run, runMigrations } = require("graphile-worker");
const { Client } = require("pg");

const connectionString = process.env.PG_URL;
const schema = process.env.GRAPHILE_WORKER_SCHEMA;
if (!connectionString || !schema) {
  console.error("PG_URL and GRAPHILE_WORKER_SCHEMA must be set");
  process.exit(2);
}
const jobsTable = `"${schema}"._private_jobs`;

function preset(concurrency, extra = {}) {
  return {
    worker: {
      ...extra,
      connectionString,
      schema,
      concurrentJobs: concurrency,
      // One connection per concurrent job plus one, as graphile's performance page does.
      maxPoolSize: concurrency + 1,
      localQueue: { size: 500 },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  };
}

// graphile logs every job at info; the benchmark keeps warnings and errors only.
const quiet = {
  logger: new Logger(() => (level, message) => {
    if (level === "error" || level === "warning") console.error(`[${level}] ${message}`);
  }),
};

async function worker(concurrency) {
  const runner = await run({
    preset: preset(concurrency, quiet),
    taskList: { noop: async () => {} },
  });
  console.log("ready");
  const stop = () => runner.stop().then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  await runner.promise;
}

async function waitEmpty(client, limitMs) {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const { rows } = await client.query(`SELECT EXISTS (SELECT 1 FROM ${jobsTable}) AS busy`);
    if (!rows[0].busy) return;
    if (Date.now() > deadline) throw new Error(`jobs left after ${limitMs} ms`);
    // The same 20 ms poll as voxline's wait_drained.
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// One statement, one transaction: graphile's add_jobs with N specs.
async function addJobs(client, n) {
  await client.query(
    `SELECT count(*) FROM "${schema}".add_jobs(ARRAY(
       SELECT ROW('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::"${schema}".job_spec
       FROM generate_series(1, $1::int)))`,
    [n],
  );
}

async function drive(jobs, warmup) {
  const client = new Client({ connectionString });
  await client.connect();
  await addJobs(client, warmup);
  await waitEmpty(client, 60_000);
  const started = process.hrtime.bigint();
  await addJobs(client, jobs);
  const committed = process.hrtime.bigint();
  await waitEmpty(client, 1_800_000);
  const drained = process.hrtime.bigint();
  await client.end();
  const s = (a, b) => Number(b - a) / 1e9;
  const version = require("graphile-worker/package.json").version;
  console.log(
    `engine=graphile-worker version=${version} jobs=${jobs} ` +
      `enqueue_bulk_per_s=${(jobs / s(started, committed)).toFixed(0)} ` +
      `jobs_per_s=${(jobs / s(committed, drained)).toFixed(0)}`,
  );
}

async function main() {
  const [mode, a, b] = process.argv.slice(2);
  if (mode === "migrate") await runMigrations({ preset: preset(1, quiet) });
  else if (mode === "worker") await worker(Number(a));
  else if (mode === "drive") await drive(Number(a), Number(b));
  else throw new Error(`unknown mode ${mode}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
