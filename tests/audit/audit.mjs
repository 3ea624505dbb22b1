// Runs the graphql-http server audits (GraphQL-over-HTTP spec) against a URL, one at a time
// (they are concurrent by default, which a rate limiter could turn into failures).
// Usage: node tests/audit/audit.mjs http://127.0.0.1:PORT/graphql
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
const tally = { ok: 0, notice: 0, warn: 0, error: 0 };
for (const audit of serverAudits({ url })) {
  const result = await audit.fn();
  tally[result.status]++;
  if (result.status !== 'ok') {
    console.log(result.status, result.id, result.name, '-', result.reason,
      result.response.status, result.response.headers.get('content-type'));
  }
}
console.log(url, JSON.stringify(tally));
process.exitCode = tally.error > 0 || tally.warn > 0 ? 1 : 0;
