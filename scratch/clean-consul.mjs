import { request, Agent } from 'undici';
const d = new Agent({ connections: 8, headersTimeout: 120000, bodyTimeout: 120000 });
const r = await request('http://127.0.0.1:8500/v1/agent/services', { dispatcher: d });
const all = Object.values(await r.body.json()).filter((s) => (s.Meta?.hm_host ?? '').startsWith('bench-') || s.ID.startsWith('c5k-'));
console.log('to remove', all.length);
let i = 0; const t = Date.now();
await Promise.all(Array.from({ length: 8 }, async () => { while (i < all.length) { const s = all[i++]; const x = await request(`http://127.0.0.1:8500/v1/agent/service/deregister/${encodeURIComponent(s.ID)}`, { method: 'PUT', dispatcher: d }); await x.body.text(); } }));
console.log('removed in', Date.now() - t, 'ms');
await d.close();
