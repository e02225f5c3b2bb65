import { request, Agent } from 'undici';
const d = new Agent({ connections: 32 });
const N = Number(process.argv[2] ?? 2000);
const put = async (path, body) => { const r = await request('http://127.0.0.1:8500/v1' + path, { method: 'PUT', body: body ? JSON.stringify(body) : undefined, dispatcher: d }); await r.body.text(); if (r.statusCode >= 300) throw new Error(path + ' ' + r.statusCode); };
async function each(n, w, fn) { let i = 0; await Promise.all(Array.from({length: w}, async () => { while (i < n) await fn(i++); })); }
let t = Date.now();
await each(N, 16, (i) => put('/agent/service/register', { ID: `c5k-${i}`, Name: `c5k${i % 50}`, Port: 1000 + i, Meta: { hm_host: 'c5k' }, Checks: [{ CheckID: `c5kttl-${i}`, Name: 'hb', TTL: '60s', Status: 'passing', DeregisterCriticalServiceAfter: '90s' }] }));
console.log('register', N, Date.now() - t, 'ms');
t = Date.now();
await each(N, 16, (i) => put(`/agent/check/pass/c5kttl-${i}`));
console.log('pass round', Date.now() - t, 'ms');
t = Date.now();
await each(N, 16, (i) => put(`/agent/check/pass/c5kttl-${i}`));
console.log('pass round 2', Date.now() - t, 'ms');
t = Date.now();
await each(N, 16, (i) => put(`/agent/service/deregister/c5k-${i}`));
console.log('deregister', Date.now() - t, 'ms');
await d.close();
