import Docker from 'dockerode';
const d = new Docker({socketPath:'/var/run/docker.sock'});
const n = Number(process.argv[2] ?? 100), conc = Number(process.argv[3] ?? 16);
const t0 = Date.now(); let next = 0;
const w = async () => { while (next < n) { const i = next++; const c = await d.createContainer({ name: `tperf${i}`, Image: 'hm-test:2', ExposedPorts: {'80/tcp': {}}, HostConfig: { NetworkMode: 'none' } }); await c.start(); } };
await Promise.all(Array.from({length: conc}, w));
console.log('started', n, Date.now()-t0, 'ms');
