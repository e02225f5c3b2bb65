import Docker from 'dockerode';
const d = new Docker({socketPath: '/var/run/docker.sock'});
for (const ev of [['start'], ['start','health_status'], ['start','restart','unpause','health_status','rename','update','kill','stop','pause','die','destroy']]) {
  const ab = new AbortController();
  const t0 = Date.now();
  const timer = setTimeout(() => { console.log('timeout', ev.length); ab.abort(); }, 3000);
  try { const s = await d.getEvents({ filters: { type: ['container'], event: ev }, abortSignal: ab.signal }); console.log(ev.length, 'opened', Date.now()-t0); s.destroy(); } catch (e) { console.log(ev.length, 'err', e.message); }
  clearTimeout(timer);
}
const ab = new AbortController();
const t0 = Date.now();
const s = await d.getEvents({ filters: { type: ['container'] }, abortSignal: ab.signal }); console.log('nofilter-event opened', Date.now()-t0); s.destroy();
const s2 = await d.getEvents({ filters: { type: ['container'], event: ['start'] } }); console.log('no abort opened', Date.now()-t0); s2.destroy();
